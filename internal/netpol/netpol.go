// Package netpol evaluates traffic against Kubernetes NetworkPolicy
// semantics (networking.k8s.io/v1), whatever the CNI enforces: which
// policies isolate a pod in a direction, and whether any of them allows a
// peer on a port. It is a pure function of the policies, the namespaces'
// labels and the pods involved; the receiver feeds it from informers.
//
// The semantics, from the API reference:
//   - A pod is isolated for ingress (egress) when a policy of its namespace
//     selects it (spec.podSelector) with Ingress (Egress) in its
//     policyTypes; policyTypes left empty mean Ingress, plus Egress when
//     the policy has egress rules.
//   - Traffic to (from) an isolated pod is allowed when any rule of any
//     policy isolating it in that direction allows it; the policies are
//     additive. Traffic is allowed in full only when the source's egress and
//     the destination's ingress both allow it.
//   - A rule allows a peer when its from/to is empty or one of its peers
//     matches, and a port when its ports are empty or one of them matches.
//   - A peer: podSelector alone selects pods of the policy's namespace;
//     namespaceSelector alone all pods of the namespaces it selects; both,
//     the pods podSelector selects in those namespaces; ipBlock an address
//     range less its except ranges (matched against any address, pods'
//     included, as most implementations do).
//   - A port: protocol (default TCP) with a port number, a range (port ..
//     endPort), a name (resolved against the destination pod's container
//     ports: never matches a peer that is not a pod), or no port (all).
//
// Connections are stateful: the replies of an allowed connection are
// allowed. Callers evaluate the direction the connection was opened in.
package netpol

import (
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Pod is what evaluation needs of a pod.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	// Ports are its containers' ports, for named ports.
	Ports []corev1.ContainerPort
}

// Endpoint is the other side of a flow: a pod (Pod set) or an address
// that is no known pod.
type Endpoint struct {
	Pod *Pod
	IP  netip.Addr
}

// Result of an evaluation.
type Result uint8

const (
	// NoPolicy: no policy isolates the pod in that direction.
	NoPolicy Result = iota
	// Allowed by at least one rule of the policies isolating the pod.
	Allowed
	// Denied: isolated, and no rule allows it.
	Denied
)

func (r Result) String() string {
	switch r {
	case Allowed:
		return "allowed"
	case Denied:
		return "denied"
	}
	return "no_policy"
}

// Verdict is a Result with the policies behind it: those that allow the
// traffic (Allowed), or that isolate the pod (Denied), as namespace/name,
// sorted.
type Verdict struct {
	Result   Result
	Policies []string
}

// Direction of a policy.
type Direction uint8

const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Policies is a set of compiled NetworkPolicies and the namespaces'
// labels. Not safe for concurrent mutation; evaluation is read-only.
type Policies struct {
	byNS     map[string][]*policy
	nsLabels map[string]labels.Set
}

type policy struct {
	name      string // namespace/name
	namespace string
	selector  labels.Selector
	types     [2]bool // by Direction
	rules     [2][]rule
}

type rule struct {
	peers []peer // empty: every peer
	ports []port // empty: every port
}

type peer struct {
	pods, namespaces labels.Selector // nil: not set
	block            *ipBlock
}

type ipBlock struct {
	cidr   netip.Prefix
	except []netip.Prefix
}

type port struct {
	protocol corev1.Protocol
	all      bool   // no port: every port of the protocol
	from, to int32  // a number or a range
	name     string // a named port
}

// New compiles policies; namespaces gives each namespace's labels. A
// policy that does not compile (a bad selector, CIDR) is an error naming
// it; the others are kept.
func New(policies []*networkingv1.NetworkPolicy, namespaces map[string]map[string]string) (*Policies, error) {
	p := &Policies{byNS: map[string][]*policy{}, nsLabels: map[string]labels.Set{}}
	for ns, l := range namespaces {
		p.nsLabels[ns] = labels.Set(l)
	}
	var errs []error
	for _, np := range policies {
		c, err := compile(np)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.byNS[np.Namespace] = append(p.byNS[np.Namespace], c)
	}
	if len(errs) > 0 {
		return p, fmt.Errorf("network policies: %v", errs)
	}
	return p, nil
}

func compile(np *networkingv1.NetworkPolicy) (*policy, error) {
	name := np.Namespace + "/" + np.Name
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		return nil, fmt.Errorf("%s: podSelector: %w", name, err)
	}
	c := &policy{name: name, namespace: np.Namespace, selector: sel}
	if len(np.Spec.PolicyTypes) == 0 {
		c.types[Ingress] = true
		c.types[Egress] = len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			c.types[Ingress] = true
		case networkingv1.PolicyTypeEgress:
			c.types[Egress] = true
		}
	}
	for _, r := range np.Spec.Ingress {
		cr, err := compileRule(r.From, r.Ports)
		if err != nil {
			return nil, fmt.Errorf("%s: ingress: %w", name, err)
		}
		c.rules[Ingress] = append(c.rules[Ingress], cr)
	}
	for _, r := range np.Spec.Egress {
		cr, err := compileRule(r.To, r.Ports)
		if err != nil {
			return nil, fmt.Errorf("%s: egress: %w", name, err)
		}
		c.rules[Egress] = append(c.rules[Egress], cr)
	}
	return c, nil
}

