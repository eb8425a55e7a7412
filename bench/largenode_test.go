//go:build bench

package bench

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// perCPUReadTime is the time of one interval's reads of r on a node of
// ncpu CPUs, emulated on this machine: a per-CPU array whose values are
// ncpu/possible times larger copies what a lookup of r copies there.
// Every entry is read and written back (all slots used: the worst case).
func perCPUReadTime(t *testing.T, r kernel.PerCPURead, ncpu, possible int) time.Duration {
	size := (r.ValueSize*ncpu/possible + 7) &^ 7
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: uint32(size), MaxEntries: uint32(r.Lookups)})
	require.NoError(t, err)
	defer m.Close()
	vals := make([][]byte, possible)
	for i := range vals {
		vals[i] = make([]byte, size)
	}
	var best time.Duration
	for rep := 0; rep < 50; rep++ {
		start := time.Now()
		for i := 0; i < r.Lookups; i++ {
			require.NoError(t, m.Lookup(uint32(i), &vals))
			require.NoError(t, m.Put(uint32(i), vals))
		}
		if d := time.Since(start); rep == 0 || d < best {
			best = d
		}
	}
	return best
}

// TestBenchLargeNode: what grows with the CPU count. Each interval reads
// every per-CPU map's slots once per possible CPU (kernel.PerCPUReads); the
// section measures those reads here and emulates them at 64 and 128 CPUs
// (per-CPU arrays whose values hold what 64 or 128 CPUs' values hold), and
// measures one whole empty interval (Drain with its RCU barrier, Drops,
// Counters) on this machine.
func TestBenchLargeNode(t *testing.T) {
	testnet.RequireRoot(t)
	d, err := kernel.Load(kernel.Options{MaxFlows: 131072, MaxDrops: kernel.DefaultMaxDrops})
	require.NoError(t, err)
	defer d.Close()
	possible, err := ebpf.PossibleCPU()
	require.NoError(t, err)
	var interval []float64
	buf := make([]flow.Flow, 0, 16)
	for range 20 {
		start := time.Now()
		buf, err = d.Drain(buf[:0])
		require.NoError(t, err)
		d.Drops(nil)
		_, err = d.Counters()
		require.NoError(t, err)
		interval = append(interval, float64(time.Since(start).Microseconds()))
	}
	mem, err := d.Memory()
	require.NoError(t, err)

	var b strings.Builder
	b.WriteString("## Large nodes: what grows with the CPU count\n\n")
	b.WriteString("Reproduce: `make bench` (or `go test -count=1 -tags bench -run TestBenchLargeNode -v ./bench/`). The flow and drop tables\n")
	b.WriteString("are shared by the CPUs (their size does not grow with them); what does are the per-CPU arrays: each program's\n")
	b.WriteString("slots (`flow_cache`, `drop_cache`), the loss counters, the uplink's FIB cache and the DNS scratch buffer. An\n")
	b.WriteString("interval reads the first three once, every possible CPU's value in each read, and writes the used slots back;\n")
	b.WriteString("the FIB cache is never read (a generation number invalidates it). Measured here (" + fmt.Sprint(possible) + " possible CPUs) and\n")
	b.WriteString("emulated for 64 and 128: per-CPU arrays of this machine whose values are as large as 64 or 128 CPUs' values\n")
	b.WriteString("together, read and written back entry by entry (every slot used: the worst case), best of 50.\n\n")
	b.WriteString("| map | entries read an interval | bytes a CPU | " + fmt.Sprint(possible) + " CPUs (measured) | 64 CPUs (emulated) | 128 CPUs (emulated) |\n|---|---|---|---|---|---|\n")
	var totals [3]time.Duration
	for _, r := range d.PerCPUReads() {
		var cells [3]time.Duration
		for i, n := range []int{possible, 64, 128} {
			cells[i] = perCPUReadTime(t, r, n, possible)
			totals[i] += cells[i]
		}
		fmt.Fprintf(&b, "| `%s` | %d | %d | %s | %s | %s |\n", r.Name, r.Lookups, r.ValueSize, us(cells[0]), us(cells[1]), us(cells[2]))
	}
	fmt.Fprintf(&b, "| **all** | | | %s | %s | %s |\n\n", us(totals[0]), us(totals[1]), us(totals[2]))
	s := summarize(interval)
	fmt.Fprintf(&b, "One whole empty interval here (Drain with its RCU barrier, Drops, Counters; 20 intervals): %.0f µs (%.0f–%.0f).\n", s.med, s.min, s.max)
	fmt.Fprintf(&b, "Kernel memory of the per-CPU arrays here: %s; each is linear in the CPUs (×%d at 128 CPUs). GOMAXPROCS %d.\n",
		perCPUBytes(mem), 128/possible, runtime.GOMAXPROCS(0))
	addSection(b.String())
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d.Nanoseconds())/1e3) }

// perCPUBytes lists the per-CPU arrays' kernel memory.
func perCPUBytes(m kernel.Memory) string {
	var parts []string
	for _, name := range []string{"flow_cache", "drop_cache", "counters", "fib_cache", "dns_scratch"} {
		if b := m.Bytes(name); b > 0 {
			parts = append(parts, fmt.Sprintf("`%s` %.1f KiB", name, float64(b)/1024))
		}
	}
	return strings.Join(parts, ", ")
}
