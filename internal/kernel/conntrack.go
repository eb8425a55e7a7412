package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Conntrack looks up connections in this network namespace's connection
// tracking table over one ctnetlink socket. kube-proxy's iptables and IPVS
// modes DNAT a Service ClusterIP to a backend there, which the client socket
// never sees. Needs CAP_NET_ADMIN. Not safe for concurrent use.
type Conntrack struct {
	fd  int
	seq uint32
	buf []byte
}

// conntrackTimeout bounds one lookup: the caller reads connection events.
var conntrackTimeout = unix.Timeval{Usec: 200_000}

// OpenConntrack opens the ctnetlink socket.
func OpenConntrack() (*Conntrack, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("open ctnetlink socket: %w", err)
	}
	c := &Conntrack{fd: fd, buf: make([]byte, 1<<16)}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &conntrackTimeout); err != nil {
		c.Close()
		return nil, fmt.Errorf("ctnetlink socket timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		c.Close()
		return nil, fmt.Errorf("bind ctnetlink socket: %w", err)
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

// get sends one IPCTNL_MSG_CT_GET for the original tuple and returns the
// source of the reply tuple (invalid: no such entry).
func (c *Conntrack) get(proto uint8, src, dst netip.AddrPort) (netip.AddrPort, error) {
	family, srcAttr, dstAttr := uint8(unix.AF_INET), nl.CTA_IP_V4_SRC, nl.CTA_IP_V4_DST
	if !src.Addr().Is4() {
		family, srcAttr, dstAttr = unix.AF_INET6, nl.CTA_IP_V6_SRC, nl.CTA_IP_V6_DST
	}
	// The entry comes back flagged NLM_F_MULTI: ask for an ack to end it.
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_CTNETLINK<<8|nl.IPCTNL_MSG_CT_GET, unix.NLM_F_ACK)
	c.seq++
	req.Seq = c.seq
	req.AddData(&nl.Nfgenmsg{NfgenFamily: family, Version: nl.NFNETLINK_V0})
	orig := nl.NewRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_ORIG, nil)
	ip := nl.NewRtAttrChild(orig, unix.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil)
	nl.NewRtAttrChild(ip, srcAttr, src.Addr().AsSlice())
	nl.NewRtAttrChild(ip, dstAttr, dst.Addr().AsSlice())
	l4 := nl.NewRtAttrChild(orig, unix.NLA_F_NESTED|nl.CTA_TUPLE_PROTO, nil)
	nl.NewRtAttrChild(l4, nl.CTA_PROTO_NUM, []byte{proto})
	nl.NewRtAttrChild(l4, nl.CTA_PROTO_SRC_PORT, nl.BEUint16Attr(src.Port()))
	nl.NewRtAttrChild(l4, nl.CTA_PROTO_DST_PORT, nl.BEUint16Attr(dst.Port()))
	req.AddData(orig)
	if err := unix.Sendto(c.fd, req.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return netip.AddrPort{}, err
	}
	var reply netip.AddrPort
	for {
		n, _, err := unix.Recvfrom(c.fd, c.buf, 0)
		if err != nil {
			return netip.AddrPort{}, err // EAGAIN: no answer within conntrackTimeout
		}
		msgs, err := syscall.ParseNetlinkMessage(c.buf[:n])
		if err != nil {
			return netip.AddrPort{}, err
		}
		for _, m := range msgs {
			if m.Header.Seq != c.seq {
				continue // the late answer to a request that timed out
			}
			if m.Header.Type == unix.NLMSG_ERROR {
				if len(m.Data) < 4 {
					return netip.AddrPort{}, errors.New("short netlink error message")
				}
				switch errno := -int32(binary.NativeEndian.Uint32(m.Data)); errno {
				case 0: // the ack: done
					return reply, nil
				case int32(unix.ENOENT):
					return netip.AddrPort{}, nil
				default:
					return netip.AddrPort{}, syscall.Errno(errno)
				}
			}
			if m.Header.Type == unix.NLMSG_DONE {
				return reply, nil
			}
			if reply, err = replySource(m.Data); err != nil {
				return netip.AddrPort{}, err
			}
		}
	}
}

func unmapPort(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// replySource parses a ctnetlink entry (nfgenmsg, then attributes) for the
// source address and port of its reply tuple.
func replySource(msg []byte) (netip.AddrPort, error) {
	if len(msg) < nl.SizeofNfgenmsg {
		return netip.AddrPort{}, errors.New("short ctnetlink message")
	}
	find := func(b []byte, typ uint16) ([]byte, error) {
		attrs, err := nl.ParseRouteAttr(b)
		if err != nil {
			return nil, err
		}
		for _, a := range attrs {
			if a.Attr.Type&^uint16(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER) == typ {
				return a.Value, nil
			}
		}
		return nil, nil
	}
	tuple, err := find(msg[nl.SizeofNfgenmsg:], nl.CTA_TUPLE_REPLY)
	if err != nil || tuple == nil {
		return netip.AddrPort{}, err
	}
	ipAttrs, err := find(tuple, nl.CTA_TUPLE_IP)
	if err != nil || ipAttrs == nil {
		return netip.AddrPort{}, err
	}
	raw, err := find(ipAttrs, nl.CTA_IP_V4_SRC)
	if err == nil && raw == nil {
		raw, err = find(ipAttrs, nl.CTA_IP_V6_SRC)
	}
	if err != nil {
		return netip.AddrPort{}, err
	}
	addr, ok := netip.AddrFromSlice(raw)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("reply source address of %d bytes", len(raw))
	}
	l4, err := find(tuple, nl.CTA_TUPLE_PROTO)
	if err != nil || l4 == nil {
		return netip.AddrPort{}, err
	}
	port, err := find(l4, nl.CTA_PROTO_SRC_PORT)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(port) != 2 {
		return netip.AddrPort{}, fmt.Errorf("reply source port of %d bytes", len(port))
	}
	return netip.AddrPortFrom(addr, binary.BigEndian.Uint16(port)), nil
}
