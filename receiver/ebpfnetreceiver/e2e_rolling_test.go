package ebpfnetreceiver

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestRollingUpdateCountsOverlapOnce: a second agent started while the
// first runs (a DaemonSet surge update) counts nothing until the first
// stops, then everything: under a steady packet stream, the two agents'
// flow records together equal the pod veth's kernel counter, less at most
// the packets of the handover itself (the first's detach to the second's
// attach), and none twice.
func TestRollingUpdateCountsOverlapOnce(t *testing.T) {
	testnet.RequireRoot(t)
	node := testnet.NewNode(t, 43)
	pod := node.AddPod(t, 2)
	testnet.WaitQuiet(t, pod.Veth)
	before := testnet.Stats(t, pod.Veth)

	cfg := testConfig(node.ID)
	cfg.Interval = time.Hour // each agent's records: its final drain
	old := startReceiver(t, cfg)

	// 10 frames every millisecond, until stopped: ~10,000 packets/s.
	var sent atomic.Int64
	began := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			require.NoError(t, node.SendUDPFlows(pod, 10, func(int) (netip.Addr, uint16, uint16) {
				return netip.MustParseAddr("10.99.0.1"), uint16(1024 + i%50), 9
			}))
			sent.Add(10)
		}
	}()
	time.Sleep(time.Second)
	next := startReceiver(t, cfg) // the surge: both run
	time.Sleep(time.Second)
	old.stop() // detaches, drains, hands over
	handedAt := sent.Load()
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	rate := float64(sent.Load()) / time.Since(began).Seconds()
	testnet.WaitQuiet(t, pod.Veth)
	next.stop()

	kernel := int64(testnet.Stats(t, pod.Veth).Sub(before).RxPackets)
	_, oldPackets := logBytesOn(old.logs.AllLogs(), pod.Veth, time.Time{})
	_, nextPackets := logBytesOn(next.logs.AllLogs(), pod.Veth, time.Time{})
	t.Logf("sent %d (%d before the handover), veth %d, old agent %d, new agent %d, handover gap %d packets",
		sent.Load(), handedAt, kernel, oldPackets, nextPackets, kernel-oldPackets-nextPackets)
	require.Greater(t, oldPackets, int64(0))
	require.Greater(t, nextPackets, int64(0), "the new agent counts once the old one stopped")
	require.LessOrEqual(t, oldPackets+nextPackets, kernel, "no packet counted by both")
	gap := float64(kernel-oldPackets-nextPackets) / rate
	t.Logf("handover gap: %.0f ms of the stream (%.0f packets/s)", 1000*gap, rate)
	require.Less(t, gap, 0.2, "the handover (the old agent's detach to the new one's attach) takes under 200 ms")
}
