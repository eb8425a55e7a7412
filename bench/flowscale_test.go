//go:build bench

package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver"
)

// TestBenchFlowScale: N distinct active flows (UDP frames injected on a
// pod's interface with AF_PACKET, each a new (destination, ports) tuple)
// collected by the receiver itself: its final collection at Shutdown
// drains, joins and converts them as every interval does, once with a
// metrics pipeline only and once with metrics and logs (a flow log record
// per flow), interleaved.
func TestBenchFlowScale(t *testing.T) {
	testnet.RequireRoot(t)
	// RSS is a process's: measured in a process of its own (this test run
	// again), so that what the benchmarks before it left is not in it. The
	// child writes its section of the report.
	if os.Getenv("BENCH_FLOWSCALE_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBenchFlowScale$", "-test.count=1", "-test.v", "-test.timeout=60m")
		cmd.Env = append(os.Environ(), "BENCH_FLOWSCALE_CHILD=1")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		require.NoError(t, cmd.Run(), "flow scale benchmark in a child process")
		return
	}
	node := testnet.NewNode(t, 94)
	pod := node.AddPod(t, 2)

	var b strings.Builder
	b.WriteString("## Flow scale (drain and conversion of N active flows)\n\n")
	b.WriteString("Reproduce: `make bench` (or `go test -count=1 -tags bench -run TestBenchFlowScale -v ./bench/`). N distinct UDP flows (one\n")
	b.WriteString("frame each, injected with AF_PACKET in a pod and counted by the endpoint program on its veth) to 1,000 peers,\n")
	b.WriteString("collected by the receiver itself: the final collection of its Shutdown, which drains the table a part (4,096\n")
	b.WriteString("flows) at a time and joins, records in the metrics and hands over as flow log records each part before the next\n")
	b.WriteString("(1,024 records a call, the default `max_records_per_call`), as every interval does (it is the receiver's first\n")
	b.WriteString("interval: the new pod's address is learnt from the first part, and the table is read once). Once with a metrics pipeline\n")
	b.WriteString("only and once with metrics and logs, interleaved, 3 times each after one unmeasured run of each. Times are this\n")
	b.WriteString("process's CPU (user+sys, including the garbage collector's) over the collection, per flow, median (min–max); flow\n")
	b.WriteString("logs = with logs − metrics only (medians). GC cycles: during one collection with logs (median). Peak RSS: the\n")
	b.WriteString("process's high-water mark during a collection with logs (reset before it: /proc/self/clear_refs 5; the receiver\n")
	b.WriteString("and its datapath loaded, with the test binary and its BTF), median.\n")
	b.WriteString("`max_flows` is the default 131,072 up to 100k flows and 2,097,152 for 1M.\n\n")
	b.WriteString("| flows | kernel→pdata, metrics only | kernel→pdata, metrics and flow logs | flow logs | records | GC cycles | peak RSS |\n|---|---|---|---|---|---|---|\n")

	var rss100k, rss1M float64
	sizes := []int{10000, 100000, 1000000}
	if v := os.Getenv("BENCH_FLOWSCALE_SIZES"); v != "" { // e.g. 100000: one size, to profile
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			require.NoError(t, err, "BENCH_FLOWSCALE_SIZES")
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		maxFlows := uint32(131072)
		if n > 131072 {
			maxFlows = 1 << 21
		}
		var metricsCPU, logsCPU, gcs, peaks []float64
		var records int64
		for rep := -1; rep < 3; rep++ {
			for _, logs := range []bool{false, true} {
				r := collectFlows(t, node, pod, n, maxFlows, logs)
				if rep < 0 {
					continue
				}
				if !logs {
					metricsCPU = append(metricsCPU, r.cpuPerFlow)
					continue
				}
				logsCPU = append(logsCPU, r.cpuPerFlow)
				gcs = append(gcs, r.gcs)
				peaks = append(peaks, r.peakRSS)
				records = r.records
			}
		}
		m, l := summarize(metricsCPU), summarize(logsCPU)
		peak := summarize(peaks).med / (1 << 20)
		switch n {
		case 100000:
			rss100k = peak
		case 1000000:
			rss1M = peak
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %.0f ns | %d | %.0f | %.0f MiB |\n", n, m.format("ns", 1, 0), l.format("ns", 1, 0),
			l.med-m.med, records, summarize(gcs).med, peak)
		t.Logf("%d flows: metrics %.0f ns/flow, with logs %.0f ns/flow, %d records, peak RSS %.0f MiB", n, m.med, l.med, records, peak)
		debug.FreeOSMemory()
	}
	fmt.Fprintf(&b, "\nPeak RSS at 1M flows is %.2f× that at 100k.\n", rss1M/rss100k)
	addSection(b.String())
}

