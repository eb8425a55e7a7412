//go:build bench

package bench

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/ebpfnet/ebpfnet/internal/convert"
	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver"
)

// forCalls calls fn with the batch's flows in parts of 1,024 (the default
// max_records_per_call).
func forCalls(b *flow.Batch, fn func(*flow.Batch)) {
	for from := 0; from < len(b.Flows); from += 1024 {
		fn(&flow.Batch{Time: b.Time, Flows: b.Flows[from:min(from+1024, len(b.Flows))]})
	}
}

// TestBenchFlowScale: N distinct active flows (UDP frames injected on a
// pod's interface with AF_PACKET, each a new (destination, ports) tuple)
// are drained from the kernel and converted to pdata (metrics at the
// default peer level, and one flow log record per flow).
func TestBenchFlowScale(t *testing.T) {
	testnet.RequireRoot(t)
	// RSS is a process's: measured in a process of its own (this test run
	// again), so that what the benchmarks before it left is not in it. The
	// child writes its section of the report.
	if os.Getenv("BENCH_FLOWSCALE_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBenchFlowScale$", "-test.count=1", "-test.v", "-test.timeout=30m")
		cmd.Env = append(os.Environ(), "BENCH_FLOWSCALE_CHILD=1")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		require.NoError(t, cmd.Run(), "flow scale benchmark in a child process")
		return
	}
	node := testnet.NewNode(t, 94)
	pod := node.AddPod(t, 2)
	podLink, err := net.InterfaceByName(pod.Veth)
	require.NoError(t, err)
	bridge, err := net.InterfaceByName(node.Bridge)
	require.NoError(t, err)

	var b strings.Builder
	b.WriteString("## Flow scale (drain and conversion of N active flows)\n\n")
	b.WriteString("Reproduce: `make bench` (or `go test -tags bench -run TestBenchFlowScale -v ./bench/`). N distinct UDP flows (one\n")
	b.WriteString("frame each, injected with AF_PACKET in a pod and counted by the endpoint program on its veth), then: Drain (flip\n")
	b.WriteString("tables, batch lookup-and-delete, the slots' counts added), model (endpoint resolution; the drain includes the decode into the model), metrics (peer-level\n")
	b.WriteString("cumulative sums, default attributes: N flows to 1,000 peers) and flow logs (one record per flow, only when a logs\n")
	b.WriteString("pipeline uses the receiver; converted as the receiver hands them over, 1,024 records a call, each call's pdata let\n")
	b.WriteString("go before the next). Times are this process's CPU (user+sys, including the garbage collector's) per flow,\n")
	b.WriteString("median of 3 after one unmeasured repetition (stage columns: medians only); GC cycles = the Go collector's cycles\n")
	b.WriteString("during one drain and conversion (median). pdata bytes are the OTLP protobuf sizes. RSS is the process (one of its\n")
	b.WriteString("own, started for this section) after the conversion of the last repetition (the batch and its metrics still alive;\n")
	b.WriteString("the interval's flows are one `[]flow.Flow`, 360 bytes a flow).\n")
	b.WriteString("`max_flows` is the default 131,072 up to 100k flows and 2,097,152 for 1M.\n\n")
	b.WriteString("| flows | drain | model | metrics | flow logs | kernel→pdata, metrics (drain+model+metrics) | kernel→pdata, metrics and flow logs | GC cycles | metrics bytes | logs bytes | RSS |\n|---|---|---|---|---|---|---|---|---|---|---|\n")

	for _, n := range []int{10000, 100000, 1000000} {
		maxFlows := uint32(131072)
		if n > 131072 {
			maxFlows = 1 << 21
		}
		d, err := kernel.Load(kernel.Options{MaxFlows: maxFlows})
		require.NoError(t, err)
		_, err = d.SetMode(kernel.AttachAuto)
		require.NoError(t, err)
		require.NoError(t, d.Attach(podLink.Index, pod.Veth, kernel.RoleEndpoint, bridge.Index))

		var drainCPU, modelCPU, metricsCPU, logsCPU, toMetrics, totalCPU []float64
		var mBytes, lBytes int
		var rss uint64
		var fbuf []flow.Flow
		var gcs []float64
		// One unmeasured repetition first: the receiver drains every
		// interval, and the first one's page faults of a growing heap are
		// not a per-interval cost.
		for rep := -1; rep < 3; rep++ {
			// Inject: flows to 1,000 peers outside the pod subnet (routed
			// through the bridge), distinct by ports.
			require.NoError(t, node.SendUDPFlows(pod, n, func(i int) (netip.Addr, uint16, uint16) {
				return netip.AddrFrom4([4]byte{10, 99, byte(i % 1000 / 250), byte(i%1000%250 + 1)}), uint16(1024 + i/1000), 9
			}))
			time.Sleep(200 * time.Millisecond)
			runtime.GC()
			// CPU of this process at each stage; the buffers are reused
			// across intervals as the receiver reuses them.
			var at [5]time.Duration
			mark := func(i int) { u, s := cpuTime(); at[i] = u + s }
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			gc0 := ms.NumGC
			mark(0)
			fbuf, err = d.Drain(fbuf[:0])
			require.NoError(t, err)
			mark(1)
			require.GreaterOrEqual(t, len(fbuf), n, "every injected flow drained")
			batch := flow.Batch{Time: time.Now(), TableCapacity: maxFlows, Flows: fbuf}
			flow.NewEndpoints().Resolve(&batch)
			mark(2)
			opts := convert.DefaultOptions()
			opts.Schema, err = ebpfnetreceiver.Schema()
			require.NoError(t, err)
			opts.NodeName = "bench"
			md := convert.NewConverter(opts, time.Now()).Metrics(&batch)
			mark(3)
			// Flow logs as the receiver hands them over: one call's worth
			// (max_records_per_call, 1,024) converted at a time, each let
			// go before the next.
			forCalls(&batch, func(part *flow.Batch) { runtime.KeepAlive(convert.Logs(opts, part)) })
			mark(4)
			rss = rssBytes()
			runtime.ReadMemStats(&ms)
			if rep < 0 {
				runtime.KeepAlive(batch)
				continue
			}
			gcs = append(gcs, float64(ms.NumGC-gc0))
			per := func(from, to int) float64 { return float64(at[to]-at[from]) / float64(len(fbuf)) }
			drainCPU = append(drainCPU, per(0, 1))
			modelCPU = append(modelCPU, per(1, 2))
			metricsCPU = append(metricsCPU, per(2, 3))
			logsCPU = append(logsCPU, per(3, 4))
			toMetrics = append(toMetrics, per(0, 3))
			totalCPU = append(totalCPU, per(0, 4))
			mBytes = (&pmetric.ProtoMarshaler{}).MetricsSize(md)
			lBytes = 0
			forCalls(&batch, func(part *flow.Batch) { lBytes += (&plog.ProtoMarshaler{}).LogsSize(convert.Logs(opts, part)) })
			runtime.KeepAlive(batch)
		}
		d.Close()
		dr, tm, tot := summarize(drainCPU), summarize(toMetrics), summarize(totalCPU)
		fmt.Fprintf(&b, "| %d | %s | %.0f ns | %.0f ns | %.0f ns | %s | %s | %.0f | %.1f MB | %.1f MB | %.0f MB |\n", n, dr.format("ns", 1, 0),
			summarize(modelCPU).med, summarize(metricsCPU).med, summarize(logsCPU).med, tm.format("ns", 1, 0), tot.format("ns", 1, 0),
			summarize(gcs).med, float64(mBytes)/1e6, float64(lBytes)/1e6, float64(rss)/(1<<20))
		t.Logf("%d flows: drain %.0f ns/flow, to metrics %.0f ns/flow, with logs %.0f ns/flow, metrics %d B, logs %d B, rss %d MiB",
			n, dr.med, tm.med, tot.med, mBytes, lBytes, rss>>20)
		fbuf, fbuf = nil, nil
		debug.FreeOSMemory()
	}
	addSection(b.String())
}
