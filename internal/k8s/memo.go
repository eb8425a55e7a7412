package k8s

import "net/netip"

// Memo remembers the lookups of one collection interval: a batch has many
// flows, connections and series per peer address, and a Resolver lookup
// costs microseconds (index reads and owner chain) while a memo hit is a
// map read. Not safe for concurrent use: one per collecting goroutine,
// Reset at the start of every interval so changes show within one interval.
type Memo struct {
	r    *Resolver
	seen map[netip.Addr]memoEntry
}

type memoEntry struct {
	peer Peer
	ok   bool
}

// NewMemo wraps r.
func NewMemo(r *Resolver) *Memo { return &Memo{r: r, seen: make(map[netip.Addr]memoEntry)} }

// Lookup is Resolver.Lookup, remembered until Reset.
func (m *Memo) Lookup(ip netip.Addr) (Peer, bool) {
	if e, ok := m.seen[ip]; ok {
		return e.peer, e.ok
	}
	p, ok := m.r.Lookup(ip)
	m.seen[ip] = memoEntry{p, ok}
	return p, ok
}

// Backs is Resolver.Backs with the Service's lookup memoized: many flows
// of an interval check the same dialed address.
func (m *Memo) Backs(service, backend netip.Addr) bool {
	svc, ok := m.Lookup(service)
	return ok && m.r.backs(svc, backend)
}

// PodByUID is Resolver.PodByUID (a map read already).
func (m *Memo) PodByUID(uid string) (Peer, bool) { return m.r.PodByUID(uid) }

// NodeZone is Resolver.NodeZone (a map read already).
func (m *Memo) NodeZone(node string) string { return m.r.NodeZone(node) }

// Reset forgets the remembered lookups.
func (m *Memo) Reset() { clear(m.seen) }
