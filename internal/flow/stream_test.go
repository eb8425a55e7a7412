package flow

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

// peerEvaluator denies connections with the peers in deny, allows the rest.
type peerEvaluator map[netip.Addr]bool

func (e peerEvaluator) Verdict(_, peer netip.Addr, _ uint16, _ uint8, _ bool) (PolicyResult, []string, bool) {
	if e[peer] {
		return PolicyDenied, []string{"ns/deny"}, true
	}
	return PolicyAllowed, []string{"ns/allow"}, true
}

// TestStreamInPartsJoinsAsTheWholeInterval: an interval's flows handed to a
// Stream in parts of 1, 2, 3 and all of them are completed alike, by the
// rules of a whole interval: what is learnt from a later part resolves an
// earlier one; a drop goes on its key's only flow wherever it is, and on
// none when the key's two flows are in different parts; a denial whose
// reply comes in a later part was not enforced; a denial whose packets all
// the drops no flow took account for was.
func TestStreamInPartsJoinsAsTheWholeInterval(t *testing.T) {
	ap := netip.AddrPortFrom
	a := netip.MustParseAddr
	pod, mdns := a("10.0.0.2"), a("224.0.0.251")
	other, deniedPeer, blockedPeer := a("10.0.1.3"), a("10.0.1.5"), a("10.0.1.6")
	mk := func(src, dst netip.AddrPort, proto uint8, dir Direction, pkts uint64) Flow {
		return Flow{Src: src, Dst: dst, Protocol: proto, Direction: dir, Ifindex: 5, Packets: pkts, Bytes: 100 * pkts}
	}
	interval := func() *Batch {
		return &Batch{
			Flows: []Flow{
				// 0: received multicast; the pod's own address only in a later flow.
				mk(ap(other, 5353), ap(mdns, 5353), ProtoUDP, Receive, 1),
				// 1, 2: denied: the request, and (later) its reply, delivered.
				mk(ap(pod, 40001), ap(deniedPeer, 80), ProtoTCP, Transmit, 2),
				// 3, 4: two flows of one drop key (local port 40000, peer other).
				mk(ap(pod, 40000), ap(other, 80), ProtoTCP, Transmit, 3),
				// 5: denied, received, the only flows of its key with 6; the drops account for all.
				mk(ap(blockedPeer, 50001), ap(pod, 8080), ProtoTCP, Receive, 2),
				mk(ap(deniedPeer, 80), ap(pod, 40001), ProtoTCP, Receive, 2),
				mk(ap(blockedPeer, 50002), ap(pod, 8080), ProtoTCP, Receive, 1),
				mk(ap(pod, 40000), ap(other, 81), ProtoTCP, Transmit, 1),
				// 7: the only flow of a drop's key, last.
				mk(ap(other, 33000), ap(pod, 9000), ProtoUDP, Receive, 4),
			},
			Drops: []Drop{
				{Kind: DropPacket, Local: ap(pod, 9000), Peer: other, Protocol: ProtoUDP, Direction: Receive, Ifindex: 5, Reason: "SOCKET_RCVBUFF", Packets: 1},
				{Kind: DropPacket, Local: ap(pod, 40000), Peer: other, Protocol: ProtoTCP, Direction: Transmit, Ifindex: 5, Reason: "NETFILTER_DROP", Packets: 2},
				{Kind: DropPacket, Local: ap(pod, 8080), Peer: blockedPeer, Protocol: ProtoTCP, Direction: Receive, Ifindex: 5, Reason: "NETFILTER_DROP", Packets: 3},
			},
		}
	}
	for _, per := range []int{1, 2, 3, 8} {
		b := interval()
		j := &Joiner{Endpoints: NewEndpoints(), Policy: peerEvaluator{deniedPeer: true, blockedPeer: true}}
		s := j.Begin(b)
		for i := range b.Flows {
			s.Learn(&b.Flows[i])
		}
		var out []Flow
		for from := 0; from < len(b.Flows); from += per {
			part := append([]Flow(nil), b.Flows[from:min(from+per, len(b.Flows))]...)
			out = append(out, s.Flows(part)...)
			clear(part) // the Stream keeps no reference into a part
		}
		out = append(out, s.End()...)
		require.Len(t, out, len(b.Flows), "parts of %d: every flow once", per)
		got := func(src, dst netip.AddrPort) *Flow {
			for i := range out {
				if out[i].Src == src && out[i].Dst == dst {
					return &out[i]
				}
			}
			t.Fatalf("parts of %d: no flow %v -> %v", per, src, dst)
			return nil
		}
		require.Equal(t, pod, got(ap(other, 5353), ap(mdns, 5353)).Endpoint, "parts of %d: learnt from the later flows", per)
		require.Equal(t, []SocketDrop{{Reason: "SOCKET_RCVBUFF", Packets: 1}}, got(ap(other, 33000), ap(pod, 9000)).Drops, "parts of %d", per)
		require.Empty(t, got(ap(pod, 40000), ap(other, 80)).Drops, "parts of %d: two flows of the key", per)
		require.Empty(t, got(ap(pod, 40000), ap(other, 81)).Drops, "parts of %d: two flows of the key", per)
		require.Equal(t, []bool{true, false, false}, []bool{b.Drops[0].OnFlow, b.Drops[1].OnFlow, b.Drops[2].OnFlow}, "parts of %d", per)
		for _, f := range []*Flow{got(ap(pod, 40001), ap(deniedPeer, 80)), got(ap(deniedPeer, 80), ap(pod, 40001))} {
			require.Equal(t, PolicyDenied, f.Policy.Result, "parts of %d", per)
			require.Equal(t, FindingDeniedDelivered, f.Policy.Finding, "parts of %d: its reply was delivered", per)
		}
		for _, f := range []*Flow{got(ap(blockedPeer, 50001), ap(pod, 8080)), got(ap(blockedPeer, 50002), ap(pod, 8080))} {
			require.Equal(t, PolicyDenied, f.Policy.Result, "parts of %d", per)
			require.Equal(t, FindingNone, f.Policy.Finding, "parts of %d: 3 packets dropped of 3: enforced", per)
		}
		require.Equal(t, FindingAllowedDropped, got(ap(other, 33000), ap(pod, 9000)).Policy.Finding, "parts of %d", per)
		require.Equal(t, FindingNone, got(ap(pod, 40000), ap(other, 80)).Policy.Finding, "parts of %d", per)
	}
}
