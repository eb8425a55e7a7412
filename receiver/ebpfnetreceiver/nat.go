package ebpfnetreceiver

import (
	"net/netip"
	"sync/atomic"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/k8s"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
)

// natLookup asks the node's conntrack where its NAT (kube-proxy's DNAT of a
// Service ClusterIP, in the node after the socket) sent a connection, over
// its own ctnetlink socket opened at first use. One goroutine uses it.
type natLookup struct {
	ct *kernel.Conntrack
}

// backend returns where the connection from local to the ClusterIP
// service went, if the node's NAT sent it elsewhere. The first error of the
// pipeline is logged (failed), later ones only leave the backend unnamed.
func (n *natLookup) backend(proto uint8, local, service netip.AddrPort, failed *atomic.Bool, logger *zap.Logger) (netip.AddrPort, bool) {
	var err error
	if n.ct == nil {
		if n.ct, err = kernel.OpenConntrack(); err != nil {
			natError(err, failed, logger)
			return netip.AddrPort{}, false
		}
	}
	b, ok, err := n.ct.Backend(proto, local, service)
	if err != nil {
		natError(err, failed, logger)
		return netip.AddrPort{}, false
	}
	return b, ok
}

func natError(err error, failed *atomic.Bool, logger *zap.Logger) {
	if failed.CompareAndSwap(false, true) {
		logger.Warn("conntrack lookup failed: spans and flow logs to Service ClusterIPs do not name the backend the node's NAT chose (needs CAP_NET_ADMIN and nf_conntrack); logged once",
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

// annotateNATBackends sets Backend on the flows of local clients to a
// Service ClusterIP (both directions: the replies come back from the
// ClusterIP), one conntrack request per connection and interval.
func (p *pipeline) annotateNATBackends(b *flow.Batch) {
	if p.peerMemo == nil {
		return
	}
	type conn struct {
		proto          uint8
		local, service netip.AddrPort
	}
	var seen map[conn]netip.AddrPort
	for i := range b.Flows {
		f := &b.Flows[i]
		if !f.HasPorts() || f.Dialed.IsValid() {
			continue
		}
		peer, local := f.Peer(), f.Local()
		if pr, ok := p.peerMemo.Lookup(peer.Addr()); !ok || pr.Kind != k8s.KindService {
			continue
		}
		if seen == nil {
			seen = make(map[conn]netip.AddrPort)
		}
		k := conn{f.Protocol, local, peer}
		backend, done := seen[k]
		if !done {
			backend, _ = p.flowNAT.backend(f.Protocol, local, peer, &p.natFailed, p.set.Logger)
			seen[k] = backend
		}
		f.Backend = backend
	}
}
