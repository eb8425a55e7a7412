//go:build bench

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// slope is the least-squares slope of ys over xs.
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}

// mixedTraffic runs, for secs, from p1 to p2: a TCP stream at 200 Mbit/s, a
// UDP stream at 20 Mbit/s and 500 new connections per second, all in other
// processes.
func mixedTraffic(t *testing.T, p1, p2 *testnet.Pod, secs int) {
	// The load, in other processes.
	run := func(ns *testnet.Netns, args ...string) *exec.Cmd {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	run(p2.NS, "iperf3", "-s", "-p", "7400")
	run(p2.NS, "iperf3", "-s", "-p", "7401")
	time.Sleep(500 * time.Millisecond)
	run(p1.NS, "iperf3", "-c", p2.IPv4.String(), "-p", "7400", "-t", strconv.Itoa(secs), "-b", "200M")
	run(p1.NS, "iperf3", "-c", p2.IPv4.String(), "-p", "7401", "-t", strconv.Itoa(secs), "-u", "-b", "20M", "-l", "512")
	churn := exec.Command("ip", "netns", "exec", p1.NS.Name, os.Args[0], "-test.run=^TestHelperChurn$", "-test.count=1")
	churn.Env = append(os.Environ(), "CHURN_RATE=500", "CHURN_SECONDS="+strconv.Itoa(secs),
		"CHURN_SERVER="+p2.IPv4.String()+":7402", "CHURN_SERVER_NS="+p2.NS.Name)
	require.NoError(t, churn.Start())
	t.Cleanup(func() { _ = churn.Process.Kill(); _ = churn.Wait() })

}

// TestBenchSteadyState: the receiver (all signals, default settings) under
// 10 minutes of mixed traffic — a rate-limited TCP stream, a UDP stream and
// 500 new connections per second, all in other processes — with RSS, Go
// heap and CPU sampled every 10 s: they must stay flat.
func TestBenchSteadyState(t *testing.T) {
	testnet.RequireRoot(t)
	secs := 600
	if v, err := strconv.Atoi(os.Getenv("BENCH_STEADY_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	node := testnet.NewNode(t, 96)
	p1 := node.AddPod(t, 2)
	p2 := node.AddPod(t, 3)
	busyClient(t, p1.NS)
	_, stop := startReceiver(t, node, consumertest.NewNop(), consumertest.NewNop(), consumertest.NewNop())
	defer stop()

	mixedTraffic(t, p1, p2, secs+30)
	time.Sleep(30 * time.Second) // warm up: the first intervals fill the series state
	type sample struct {
		at                   time.Duration
		rss, held, heap, cpu float64 // MiB, MiB, MiB, % of one core over the last period
	}
	var samples []sample
	start := time.Now()
	u0, s0 := cpuTime()
	last := start
	for time.Since(start) < time.Duration(secs)*time.Second {
		time.Sleep(10 * time.Second)
		u1, s1 := cpuTime()
		now := time.Now()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		samples = append(samples, sample{at: now.Sub(start), rss: float64(rssBytes()) / (1 << 20),
			held: float64(ms.Sys-ms.HeapReleased) / (1 << 20), heap: float64(ms.HeapAlloc) / (1 << 20),
			cpu: 100 * ((u1 - u0) + (s1 - s0)).Seconds() / now.Sub(last).Seconds()})
		u0, s0, last = u1, s1, now
	}
	xs := make([]float64, len(samples))
	rss, held, rest, heap, cpu := make([]float64, len(samples)), make([]float64, len(samples)), make([]float64, len(samples)), make([]float64, len(samples)), make([]float64, len(samples))
	for i, s := range samples {
		xs[i], rss[i], held[i], rest[i], heap[i], cpu[i] = s.at.Minutes(), s.rss, s.held, s.rss-s.held, s.heap, s.cpu
	}
	t.Logf("samples (minute: RSS, runtime held, heap MiB, CPU %%): %v", samples)
	var b strings.Builder
	b.WriteString("## Steady state (10 minutes of mixed traffic)\n\n")
	fmt.Fprintf(&b, "Reproduce: `make bench` (or `BENCH_STEADY_SECONDS=600 go test -count=1 -timeout 30m -tags bench -run TestBenchSteadyState -v ./bench/`). For %d s after a\n", secs)
	b.WriteString("30 s warm-up, between two pods: a TCP stream at 200 Mbit/s, a UDP stream at 20 Mbit/s (512-byte datagrams) and\n")
	b.WriteString("500 new TCP connections per second, all in other processes; the receiver (metrics, logs, traces; default settings)\n")
	b.WriteString("runs in this one. Sampled every 10 s: RSS, the memory the Go runtime holds from the OS (its mappings less\n")
	b.WriteString("what it has returned: MemStats Sys - HeapReleased), the rest of RSS (the binary, the BPF maps' and ring's\n")
	b.WriteString("mappings, C allocations), Go heap in use, and CPU (user+sys) over the last 10 s. Trend = least-squares slope\n")
	b.WriteString("over the run. RSS moves with what the Go runtime holds, which its scavenger returns to the OS in the background.\n\n")
	b.WriteString("| | first sample | last sample | median | min–max | trend per 10 min |\n|---|---|---|---|---|---|\n")
	for _, m := range []struct {
		name, unit string
		ys         []float64
	}{{"RSS", "MiB", rss}, {"Go runtime, held", "MiB", held}, {"RSS less the runtime's", "MiB", rest}, {"Go heap", "MiB", heap}, {"CPU", "% of a core", cpu}} {
		st := summarize(m.ys)
		fmt.Fprintf(&b, "| %s (%s) | %.1f | %.1f | %.1f | %.1f–%.1f | %+.1f |\n", m.name, m.unit, m.ys[0], m.ys[len(m.ys)-1],
			st.med, st.min, st.max, 10*slope(xs, m.ys))
		t.Logf("%s: first %.1f last %.1f median %.1f trend %+.2f %s per 10 min", m.name, m.ys[0], m.ys[len(m.ys)-1], st.med, 10*slope(xs, m.ys), m.unit)
	}
	addSection(b.String())
}