func compileRule(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) (rule, error) {
	var r rule
	for _, p := range peers {
		cp, err := compilePeer(p)
		if err != nil {
			return r, err
		}
		r.peers = append(r.peers, cp)
	}
	for _, p := range ports {
		cp := port{protocol: corev1.ProtocolTCP, all: p.Port == nil}
		if p.Protocol != nil {
			cp.protocol = *p.Protocol
		}
		switch {
		case p.Port == nil:
		case p.Port.Type == intstr.String:
			cp.name = p.Port.StrVal
		default:
			cp.from, cp.to = p.Port.IntVal, p.Port.IntVal
			if p.EndPort != nil {
				cp.to = *p.EndPort
			}
		}
		r.ports = append(r.ports, cp)
	}
	return r, nil
}

func compilePeer(p networkingv1.NetworkPolicyPeer) (peer, error) {
	var out peer
	var err error
	if p.PodSelector != nil {
		if out.pods, err = metav1.LabelSelectorAsSelector(p.PodSelector); err != nil {
			return out, fmt.Errorf("podSelector: %w", err)
		}
	}
	if p.NamespaceSelector != nil {
		if out.namespaces, err = metav1.LabelSelectorAsSelector(p.NamespaceSelector); err != nil {
			return out, fmt.Errorf("namespaceSelector: %w", err)
		}
	}
	if p.IPBlock != nil {
		b := &ipBlock{}
		if b.cidr, err = netip.ParsePrefix(p.IPBlock.CIDR); err != nil {
			return out, fmt.Errorf("ipBlock cidr: %w", err)
		}
		for _, e := range p.IPBlock.Except {
			x, err := netip.ParsePrefix(e)
			if err != nil {
				return out, fmt.Errorf("ipBlock except: %w", err)
			}
			b.except = append(b.except, x)
		}
		out.block = b
	}
	return out, nil
}

// Ingress evaluates traffic from src to pod dst on port/protocol, by the
// policies of dst's namespace.
func (p *Policies) Ingress(dst *Pod, src Endpoint, portNum uint16, proto corev1.Protocol) Verdict {
	return p.evaluate(Ingress, dst, src, dst, portNum, proto)
}

// Egress evaluates traffic from pod src to dst on port/protocol, by the
// policies of src's namespace.
func (p *Policies) Egress(src *Pod, dst Endpoint, portNum uint16, proto corev1.Protocol) Verdict {
	return p.evaluate(Egress, src, dst, dst.Pod, portNum, proto)
}

// evaluate: subject is the pod whose policies apply, other the peer, and
// target the destination pod (named ports; nil: not a pod).
func (p *Policies) evaluate(dir Direction, subject *Pod, other Endpoint, target *Pod, portNum uint16, proto corev1.Protocol) Verdict {
	var isolating, allowing []string
	set := labels.Set(subject.Labels)
	for _, pol := range p.byNS[subject.Namespace] {
		if !pol.types[dir] || !pol.selector.Matches(set) {
			continue
		}
		isolating = append(isolating, pol.name)
		for i := range pol.rules[dir] {
			if p.ruleAllows(&pol.rules[dir][i], pol.namespace, other, target, portNum, proto) {
				allowing = append(allowing, pol.name)
				break
			}
		}
	}
	switch {
	case len(isolating) == 0:
		return Verdict{Result: NoPolicy}
	case len(allowing) > 0:
		slices.Sort(allowing)
		return Verdict{Result: Allowed, Policies: allowing}
	}
	slices.Sort(isolating)
	return Verdict{Result: Denied, Policies: isolating}
}

func (p *Policies) ruleAllows(r *rule, ns string, other Endpoint, target *Pod, portNum uint16, proto corev1.Protocol) bool {
	return p.peersAllow(r.peers, ns, other) && portsAllow(r.ports, target, portNum, proto)
}

func (p *Policies) peersAllow(peers []peer, ns string, other Endpoint) bool {
	if len(peers) == 0 {
		return true
	}
	for i := range peers {
		if p.peerMatches(&peers[i], ns, other) {
			return true
		}
	}
	return false
}

func (p *Policies) peerMatches(pr *peer, ns string, other Endpoint) bool {
	if pr.block != nil {
		return pr.block.contains(other.IP)
	}
	pod := other.Pod
	if pod == nil {
		return false // pod and namespace selectors select pods only
	}
	if pr.namespaces == nil {
		if pod.Namespace != ns {
			return false
		}
	} else if !pr.namespaces.Matches(p.nsLabels[pod.Namespace]) {
		return false
	}
	return pr.pods == nil || pr.pods.Matches(labels.Set(pod.Labels))
}

func (b *ipBlock) contains(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || !b.cidr.Contains(a) {
		return false
	}
	for _, e := range b.except {
		if e.Contains(a) {
			return false
		}
	}
	return true
}

func portsAllow(ports []port, target *Pod, portNum uint16, proto corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, pt := range ports {
		if pt.protocol != proto {
			continue
		}
		switch {
		case pt.all:
			return true
		case pt.name != "":
			if target != nil && namedPort(target, pt.name, proto) == int32(portNum) {
				return true
			}
		case int32(portNum) >= pt.from && int32(portNum) <= pt.to:
			return true
		}
	}
	return false
}

// namedPort is the number of pod's container port name for proto (0: none).
func namedPort(pod *Pod, name string, proto corev1.Protocol) int32 {
	for _, cp := range pod.Ports {
		p := cp.Protocol
		if p == "" {
			p = corev1.ProtocolTCP
		}
		if cp.Name == name && p == proto {
			return cp.ContainerPort
		}
	}
	return 0
}

// Isolated reports whether any policy isolates pod in dir.
func (p *Policies) Isolated(pod *Pod, dir Direction) bool {
	set := labels.Set(pod.Labels)
	for _, pol := range p.byNS[pod.Namespace] {
		if pol.types[dir] && pol.selector.Matches(set) {
			return true
		}
	}
	return false
}
