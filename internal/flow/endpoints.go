package flow

import "net/netip"

// Endpoints resolves the local endpoint of flows seen on pod interfaces.
// One interface is one pod, so the endpoint is learned per interface from
// the unicast addresses the pod sends from or receives at; a multicast or
// broadcast packet the pod receives is attributed to that address instead of
// to its group address, and a dual-stack pod gets one identity (its IPv4
// address, as Kubernetes lists it first). Not safe for concurrent use.
type Endpoints struct {
	byIface map[uint32]*ifaceAddrs
	batch   uint64
	// Forget is how many batches an interface may go unseen before its
	// addresses are forgotten (its index may be reused by a new pod).
	Forget uint64
}

type ifaceAddrs struct {
	v4, v6 netip.Addr
	seen   uint64
}

// NewEndpoints returns an empty resolver.
func NewEndpoints() *Endpoints {
	return &Endpoints{byIface: make(map[uint32]*ifaceAddrs), Forget: 360}
}

// isUnicast reports whether a can be a pod's own address.
func isUnicast(a netip.Addr) bool {
	return a.IsValid() && !a.IsMulticast() && !a.IsUnspecified() && !a.IsLinkLocalUnicast() &&
		!(a.Is4() && a.As4()[3] == 255) // subnet broadcast, the common /24 and wider case
}

// Resolve sets Endpoint on every flow of the batch.
func (e *Endpoints) Resolve(b *Batch) {
	e.batch++
	for i := range b.Flows {
		f := &b.Flows[i]
		if f.OnNode {
			continue
		}
		local := f.Local().Addr()
		if !isUnicast(local) {
			continue
		}
		ia := e.byIface[f.Ifindex]
		if ia == nil {
			ia = &ifaceAddrs{}
			e.byIface[f.Ifindex] = ia
		}
		if local.Is4() {
			ia.v4 = local
		} else {
			ia.v6 = local
		}
		ia.seen = e.batch
	}
	for i := range b.Flows {
		f := &b.Flows[i]
		if f.OnNode {
			continue
		}
		f.Endpoint = f.Local().Addr()
		if ia := e.byIface[f.Ifindex]; ia != nil {
			if ia.v4.IsValid() {
				f.Endpoint = ia.v4
			} else if ia.v6.IsValid() {
				f.Endpoint = ia.v6
			}
		}
	}
	for idx, ia := range e.byIface {
		if e.batch-ia.seen > e.Forget {
			delete(e.byIface, idx)
		}
	}
}
