package ebpfnetreceiver

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/k8s"
	"github.com/ebpfnet/ebpfnet/internal/netpol"
)

// policyVerdicts judges flows with the cluster's NetworkPolicies
// (flow.PolicyEvaluator): the compiled set of the interval (begin), the pods
// from the resolver, one evaluation per distinct question in an interval.
type policyVerdicts struct {
	r    *k8s.Resolver
	pols *netpol.Policies
	memo map[policyQuestion]policyAnswer
}

type policyQuestion struct {
	local, peer netip.Addr
	port        uint16
	protocol    uint8
	egress      bool
}

type policyAnswer struct {
	result flow.PolicyResult
	names  []string
	ok     bool
}

func newPolicyVerdicts(r *k8s.Resolver) *policyVerdicts {
	return &policyVerdicts{r: r, memo: map[policyQuestion]policyAnswer{}}
}

// begin starts an interval: the policies as they are now.
func (p *policyVerdicts) begin() {
	p.pols = p.r.Policies()
	clear(p.memo)
}

// Verdict implements flow.PolicyEvaluator. No verdict for a local address
// of no pod, a peer that is a Service ClusterIP nobody translated (the
// policy applies to its backends), or before the policies are synced.
func (p *policyVerdicts) Verdict(local, peer netip.Addr, port uint16, protocol uint8, egress bool) (flow.PolicyResult, []string, bool) {
	if p.pols == nil {
		return 0, nil, false
	}
	q := policyQuestion{local, peer, port, protocol, egress}
	if a, ok := p.memo[q]; ok {
		return a.result, a.names, a.ok
	}
	a := p.evaluate(q)
	p.memo[q] = a
	return a.result, a.names, a.ok
}

func (p *policyVerdicts) evaluate(q policyQuestion) policyAnswer {
	pod, ok := p.r.PolicyPod(q.local)
	if !ok || p.r.IsService(q.peer) {
		return policyAnswer{}
	}
	other := netpol.Endpoint{IP: q.peer}
	other.Pod, _ = p.r.PolicyPod(q.peer)
	var v netpol.Verdict
	if q.egress {
		v = p.pols.Egress(pod, other, q.port, protocolOf(q.protocol))
	} else {
		v = p.pols.Ingress(pod, other, q.port, protocolOf(q.protocol))
	}
	return policyAnswer{result: policyResults[v.Result], names: v.Policies, ok: true}
}

// policyResults are the model's values of the evaluator's results.
var policyResults = [...]flow.PolicyResult{netpol.NoPolicy: flow.PolicyNone, netpol.Allowed: flow.PolicyAllowed, netpol.Denied: flow.PolicyDenied}

// protocolOf names an IP protocol as NetworkPolicy ports do (others never
// match a port).
func protocolOf(p uint8) corev1.Protocol {
	switch p {
	case flow.ProtoTCP:
		return corev1.ProtocolTCP
	case flow.ProtoUDP:
		return corev1.ProtocolUDP
	case 132:
		return corev1.ProtocolSCTP
	}
	return "IP"
}
