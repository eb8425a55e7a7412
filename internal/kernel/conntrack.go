package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Conntrack looks up connections in this network namespace's connection
// tracking table over one ctnetlink socket. kube-proxy's iptables and IPVS
// modes DNAT a Service ClusterIP to a backend there, which the client socket
// never sees. Needs CAP_NET_ADMIN. Not safe for concurrent use.
type Conntrack struct {
	fd  int
	seq uint32
	req []byte // the request being built (reused)
	buf []byte // receive buffer
}

// conntrackTimeout bounds one lookup: the caller reads connection events.
var conntrackTimeout = unix.Timeval{Usec: 200_000}

// ctnetlink constants (linux/netfilter/nfnetlink_conntrack.h).
const (
	ipctnlMsgCtGet = 1
	ctaTupleOrig   = 1
	ctaTupleReply  = 2
	ctaTupleIP     = 1
	ctaTupleProto  = 2
	ctaIPv4Src     = 1
	ctaIPv4Dst     = 2
	ctaIPv6Src     = 3
	ctaIPv6Dst     = 4
	ctaProtoNum    = 1
	ctaProtoSrc    = 2
	ctaProtoDst    = 3
	nfgenmsgLen    = 4
	attrTypeMask   = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
)

// OpenConntrack opens the ctnetlink socket.
func OpenConntrack() (*Conntrack, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("open ctnetlink socket: %w", err)
	}
	c := &Conntrack{fd: fd, req: make([]byte, 0, 128), buf: make([]byte, 1<<16)}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &conntrackTimeout); err != nil {
		c.Close()
		return nil, fmt.Errorf("ctnetlink socket timeout: %w", err)
	}
	// Connected to the kernel: plain write and read, no address per call.
	if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		c.Close()
		return nil, fmt.Errorf("connect ctnetlink socket: %w", err)
	}
	return c, nil
}

// Close closes the socket.
func (c *Conntrack) Close() error { return unix.Close(c.fd) }

// Backend returns where the tracked connection from src to dst was sent:
// the source of its reply tuple. ok is false when the table has no such
// connection or did not translate it.
func (c *Conntrack) Backend(proto uint8, src, dst netip.AddrPort) (backend netip.AddrPort, ok bool, err error) {
	src, dst = unmapPort(src), unmapPort(dst)
	reply, err := c.get(proto, src, dst)
	if err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("conntrack lookup of %s -> %s: %w", src, dst, err)
	}
	if !reply.IsValid() || reply == dst {
		return netip.AddrPort{}, false, nil
	}
	return reply, true, nil
}

func unmapPort(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// get sends one IPCTNL_MSG_CT_GET for the original tuple and returns the
// source of the reply tuple (invalid: no such entry).
func (c *Conntrack) get(proto uint8, src, dst netip.AddrPort) (netip.AddrPort, error) {
	c.seq++
	c.buildGet(proto, src, dst)
	if _, err := unix.Write(c.fd, c.req); err != nil {
		return netip.AddrPort{}, err
	}
	var reply netip.AddrPort
	for {
		n, err := unix.Read(c.fd, c.buf)
		if err != nil {
			return netip.AddrPort{}, err // EAGAIN: no answer within conntrackTimeout
		}
		for b := c.buf[:n]; len(b) >= unix.SizeofNlMsghdr; {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return netip.AddrPort{}, errors.New("malformed netlink message")
			}
			typ, seq := binary.NativeEndian.Uint16(b[4:]), binary.NativeEndian.Uint32(b[8:])
			data := b[unix.SizeofNlMsghdr:l]
			b = b[min(nlAlign(l), len(b)):]
			if seq != c.seq {
				continue // the late answer to a request that timed out
			}
			switch typ {
			case unix.NLMSG_ERROR:
				if len(data) < 4 {
					return netip.AddrPort{}, errors.New("short netlink error message")
				}
				switch errno := -int32(binary.NativeEndian.Uint32(data)); errno {
				case 0: // the ack that ends the answer
					return reply, nil
				case int32(unix.ENOENT):
					return netip.AddrPort{}, nil
				default:
					return netip.AddrPort{}, unix.Errno(errno)
				}
			case unix.NLMSG_DONE:
				return reply, nil
			default:
				if reply, err = replySource(data); err != nil {
					return netip.AddrPort{}, err
				}
			}
		}
	}
}

