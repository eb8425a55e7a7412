package kernel

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"
)

func TestJiffyClockConverts(t *testing.T) {
	const hz250 = 4 * time.Millisecond
	var c jiffyClock
	// Jiffies start at INITIAL_JIFFIES, five minutes before their 32-bit
	// wrap: pairs and flow times on both sides of it.
	start := uint64(1<<32 - 300*250)
	c.observe(clockPair{jiffies: start, ns: 7e9})
	require.Equal(t, uint64(7e9), c.ns(uint32(start)))

	// 400 s later (100,000 ticks at HZ=250): past the wrap of the low bits.
	c.observe(clockPair{jiffies: start + 100_000, ns: 7e9 + 400e9})
	require.Equal(t, uint64(hz250), c.tickNs)
	require.Equal(t, uint64(7e9+400e9), c.ns(uint32(start+100_000)))
	require.Equal(t, uint64(7e9+400e9-2*hz250), c.ns(uint32(start+99_998)))
	// 80,000 ticks after the start, before the wrap of the low 32 bits.
	require.Equal(t, uint64(7e9+80_000*hz250), c.ns(uint32(start+80_000)))

	// Merge over CPUs: earliest first, latest last (across the wrap), sums.
	m := c.merge([]rawCounts{
		{Bytes: 100, Packets: 1, FirstSeen: uint32(start + 80_000), LastSeen: uint32(start + 99_990), TcpFlags: 0x02},
		{}, // a CPU that saw none of the flow
		{Bytes: 50, Packets: 2, FirstSeen: uint32(start + 70_000), LastSeen: uint32(start + 80_001), TcpFlags: 0x10},
	})
	require.Equal(t, FlowCounts{Bytes: 150, Packets: 3, FirstSeenNs: uint64(7e9 + 70_000*hz250),
		LastSeenNs: uint64(7e9 + 99_990*hz250), TcpFlags: 0x12}, m)
}

func TestJiffyClockTickLength(t *testing.T) {
	for _, tc := range []struct {
		name   string
		dj, dt uint64 // ticks and ns between the first pair and the last
		want   uint64
	}{
		{"HZ=1000", 1000, 1e9, 1_000_000},
		{"HZ=300", 300, 1e9, 3_333_333},
		{"HZ=100, one tick off over ten", 10, 110e6, 10_000_000},
		{"HZ=250, one tick apart", 1, 4e6, 4_000_000},
		{"non-standard HZ=200, long enough", 200, 1e9, 5_000_000},
		{"non-standard, too short to tell", 20, 100e6, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c jiffyClock
			c.observe(clockPair{jiffies: 5000, ns: 1e9})
			c.observe(clockPair{jiffies: 5000 + tc.dj, ns: 1e9 + tc.dt})
			require.Equal(t, tc.want, c.tickNs)
		})
	}
}

// Flow times come back as CLOCK_MONOTONIC, at the resolution of one tick.
func TestFlowTimesAreMonotonic(t *testing.T) {
	d := loadForTest(t, 64)
	const tick = 10 * time.Millisecond                              // the coarsest tick Kconfig offers
	pkt := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00, // Ethernet, IPv4
		0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4, UDP
		0x30, 0x39, 0, 53, 0, 8, 0, 0}
	send := func() uint64 {
		at := MonotonicNow()
		_, err := d.objs.EndpointIngress.Run(&ebpf.RunOptions{Data: pkt})
		require.NoError(t, err)
		return at
	}
	// A drain in between: its clock pair is not the one of the final drain.
	first := send()
	time.Sleep(150 * time.Millisecond)
	_, err := d.drainEntries(nil)
	require.NoError(t, err)
	first = send()
	time.Sleep(300 * time.Millisecond)
	last := send()
	time.Sleep(100 * time.Millisecond)
	flows, err := d.drainEntries(nil)
	require.NoError(t, err)
	require.Len(t, flows, 1)
	c := flows[0].Counts
	require.Equal(t, uint64(2), c.Packets)
	// The tick's time is at most one tick before the packet's.
	require.InDelta(t, float64(first), float64(c.FirstSeenNs), float64(tick), "first seen vs CLOCK_MONOTONIC at send")
	require.InDelta(t, float64(last), float64(c.LastSeenNs), float64(tick), "last seen vs CLOCK_MONOTONIC at send")
	require.InDelta(t, float64(last-first), float64(c.LastSeenNs-c.FirstSeenNs), float64(tick))
}

// since never wraps: a machine booted seconds ago has small readings, and a
// stamp written after the reading (another CPU) is not old.
func TestSinceGuardsSmallReadings(t *testing.T) {
	require.Equal(t, time.Duration(0), since(uint64(3*time.Second), uint64(4*time.Second)))
	require.Equal(t, time.Second, since(uint64(3*time.Second), uint64(2*time.Second)))
	require.Equal(t, time.Duration(0), since(0, 0))
}
