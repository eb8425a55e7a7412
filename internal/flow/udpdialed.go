package flow

import "net/netip"

// UDPDialed is a destination a local UDP socket sent to, as the application
// passed it (before any socket-level load balancer rewrote it), with the
// socket's local port.
type UDPDialed struct {
	LocalPort uint16
	Dialed    netip.AddrPort // IPv4 unmapped
}

// DialedIndex holds the UDP destinations local sockets sent to, by the
// socket's local port.
type DialedIndex map[uint16][]netip.AddrPort

// NewDialedIndex indexes what the sendmsg4/6 and connect4/6 programs
// recorded.
func NewDialedIndex(entries []UDPDialed) DialedIndex {
	x := make(DialedIndex)
	for _, e := range entries {
		x[e.LocalPort] = append(x[e.LocalPort], e.Dialed)
	}
	return x
}

// Annotate sets Flow.Dialed on the UDP flows a socket-level load balancer
// rewrote: the flow's local port sent to an address other than the flow's
// peer, and backs(dialed, peer) says that the peer is a backend of the
// Service at the dialed address, for exactly one such address. A flow whose
// peer is itself among the addresses its port sent to was not rewritten
// (kube-proxy NAT happens after the packet leaves the pod: its peer is the
// ClusterIP). The local port is not unique across pods; requiring the peer
// to be a backend of the dialed Service keeps a port reused by another pod
// from naming a Service that pod did not use, short of that pod sending to
// the same backend directly from the same port.
func (x DialedIndex) Annotate(b *Batch, backs func(service, backend netip.Addr) bool) {
	if len(x) == 0 || backs == nil {
		return
	}
	for i := range b.Flows {
		f := &b.Flows[i]
		if f.Protocol != ProtoUDP {
			continue
		}
		cands := x[f.Local().Port()]
		if len(cands) == 0 {
			continue
		}
		peer := f.Peer()
		var found netip.AddrPort
		n := 0
		for _, c := range cands {
			if c == peer {
				n = 0
				break
			}
			if c.Addr().Is4() != peer.Addr().Is4() || !backs(c.Addr(), peer.Addr()) {
				continue
			}
			found = c
			n++
		}
		if n == 1 {
			f.Dialed = found
		}
	}
}
