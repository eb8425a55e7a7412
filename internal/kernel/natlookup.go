package kernel

import (
	"net/netip"
	"time"
)

// NATLookup asks the node's conntrack where its NAT (kube-proxy's DNAT of a
// Service ClusterIP, in the node after the socket) sent a connection, over
// its own ctnetlink socket opened at first use. One goroutine uses it. After
// an error it rests natRetry: a conntrack that does not answer must not hold
// up the events behind it (each lookup may wait up to conntrackTimeout).
type NATLookup struct {
	ct      conntracker
	open    func() (conntracker, error) // nil: OpenConntrack
	retryAt time.Time
	onError func(error)
}

// conntracker is *Conntrack; tests use fakes.
type conntracker interface {
	Backend(proto uint8, src, dst netip.AddrPort) (netip.AddrPort, bool, error)
	Close() error
}

// natRetry is how long lookups rest after an error.
const natRetry = 30 * time.Second

// NewNATLookup returns a lookup that tells onError of every failure (to
// open the socket, or of a request); it may be nil.
func NewNATLookup(onError func(error)) *NATLookup {
	return &NATLookup{onError: onError}
}

// Backend returns where the connection from local to service went, if the
// node's NAT sent it elsewhere (flow.BackendFunc).
func (n *NATLookup) Backend(proto uint8, local, service netip.AddrPort) (netip.AddrPort, bool) {
	if !n.retryAt.IsZero() && time.Now().Before(n.retryAt) {
		return netip.AddrPort{}, false
	}
	if n.ct == nil {
		open := n.open
		if open == nil {
			open = func() (conntracker, error) { return OpenConntrack() }
		}
		ct, err := open()
		if err != nil {
			n.fail(err)
			return netip.AddrPort{}, false
		}
		n.ct = ct
	}
	b, ok, err := n.ct.Backend(proto, local, service)
	if err != nil {
		n.fail(err)
		return netip.AddrPort{}, false
	}
	n.retryAt = time.Time{}
	return b, ok
}

func (n *NATLookup) fail(err error) {
	n.retryAt = time.Now().Add(natRetry)
	if n.onError != nil {
		n.onError(err)
	}
}

// Close closes the socket, if open; a later lookup opens another.
func (n *NATLookup) Close() {
	if n.ct != nil {
		_ = n.ct.Close()
		n.ct = nil
	}
}
