package flow

import (
	"net/netip"
	"time"

	"github.com/ebpfnet/ebpfnet/internal/kernel"
)

// LiveConn is an open TCP connection at the end of an interval.
type LiveConn struct {
	Cookie      uint64
	Role        Role
	Local, Peer netip.Addr
	OnNode      bool
	Retransmits uint32
	Established bool
}

// LiveFromKernel converts the kernel's connection states.
func LiveFromKernel(live []kernel.LiveConn, hostNetns uint32, dst []LiveConn) []LiveConn {
	for i := range live {
		st := &live[i].State
		addr := func(b [16]byte) netip.Addr {
			a := netip.AddrFrom16(b)
			if st.Family == 4 {
				return a.Unmap()
			}
			return a
		}
		dst = append(dst, LiveConn{
			Cookie: live[i].Cookie, Role: Role(st.Role),
			Local: addr(st.LocalAddr), Peer: addr(st.RemoteAddr),
			OnNode:      hostNetns != 0 && st.Netns == hostNetns,
			Retransmits: st.TotalRetrans, Established: st.EstablishedNs != 0,
		})
	}
	return dst
}

// ConnRef is what a TCP flow learns from its connection.
type ConnRef struct {
	TraceID [16]byte
	SpanID  [8]byte // the span of the side that owns the flow
	SRTT    time.Duration
}

type connTuple struct {
	local, remote netip.AddrPort
}

// ConnIndex maps a TCP connection's 4-tuple, as its local socket sees it, to
// its IDs and latest RTT. A pod's veth sees the addresses its socket uses
// (before the node's DNAT for a client, after it for a server), so the
// flows of a pod join their sockets exactly.
type ConnIndex map[connTuple]ConnRef

// NewConnIndex indexes the established connections open now and those that
// closed during the interval.
func NewConnIndex(live []kernel.LiveConn, closed []Conn) ConnIndex {
	ix := make(ConnIndex, len(live)+len(closed))
	for i := range live {
		st := &live[i].State
		if st.EstablishedNs == 0 {
			continue
		}
		addr := func(b [16]byte) netip.Addr {
			a := netip.AddrFrom16(b)
			if st.Family == 4 {
				return a.Unmap()
			}
			return a
		}
		c := Conn{Role: Role(st.Role), ClientISN: st.ClientIsn, ServerISN: st.ServerIsn, Cookie: live[i].Cookie,
			Established: time.Unix(0, 1)} // established: IDs from the ISN pair alone
		trace, span, _ := ConnIDs(&c)
		ix[connTuple{netip.AddrPortFrom(addr(st.LocalAddr), st.LocalPort), netip.AddrPortFrom(addr(st.RemoteAddr), st.RemotePort)}] =
			ConnRef{TraceID: trace, SpanID: span, SRTT: time.Duration(st.SrttUs) * time.Microsecond}
	}
	for i := range closed {
		c := &closed[i]
		if c.Established.IsZero() {
			continue
		}
		ix[connTuple{c.Local, c.Remote}] = ConnRef{TraceID: c.TraceID, SpanID: c.SpanID, SRTT: c.SRTT}
	}
	return ix
}

// Annotate sets the connection of every TCP flow it knows.
func (ix ConnIndex) Annotate(b *Batch) {
	if len(ix) == 0 {
		return
	}
	for i := range b.Flows {
		f := &b.Flows[i]
		if f.Protocol != ProtoTCP {
			continue
		}
		if ref, ok := ix[connTuple{f.Local(), f.Peer()}]; ok {
			f.Conn = ref
		}
	}
}
