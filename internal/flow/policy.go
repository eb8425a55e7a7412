package flow

import (
	"hash/maphash"
	"net/netip"
)

// PolicyResult is a NetworkPolicy verdict.
type PolicyResult uint8

const (
	PolicyNotEvaluated PolicyResult = iota
	PolicyNone                      // no policy isolates the pod in that direction
	PolicyAllowed
	PolicyDenied
)

func (r PolicyResult) String() string {
	switch r {
	case PolicyNone:
		return "no_policy"
	case PolicyAllowed:
		return "allowed"
	case PolicyDenied:
		return "denied"
	}
	return ""
}

// PolicyFinding puts a verdict next to what the kernel saw.
type PolicyFinding uint8

const (
	FindingNone PolicyFinding = iota
	// FindingDeniedDelivered: denied, yet the packets arrived (the peer
	// answered, or the pod received them): the network does not enforce
	// the policy.
	FindingDeniedDelivered
	// FindingAllowedDropped: allowed, yet the kernel dropped packets of the
	// flow, for a reason other than the policy (Drops say which).
	FindingAllowedDropped
)

func (f PolicyFinding) String() string {
	switch f {
	case FindingDeniedDelivered:
		return "denied_but_delivered"
	case FindingAllowedDropped:
		return "allowed_but_dropped"
	}
	return ""
}

// PolicyVerdict is what the local pod's NetworkPolicies say of a flow's
// connection, in the direction it was opened: Egress when the local pod
// opened it, else ingress.
type PolicyVerdict struct {
	Result   PolicyResult
	Egress   bool
	Policies []string // allowing (allowed) or isolating (denied), namespace/name
	Finding  PolicyFinding
}

// PolicyEvaluator judges a connection of the local pod at local with peer,
// to port: one it opened (egress), or one it accepted (ingress). ok false:
// no verdict (not a known pod, policies not synced).
type PolicyEvaluator interface {
	Verdict(local, peer netip.Addr, port uint16, protocol uint8, egress bool) (result PolicyResult, policies []string, ok bool)
}

// judge sets the verdict of a pod flow the evaluator can judge; true when
// it is denied: whether the denial was enforced is known against the
// flows the interval delivered (Stream.End). Call after the drops were
// attached (an allowed flow with drops is allowed_but_dropped).
func judge(f *Flow, ev PolicyEvaluator) (denied bool) {
	if f.OnNode || !f.Endpoint.IsValid() {
		return false
	}
	egress, port, ok := opened(f)
	if !ok {
		return false
	}
	// The peer that served (a Service's backend the node's NAT chose).
	res, names, ok := ev.Verdict(f.Endpoint, f.Served().Addr(), port, f.Protocol, egress)
	if !ok {
		return false
	}
	f.Policy = PolicyVerdict{Result: res, Egress: egress, Policies: names}
	if res == PolicyAllowed && len(f.Drops) > 0 {
		f.Policy.Finding = FindingAllowedDropped
	}
	return res == PolicyDenied
}

// deliverable: f reached its pod or came back from the peer (received, with
// packets the kernel did not drop), unless the drops no flow took say
// otherwise (Stream.End).
func deliverable(f *Flow) bool {
	if f.OnNode || f.Direction != Receive {
		return false
	}
	var dropped uint64
	for _, d := range f.Drops {
		dropped += d.Packets
	}
	return f.Packets > dropped
}

// deliveredSet holds the delivered flows of an interval by a 64-bit hash of
// their policyFlowKey: 8 bytes a flow where the key is 100 (a collision
// would take a denied flow for delivered: at a million flows, one chance in
// 10^13 a denied flow).
type deliveredSet struct {
	seed maphash.Seed
	keys map[uint64]struct{}
}

func newDeliveredSet() *deliveredSet {
	return &deliveredSet{seed: maphash.MakeSeed(), keys: make(map[uint64]struct{})}
}

func (s *deliveredSet) key(k policyFlowKey) uint64 { return maphash.Comparable(s.seed, k) }
func (s *deliveredSet) add(h uint64)               { s.keys[h] = struct{}{} }

// enforced tells whether a denied flow's denial held: neither its
// connection's other direction nor (received) itself was delivered.
func (s *deliveredSet) enforced(f *Flow) bool {
	_, back := s.keys[s.key(reverseKey(f))]
	_, self := s.keys[s.key(flowKeyOf(f))]
	return !back && !(f.Direction == Receive && self)
}

// opened tells in which direction the flow's connection was opened, from
// the local pod's side, and the port the policy applies to (the server's):
// the TCP connection's role when the flow joined its socket, ICMP echo
// requests and replies, else the lower port is the server's.
func opened(f *Flow) (egress bool, port uint16, ok bool) {
	local, peer := f.Local().Port(), f.Served().Port()
	switch {
	case f.Protocol == ProtoTCP && f.Conn.Role == Client:
		return true, peer, true
	case f.Protocol == ProtoTCP && f.Conn.Role == Server:
		return false, local, true
	case f.IsICMP():
		// Ports hold the type (Src) and code (Dst).
		request := f.Src.Port() == 8 || f.Src.Port() == 128
		reply := f.Src.Port() == 0 || f.Src.Port() == 129
		if !request && !reply {
			return false, 0, false
		}
		return request == (f.Direction == Transmit), 0, true
	case f.HasPorts():
		if local < peer {
			return false, local, true
		}
		return true, peer, true
	}
	return false, 0, false
}

type policyFlowKey struct {
	local, peer netip.AddrPort
	protocol    uint8
	direction   Direction
	endpoint    netip.Addr
}

func flowKeyOf(f *Flow) policyFlowKey {
	k := policyFlowKey{local: f.Local(), peer: f.Peer(), protocol: f.Protocol, direction: f.Direction, endpoint: f.Endpoint}
	if f.IsICMP() { // type and code differ between the directions
		k.local, k.peer = netip.AddrPortFrom(k.local.Addr(), 0), netip.AddrPortFrom(k.peer.Addr(), 0)
	}
	return k
}

// reverseKey is the key of the flow of the other direction of f's
// connection, at the same pod.
func reverseKey(f *Flow) policyFlowKey {
	k := flowKeyOf(f)
	k.direction = 1 - k.direction
	return k
}
