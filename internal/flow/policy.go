package flow

import "net/netip"

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

// AnnotatePolicies sets the verdict of every pod flow the evaluator can
// judge, and its finding against the flows and drops of the batch. Call
// after AttachDrops.
func AnnotatePolicies(b *Batch, ev PolicyEvaluator) {
	if ev == nil {
		return
	}
	var denied []int
	for i := range b.Flows {
		f := &b.Flows[i]
		if f.OnNode || !f.Endpoint.IsValid() {
			continue
		}
		egress, port, ok := opened(f)
		if !ok {
			continue
		}
		// The peer that served (a Service's backend the node's NAT chose).
		res, names, ok := ev.Verdict(f.Endpoint, f.Served().Addr(), port, f.Protocol, egress)
		if !ok {
			continue
		}
		f.Policy = PolicyVerdict{Result: res, Egress: egress, Policies: names}
		switch {
		case res == PolicyDenied:
			denied = append(denied, i)
		case res == PolicyAllowed && len(f.Drops) > 0:
			f.Policy.Finding = FindingAllowedDropped
		}
	}
	if len(denied) == 0 {
		return // what was delivered matters only to a denial
	}
	delivered := deliveredFlows(b)
	for _, i := range denied {
		if f := &b.Flows[i]; delivered[reverseKey(f)] || (f.Direction == Receive && delivered[flowKeyOf(f)]) {
			f.Policy.Finding = FindingDeniedDelivered
		}
	}
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

// deliveredFlows are the flows of the batch that reached their pod or came
// back from the peer: received, with packets the kernel did not drop. The
// drops of a local endpoint and peer that no single flow took count against
// all of its flows: when they are as many as those flows' packets, none was
// delivered (an enforced denial of new connections from one peer).
func deliveredFlows(b *Batch) map[policyFlowKey]bool {
	var flowPkts, dropPkts map[dropFlowKey]uint64
	for i := range b.Drops {
		if d := &b.Drops[i]; d.Kind == DropPacket && !d.OnFlow && d.Direction == Receive {
			if dropPkts == nil {
				dropPkts, flowPkts = map[dropFlowKey]uint64{}, map[dropFlowKey]uint64{}
			}
			dropPkts[dropKeyOf(d)] += d.Packets
		}
	}
	if dropPkts != nil {
		for i := range b.Flows {
			flowPkts[flowDropKey(&b.Flows[i])] += b.Flows[i].Packets
		}
	}
	out := make(map[policyFlowKey]bool)
	for i := range b.Flows {
		f := &b.Flows[i]
		if f.OnNode || f.Direction != Receive {
			continue
		}
		var dropped uint64
		for _, d := range f.Drops {
			dropped += d.Packets
		}
		if k := flowDropKey(f); dropPkts[k] > 0 && dropPkts[k] >= flowPkts[k] {
			continue
		}
		if f.Packets > dropped {
			out[flowKeyOf(f)] = true
		}
	}
	return out
}
