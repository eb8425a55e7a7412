package ebpfnetreceiver

import (
	"net/netip"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ebpfnet/ebpfnet/internal/convert"
	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/k8s"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
)

// joins wires the model's joins to their lookups: Kubernetes (the resolver
// and its per-interval memo), the socket cgroups, and the node's conntrack
// (one socket per goroutine that asks it). Without Kubernetes there are no
// Service addresses, so no NAT or dialed-Service joins.
type joins struct {
	peers  *k8s.Resolver // nil: no Kubernetes
	memo   *k8s.Memo
	policy *policyVerdicts // nil: no NetworkPolicy verdicts
	tcpDNS flow.TruncatedRetries
	conns  connJoins // readConns goroutine
	flows  flowJoins // collect goroutine
}

type connJoins struct {
	flow.ConnJoins
	nat *kernel.NATLookup
}

type flowJoins struct {
	flow.Joiner
	nat *kernel.NATLookup
}

func (c *connJoins) close() {
	if c.nat != nil {
		c.nat.Close()
	}
}

func (f *flowJoins) close() {
	if f.nat != nil {
		f.nat.Close()
	}
}

func newJoins(cfg *Config, peers *k8s.Resolver, perFlow bool, logger *zap.Logger) *joins {
	j := &joins{peers: peers, tcpDNS: flow.TruncatedRetries{Window: 5 * time.Second}}
	j.flows.Joiner = flow.Joiner{Endpoints: flow.NewEndpoints(), PerFlow: perFlow, HostNetns: kernel.OwnNetns()}
	if cg := cgroups(cfg); cg != nil {
		j.conns.Pod = func(id uint64) (string, string) {
			c := cg.Lookup(id)
			return c.PodUID, c.ContainerID
		}
		j.flows.DropPod = func(id uint64) string { return cg.Lookup(id).PodUID }
	}
	if peers == nil {
		return j
	}
	j.memo = k8s.NewMemo(peers)
	warn := natWarning(logger)
	j.conns.nat, j.flows.nat = kernel.NewNATLookup(warn), kernel.NewNATLookup(warn)
	j.conns.IsService, j.conns.Backend = peers.IsService, j.conns.nat.Backend
	j.flows.Backs = j.memo.Backs
	j.flows.NAT = &flow.FlowNAT{IsService: j.memoIsService, Backend: j.flows.nat.Backend}
	if cfg.K8s.NetworkPolicies {
		j.policy = newPolicyVerdicts(peers)
		j.flows.Policy = j.policy
	}
	return j
}

// natWarning logs the first conntrack failure of either lookup, once.
func natWarning(logger *zap.Logger) func(error) {
	var logged atomic.Bool
	return func(err error) {
		if logged.CompareAndSwap(false, true) {
			logger.Warn("conntrack lookup failed: spans and flow logs to Service ClusterIPs do not name the backend the node's NAT chose (needs CAP_NET_ADMIN and nf_conntrack); retried every 30 s, logged once",
				zap.Error(err))
		}
	}
}

// cgroups maps socket cgroups to pods: below cgroup_path's cgroup2
// hierarchy (kernel.Cgroup2Dir), else the cgroup2 mount's root; nil when
// there is none (AttachTCP has failed Start then).
func cgroups(cfg *Config) *k8s.Cgroups {
	if root, err := kernel.Cgroup2Dir(cfg.CgroupPath); err == nil {
		return k8s.NewCgroups(root)
	}
	return nil
}

func (j *joins) memoIsService(a netip.Addr) bool {
	p, ok := j.memo.Lookup(a)
	return ok && p.Kind == k8s.KindService
}

// peerResolver is what the converters resolve peers with (nil: none).
func (j *joins) peerResolver() convert.PeerResolver {
	if j.memo == nil {
		return nil
	}
	return j.memo
}

// wantUDPDialed reports whether the UDP destinations are joined.
func (j *joins) wantUDPDialed() bool { return j.flows.Backs != nil }

// begin starts completing one interval's batch, its flows streamed
// through the returned Stream; the memo answers for one interval.
func (j *joins) begin(b *flow.Batch) *flow.Stream {
	if j.memo != nil {
		j.memo.Reset()
	}
	if j.policy != nil {
		j.policy.begin()
	}
	j.tcpDNS.Link(b.DNS)
	return j.flows.Begin(b)
}

// stop releases the flow joins' lookups and Kubernetes, after the final
// drain (the connection joins are released by their reader).
func (j *joins) stop() {
	j.flows.close()
	if j.peers != nil {
		j.peers.Stop()
	}
}
