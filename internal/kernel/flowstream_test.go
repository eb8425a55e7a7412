package kernel

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestDrainFlowsStreamsInParts: an interval of 10,000 flows (datagrams the
// test sends from a pod, each a flow of its own) is handed over in parts of
// at most 4,096, every flow once with its one packet. The pod's interface
// being new in the interval, its flows are learnt before the first part
// until the model knows the interface: all of them for a model that never
// does, and only the first part's in the next case. An interval without a
// new interface is not learnt first.
func TestDrainFlowsStreamsInParts(t *testing.T) {
	testnet.RequireRoot(t)
	n := testnet.NewNode(t, 46)
	pod := n.AddPod(t, 2)
	podLink, err := net.InterfaceByName(pod.Veth)
	require.NoError(t, err)
	bridge, err := net.InterfaceByName(n.Bridge)
	require.NoError(t, err)
	d, err := Load(Options{MaxFlows: 16384})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	_, err = d.SetMode(AttachAuto)
	require.NoError(t, err)
	require.NoError(t, d.Attach(podLink.Index, pod.Veth, RoleEndpoint, bridge.Index))
	peer := netip.MustParseAddr("10.99.0.1")

	interval := func(count int, base uint16, known bool) (learnt int, parts []int, seen map[uint16]uint64) {
		require.NoError(t, n.SendUDPFlows(pod, count, func(i int) (netip.Addr, uint16, uint16) { return peer, base + uint16(i), 9 }))
		time.Sleep(200 * time.Millisecond)
		require.NoError(t, d.StartDrain())
		seen = map[uint16]uint64{}
		learnt = -1 // not asked
		err := d.DrainFlows(func(*flow.Flow) bool { learnt = max(learnt, 0) + 1; return known }, func(part []flow.Flow) {
			parts = append(parts, len(part))
			for i := range part {
				if f := &part[i]; f.Dst.Addr() == peer {
					seen[f.Src.Port()] += f.Packets
				}
			}
		})
		require.NoError(t, err)
		return learnt, parts, seen
	}
	check := func(count int, base uint16, parts []int, seen map[uint16]uint64) {
		require.Len(t, seen, count, "every flow")
		for i := range count {
			require.Equal(t, uint64(1), seen[base+uint16(i)], "flow from port %d once, its one datagram", base+uint16(i))
		}
		for _, p := range parts {
			require.LessOrEqual(t, p, drainBatch)
		}
		require.GreaterOrEqual(t, len(parts), count/drainBatch+1, "in parts")
	}
	learnt, parts, seen := interval(10000, 20000, false)
	check(10000, 20000, parts, seen)
	require.GreaterOrEqual(t, learnt, 10000, "a new interface the model never knows: every flow learnt first")

	// A new interface again (the pod's veth attached anew), known from the
	// first flow learnt.
	require.NoError(t, d.Detach(podLink.Index))
	require.NoError(t, d.Attach(podLink.Index, pod.Veth, RoleEndpoint, bridge.Index))
	learnt, parts, seen = interval(10000, 30000, true)
	check(10000, 30000, parts, seen)
	require.Equal(t, 1, learnt, "known from its first flow: nothing more read")

	learnt, parts, seen = interval(5000, 40000, true)
	check(5000, 40000, parts, seen)
	require.Equal(t, -1, learnt, "no new interface: not learnt first")
}
