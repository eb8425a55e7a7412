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

// Resolve sets Endpoint on every flow of the batch: Begin, Learn and
// Resolve of each flow, End.
func (e *Endpoints) Resolve(b *Batch) {
	e.Begin()
	for i := range b.Flows {
		e.Learn(&b.Flows[i])
	}
	for i := range b.Flows {
		e.ResolveFlow(&b.Flows[i])
	}
	e.End()
}

// Begin starts a batch: Learn each of its flows, then ResolveFlow them, then
// End it.
func (e *Endpoints) Begin() { e.batch++ }

// Learn learns the pod address of f's interface from it; true when the
// interface's IPv4 address is known now (nothing more can change its
// endpoint: a dual-stack pod is its IPv4 address).
func (e *Endpoints) Learn(f *Flow) bool {
	if f.OnNode {
		return false
	}
	ia := e.byIface[f.Ifindex]
	local := f.Local().Addr()
	if !isUnicast(local) {
		return ia != nil && ia.v4.IsValid()
	}
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
	return ia.v4.IsValid()
}

// ResolveFlow sets f's Endpoint from what the batch's flows taught.
func (e *Endpoints) ResolveFlow(f *Flow) {
	if f.OnNode {
		return
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

// End forgets the interfaces unseen for Forget batches.
func (e *Endpoints) End() {
	for idx, ia := range e.byIface {
		if e.batch-ia.seen > e.Forget {
			delete(e.byIface, idx)
		}
	}
}