// buildGet writes the request into c.req: nlmsghdr, nfgenmsg, then
// CTA_TUPLE_ORIG { CTA_TUPLE_IP { src, dst }, CTA_TUPLE_PROTO { num, ports } }.
func (c *Conntrack) buildGet(proto uint8, src, dst netip.AddrPort) {
	family, srcAttr, dstAttr := uint8(unix.AF_INET), uint16(ctaIPv4Src), uint16(ctaIPv4Dst)
	if !src.Addr().Is4() {
		family, srcAttr, dstAttr = unix.AF_INET6, ctaIPv6Src, ctaIPv6Dst
	}
	b := c.req[:0]
	b = binary.NativeEndian.AppendUint32(b, 0) // length, set at the end
	b = binary.NativeEndian.AppendUint16(b, unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtGet)
	// The entry comes back flagged NLM_F_MULTI: ask for an ack to end it.
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	b = binary.NativeEndian.AppendUint32(b, c.seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = append(b, family, 0, 0, 0) // nfgenmsg: family, version 0, res_id 0
	orig := len(b)
	b = nlAttr(b, unix.NLA_F_NESTED|ctaTupleOrig, nil)
	ip := len(b)
	b = nlAttr(b, unix.NLA_F_NESTED|ctaTupleIP, nil)
	b = nlAttr(b, srcAttr, src.Addr().AsSlice())
	b = nlAttr(b, dstAttr, dst.Addr().AsSlice())
	nlEnd(b, ip)
	l4 := len(b)
	b = nlAttr(b, unix.NLA_F_NESTED|ctaTupleProto, nil)
	b = nlAttr(b, ctaProtoNum, []byte{proto})
	b = nlAttr(b, ctaProtoSrc, binary.BigEndian.AppendUint16(nil, src.Port()))
	b = nlAttr(b, ctaProtoDst, binary.BigEndian.AppendUint16(nil, dst.Port()))
	nlEnd(b, l4)
	nlEnd(b, orig)
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	c.req = b
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

// nlAttr appends an attribute (padded); a nested one gets its length from
// nlEnd once its children are appended.
func nlAttr(b []byte, typ uint16, val []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(4+len(val)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// nlEnd sets the length of the nested attribute started at start.
func nlEnd(b []byte, start int) {
	binary.NativeEndian.PutUint16(b[start:], uint16(len(b)-start))
}

// nlFind returns the value of the first attribute of type typ in b (nil:
// none).
func nlFind(b []byte, typ uint16) []byte {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		if l < 4 || l > len(b) {
			return nil
		}
		if binary.NativeEndian.Uint16(b[2:])&attrTypeMask == typ {
			return b[4:l]
		}
		b = b[min(nlAlign(l), len(b)):]
	}
	return nil
}

// replySource reads a ctnetlink entry (nfgenmsg, then attributes) for the
// source address and port of its reply tuple.
func replySource(msg []byte) (netip.AddrPort, error) {
	if len(msg) < nfgenmsgLen {
		return netip.AddrPort{}, errors.New("short ctnetlink message")
	}
	tuple := nlFind(msg[nfgenmsgLen:], ctaTupleReply)
	ip, l4 := nlFind(tuple, ctaTupleIP), nlFind(tuple, ctaTupleProto)
	raw := nlFind(ip, ctaIPv4Src)
	if raw == nil {
		raw = nlFind(ip, ctaIPv6Src)
	}
	port := nlFind(l4, ctaProtoSrc)
	if tuple == nil || raw == nil || port == nil {
		return netip.AddrPort{}, nil // not an entry with a reply tuple
	}
	addr, ok := netip.AddrFromSlice(raw)
	if !ok || len(port) != 2 {
		return netip.AddrPort{}, fmt.Errorf("reply tuple source of %d and %d bytes", len(raw), len(port))
	}
	return netip.AddrPortFrom(addr, binary.BigEndian.Uint16(port)), nil
}
