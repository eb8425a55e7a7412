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
// at most 4,096, every flow once with its one packet, and, the pod's
// interface being new in the interval, learnt whole before the first part.
// The next interval (no new interface) is not learnt first.
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

	interval := func(count int, base uint16) (learnt int, parts []int, seen map[uint16]uint64) {
		require.NoError(t, n.SendUDPFlows(pod, count, func(i int) (netip.Addr, uint16, uint16) { return peer, base + uint16(i), 9 }))
		time.Sleep(200 * time.Millisecond)
		require.NoError(t, d.StartDrain())
		seen = map[uint16]uint64{}
		learnt = -1 // not asked
		err := d.DrainFlows(func(*flow.Flow) { learnt = max(learnt, 0) + 1 }, func(part []flow.Flow) {
			if len(parts) == 0 {
				require.True(t, learnt == -1 || learnt >= count, "learnt %d of %d before the first part", learnt, count)
			}
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
	learnt, parts, seen := interval(10000, 20000)
	check(10000, 20000, parts, seen)
	require.GreaterOrEqual(t, learnt, 10000, "a new interface: learnt whole first")

	learnt, parts, seen = interval(5000, 40000)
	check(5000, 40000, parts, seen)
	require.Equal(t, -1, learnt, "no new interface: not learnt first")
}