// flowScaleRun is one collection of TestBenchFlowScale.
type flowScaleRun struct {
	cpuPerFlow float64 // ns
	gcs        float64
	peakRSS    float64 // bytes
	records    int64
}

// collectFlows starts a receiver on the pod's interface (metrics and
// traces, and logs when logs), injects n flows and measures its final
// collection, the first Shutdown (the metrics'; the last one closes the
// datapath, which is not measured).
func collectFlows(t *testing.T, node *testnet.Node, pod *testnet.Pod, n int, maxFlows uint32, logs bool) flowScaleRun {
	f := ebpfnetreceiver.NewFactory()
	cfg := f.CreateDefaultConfig().(*ebpfnetreceiver.Config)
	cfg.Interfaces.Include = "^" + pod.Veth + "$"
	cfg.Interfaces.Exclude = ""
	cfg.Interval = time.Hour // only the Shutdown collects
	cfg.MaxFlows = int64(maxFlows)
	var points, records atomic.Int64
	mc, err := consumer.NewMetrics(func(_ context.Context, md pmetric.Metrics) error {
		points.Add(int64(md.DataPointCount()))
		return nil
	})
	require.NoError(t, err)
	lc, err := consumer.NewLogs(func(_ context.Context, ld plog.Logs) error {
		records.Add(int64(ld.LogRecordCount()))
		return nil
	})
	require.NoError(t, err)
	set := receivertest.NewNopSettings(f.Type())
	ctx := context.Background()
	mr, err := f.CreateMetrics(ctx, set, cfg, mc)
	require.NoError(t, err)
	tr, err := f.CreateTraces(ctx, set, cfg, consumertest.NewNop())
	require.NoError(t, err)
	comps := []component.Component{mr, tr}
	if logs {
		lr, err := f.CreateLogs(ctx, set, cfg, lc)
		require.NoError(t, err)
		comps = append(comps, lr)
	}
	for _, c := range comps {
		require.NoError(t, c.Start(ctx, componenttest.NewNopHost()))
	}
	// Flows to 1,000 peers outside the pod subnet (routed through the
	// bridge), distinct by ports.
	require.NoError(t, node.SendUDPFlows(pod, n, func(i int) (netip.Addr, uint16, uint16) {
		return netip.AddrFrom4([4]byte{10, 99, byte(i % 1000 / 250), byte(i%1000%250 + 1)}), uint16(1024 + i/1000), 9
	}))
	time.Sleep(200 * time.Millisecond)
	runtime.GC()
	debug.FreeOSMemory()
	require.NoError(t, os.WriteFile("/proc/self/clear_refs", []byte("5"), 0), "reset the RSS high-water mark")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gc0 := ms.NumGC
	// BENCH_CPUPROFILE: a CPU profile of the collections, a file per size
	// and pipeline (the last repetition's).
	if path := os.Getenv("BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(fmt.Sprintf("%s.%d.logs-%t", path, n, logs))
		require.NoError(t, err)
		require.NoError(t, pprof.StartCPUProfile(f))
		defer f.Close()
	}
	u0, s0 := cpuTime()
	require.NoError(t, comps[0].Shutdown(ctx))
	u1, s1 := cpuTime()
	pprof.StopCPUProfile()
	runtime.ReadMemStats(&ms)
	r := flowScaleRun{cpuPerFlow: float64((u1+s1)-(u0+s0)) / float64(n), gcs: float64(ms.NumGC - gc0), peakRSS: float64(statusKB("VmHWM:")) * 1024,
		records: records.Load()}
	for _, c := range comps[1:] {
		require.NoError(t, c.Shutdown(ctx))
	}
	require.NotZero(t, points.Load(), "metrics emitted")
	if logs {
		require.GreaterOrEqual(t, r.records, int64(n), "a record for every injected flow")
	}
	return r
}
