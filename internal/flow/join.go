package flow

import (
	"net/netip"
	"time"
)

// LiveConn is an open TCP connection at the end of an interval.
type LiveConn struct {
	Cookie        uint64
	Role          Role
	Local, Remote netip.AddrPort // as the socket sees them
	OnNode        bool           // a socket of the node's own network namespace
	Retransmits   uint32
	// Established: the handshake completed (ISNs and addresses are set).
	Established          bool
	ClientISN, ServerISN uint32
	SRTT                 time.Duration
}

// ConnRef is what a TCP flow learns from its connection.
type ConnRef struct {
	TraceID [16]byte
	SpanID  [8]byte // the span of the side that owns the flow
	SRTT    time.Duration
	Role    Role // the local socket's side of the connection
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
func NewConnIndex(live []LiveConn, closed []Conn) ConnIndex {
	ix := make(ConnIndex, len(live)+len(closed))
	for i := range live {
		l := &live[i]
		if !l.Established {
			continue
		}
		c := Conn{Role: l.Role, ClientISN: l.ClientISN, ServerISN: l.ServerISN, Cookie: l.Cookie,
			Established: time.Unix(0, 1)} // established: IDs from the ISN pair alone
		trace, span, _ := ConnIDs(&c)
		ix[connTuple{l.Local, l.Remote}] = ConnRef{TraceID: trace, SpanID: span, SRTT: l.SRTT, Role: l.Role}
	}
	for i := range closed {
		c := &closed[i]
		if c.Established.IsZero() {
			continue
		}
		ix[connTuple{c.Local, c.Remote}] = ConnRef{TraceID: c.TraceID, SpanID: c.SpanID, SRTT: c.SRTT, Role: c.Role}
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
