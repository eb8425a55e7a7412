package ebpfnetreceiver

import (
	"net/netip"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/k8s"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
)

// natLookup asks the node's conntrack where its NAT (kube-proxy's DNAT of a
// Service ClusterIP, in the node after the socket) sent a connection, over
// its own ctnetlink socket opened at first use. One goroutine uses it. After
// an error it rests natRetry: a conntrack that does not answer must not hold
// up the events behind it (each lookup may wait up to 200 ms).
type natLookup struct {
	ct      conntracker
	open    func() (conntracker, error) // nil: kernel.OpenConntrack
	retryAt time.Time
}

// conntracker is kernel.Conntrack.
type conntracker interface {
	Backend(proto uint8, src, dst netip.AddrPort) (netip.AddrPort, bool, error)
	Close() error
}

// natRetry is how long lookups rest after an error.
const natRetry = 30 * time.Second

// backend returns where the connection from local to the ClusterIP
// service went, if the node's NAT sent it elsewhere. The first error of the
// pipeline is logged (failed), later ones only leave the backend unnamed.
func (n *natLookup) backend(proto uint8, local, service netip.AddrPort, failed *atomic.Bool, logger *zap.Logger) (netip.AddrPort, bool) {
	if !n.retryAt.IsZero() && time.Now().Before(n.retryAt) {
		return netip.AddrPort{}, false
	}
	var err error
	if n.ct == nil {
		open := n.open
		if open == nil {
			open = func() (conntracker, error) { return kernel.OpenConntrack() }
		}
		if n.ct, err = open(); err != nil {
			n.ct = nil
			n.fail(err, failed, logger)
			return netip.AddrPort{}, false
		}
	}
	b, ok, err := n.ct.Backend(proto, local, service)
	if err != nil {
		n.fail(err, failed, logger)
		return netip.AddrPort{}, false
	}
	n.retryAt = time.Time{}
	return b, ok
}

func (n *natLookup) fail(err error, failed *atomic.Bool, logger *zap.Logger) {
	n.retryAt = time.Now().Add(natRetry)
	if failed.CompareAndSwap(false, true) {
		logger.Warn("conntrack lookup failed: spans and flow logs to Service ClusterIPs do not name the backend the node's NAT chose (needs CAP_NET_ADMIN and nf_conntrack); retried every 30 s, logged once",
			zap.Error(err))
	}
}

func (n *natLookup) close() {
	if n.ct != nil {
		_ = n.ct.Close()
		n.ct = nil
	}
}

// findBackend sets Backend on a client connection to a Service ClusterIP
// that the socket saw untranslated. Done as the close event is read:
// conntrack keeps a reset connection only 10 s. One ctnetlink request per
// such connection; none without Kubernetes (no ClusterIPs to know).
func (p *pipeline) findBackend(c *flow.Conn) {
	if p.peers == nil || c.Role != flow.Client || !c.Remote.IsValid() ||
		(c.Dialed.IsValid() && c.Dialed != c.Remote) || !p.peers.IsService(c.Remote.Addr()) {
		return
	}
	if b, ok := p.connNAT.backend(unix.IPPROTO_TCP, c.Local, c.Remote, &p.natFailed, p.set.Logger); ok {
		c.Backend = b
	}
}

// natConn is a connection of a local client to a Service ClusterIP.
type natConn struct {
	proto          uint8
	local, service netip.AddrPort
}

// tcpSYN is the SYN bit of flow.Flow.TCPFlags.
const tcpSYN = 0x02

// annotateNATBackends sets Backend on the flows of local clients to a
// Service ClusterIP (both directions: the replies come back from the
// ClusterIP). One conntrack request per UDP flow and interval, and per TCP
// connection: a TCP connection keeps the backend conntrack gave for it
// while it has flows in consecutive intervals (the NAT of an established
// connection does not change); a SYN in the interval means a new connection
// on the same addresses, which is looked up again.
func (p *pipeline) annotateNATBackends(b *flow.Batch) {
	if p.peerMemo == nil {
		return
	}
	prev, next := p.natKnown, p.natNext
	if next == nil {
		next = make(map[natConn]netip.AddrPort)
	}
	clear(next)
	for i := range b.Flows {
		f := &b.Flows[i]
		if !f.HasPorts() || f.Dialed.IsValid() {
			continue
		}
		peer, local := f.Peer(), f.Local()
		if pr, ok := p.peerMemo.Lookup(peer.Addr()); !ok || pr.Kind != k8s.KindService {
			continue
		}
		k := natConn{f.Protocol, local, peer}
		backend, done := next[k]
		if !done {
			if f.Protocol == flow.ProtoTCP && f.TCPFlags&tcpSYN == 0 {
				backend, done = prev[k]
			}
			if !done || !backend.IsValid() {
				backend, _ = p.flowNAT.backend(f.Protocol, local, peer, &p.natFailed, p.set.Logger)
			}
			next[k] = backend
		}
		f.Backend = backend
	}
	// Only this interval's TCP connections stay known: one that had no
	// flow for an interval is looked up again.
	for k := range next {
		if k.proto != flow.ProtoTCP {
			delete(next, k)
		}
	}
	p.natKnown, p.natNext = next, prev
}
