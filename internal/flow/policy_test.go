package flow

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

// askedEvaluator answers every question with its verdict and records them.
type askedEvaluator struct {
	result PolicyResult
	asked  []string
}

func (e *askedEvaluator) Verdict(local, peer netip.Addr, port uint16, protocol uint8, egress bool) (PolicyResult, []string, bool) {
	dir := "ingress"
	if egress {
		dir = "egress"
	}
	e.asked = append(e.asked, dir+" "+local.String()+" "+peer.String()+":"+itoa(port))
	return e.result, []string{"ns/p"}, true
}

func itoa(p uint16) string { return netip.AddrPortFrom(netip.IPv4Unspecified(), p).String()[8:] }

// TestPolicyVerdictsDirectionAndFindings: a flow is judged in the
// direction its connection was opened (the socket's role, else the lower
// port is the server's; ICMP by echo request/reply), against the backend
// that served it; denied with a delivered direction is denied_but_delivered,
// allowed with drops allowed_but_dropped.
func TestPolicyVerdictsDirectionAndFindings(t *testing.T) {
	pod, peer, backend := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.1.3"), netip.MustParseAddr("10.0.2.4")
	ap := netip.AddrPortFrom
	flows := []Flow{
		// A client connection (role from its socket): both directions egress to :80.
		{Src: ap(pod, 40000), Dst: ap(peer, 80), Protocol: ProtoTCP, Direction: Transmit, Packets: 3, Conn: ConnRef{Role: Client}},
		{Src: ap(peer, 80), Dst: ap(pod, 40000), Protocol: ProtoTCP, Direction: Receive, Packets: 3, Conn: ConnRef{Role: Client}},
		// UDP to a Service the node's NAT sent to a backend: egress to the backend's port.
		{Src: ap(pod, 5353), Dst: ap(peer, 53), Protocol: ProtoUDP, Direction: Transmit, Packets: 1, Backend: ap(backend, 1053)},
		// UDP received on a low port from a high one: ingress on the local port.
		{Src: ap(peer, 33000), Dst: ap(pod, 9000), Protocol: ProtoUDP, Direction: Receive, Packets: 2},
		// An echo request received: ingress.
		{Src: ap(peer, 8), Dst: ap(pod, 0), Protocol: ProtoICMP, Direction: Receive, Packets: 1},
	}
	for i := range flows {
		flows[i].Endpoint = pod
	}
	ev := &askedEvaluator{result: PolicyDenied}
	j := &Joiner{Endpoints: NewEndpoints(), Policy: ev}
	b := &Batch{Flows: flows}
	j.Join(b) // every flow is denied: held to the end, in order
	require.Equal(t, []string{
		"egress 10.0.0.2 10.0.1.3:80", "egress 10.0.0.2 10.0.1.3:80", "egress 10.0.0.2 10.0.2.4:1053",
		"ingress 10.0.0.2 10.0.1.3:9000", "ingress 10.0.0.2 10.0.1.3:0",
	}, ev.asked)
	// The TCP connection's replies arrived: both its flows were delivered
	// although denied; the UDP send has no reply: no finding.
	require.Equal(t, FindingDeniedDelivered, b.Flows[0].Policy.Finding)
	require.Equal(t, FindingDeniedDelivered, b.Flows[1].Policy.Finding)
	require.Equal(t, FindingNone, b.Flows[2].Policy.Finding)
	require.Equal(t, FindingDeniedDelivered, b.Flows[3].Policy.Finding, "received by the pod")
	require.True(t, b.Flows[0].Policy.Egress)
	require.False(t, b.Flows[3].Policy.Egress)

	// All of a received flow dropped: not delivered.
	b = &Batch{Flows: []Flow{{Src: ap(peer, 33000), Dst: ap(pod, 9000), Protocol: ProtoUDP, Direction: Receive, Packets: 2,
		Endpoint: pod, Drops: []SocketDrop{{Reason: "NETFILTER_DROP", Packets: 2}}}}}
	j.Join(b)
	require.Equal(t, FindingNone, b.Flows[0].Policy.Finding)

	ev.result = PolicyAllowed
	j.Join(b)
	require.Equal(t, FindingAllowedDropped, b.Flows[0].Policy.Finding)
	require.Equal(t, []string{"ns/p"}, b.Flows[0].Policy.Policies)
}
