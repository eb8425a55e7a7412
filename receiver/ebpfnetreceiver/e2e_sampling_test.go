package ebpfnetreceiver

import (
	"math"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/sampling"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestEndToEndSampling: spans and flow logs sampled at 1/4, 600 real
// connections pod to pod and 10 refused ones. 25% ± 3σ of the connections
// have spans, each kept client span with its server span; every span
// carries the threshold the specification gives for 1/4 (th:c, read by
// contrib's pkg/sampling: adjusted count 4), the refused ones, kept by the
// keep-always rule, th:0. The connection metrics count all 610; flow log
// records keep both directions of a flow or neither, with
// sampling.threshold c.
func TestEndToEndSampling(t *testing.T) {
	node := testnet.NewNode(t, 45)
	p1, p2 := node.AddPod(t, 2), node.AddPod(t, 3)
	cfg := testConfig(node.ID)
	cfg.Interval = 200 * time.Millisecond
	cfg.Sampling.Spans.Ratio, cfg.Sampling.FlowLogs.Ratio = 0.25, 0.25
	s := startSignals(t, cfg, true, true, true)

	ln, err := testnet.ListenTCP(p2.NS, netip.AddrPortFrom(p2.IPv4, 8080))
	require.NoError(t, err)
	const n, refused = 600, 10
	for i := 0; i < n; i++ {
		_, err := testnet.Dial(p1.NS, netip.AddrPortFrom(p2.IPv4, 8080), 100, 5*time.Second)
		require.NoError(t, err)
	}
	ln.Close()
	for i := 0; i < refused; i++ {
		_, err := testnet.Dial(p1.NS, netip.AddrPortFrom(p2.IPv4, 9090), 1, time.Second)
		require.Error(t, err)
	}
	var closed int64
	require.Eventually(t, func() bool {
		if len(s.metrics.AllMetrics()) == 0 {
			return false
		}
		closed = connMetric(t, s.metrics, "ebpfnet.tcp.connections.closed", p1.IPv4.String(), map[string]string{"ebpfnet.tcp.role": "client"})
		return closed >= n+refused
	}, 20*time.Second, 100*time.Millisecond, "closed connections counted: %d", closed)
	time.Sleep(3 * cfg.Interval) // the last spans and records
	s.stop()
	require.Equal(t, int64(n+refused), closed, "the metrics count every connection")

	quarter, err := sampling.TValueToThreshold("c")
	require.NoError(t, err)
	clients, servers := map[pcommon.TraceID]bool{}, map[pcommon.TraceID]bool{}
	keptRefused := 0
	for _, sp := range collectSpans(s.traces) {
		if sattr(sp.span, "network.peer.address") != p2.IPv4.String() && sattr(sp.span, "network.local.address") != p2.IPv4.String() {
			continue
		}
		ts, err := sampling.NewW3CTraceState(sp.span.TraceState().AsRaw())
		require.NoError(t, err, sp.span.TraceState().AsRaw())
		th, ok := ts.OTelValue().TValueThreshold()
		require.True(t, ok, "a sampled span carries its threshold: %q", sp.span.TraceState().AsRaw())
		if sattr(sp.span, "ebpfnet.tcp.close_reason") == "refused" {
			keptRefused++
			require.Equal(t, "0", ts.OTelValue().TValue(), "a keep-always span counts once")
			continue
		}
		require.Equal(t, quarter, th)
		require.Equal(t, 4.0, ts.OTelValue().AdjustedCount())
		require.True(t, th.ShouldSample(sampling.TraceIDToRandomness(sp.span.TraceID())), "kept as the trace ID's randomness says")
		if sp.span.Kind() == ptrace.SpanKindClient {
			clients[sp.span.TraceID()] = true
		} else {
			servers[sp.span.TraceID()] = true
		}
	}
	require.Equal(t, refused, keptRefused, "every refused connection kept")
	require.Equal(t, clients, servers, "each kept client span with its server span")
	sigma := math.Sqrt(n * 0.25 * 0.75)
	require.InDelta(t, n/4, float64(len(clients)), 3*sigma, "kept %d of %d connections", len(clients), n)
	t.Logf("spans of %d of %d connections kept (3σ = %.0f), %d refused kept at th:0; %d closed counted", len(clients), n, 3*sigma, keptRefused, closed)

	// Flow log records: both directions of a kept flow (pod 1's transmit,
	// pod 2's receive, and back), none of a dropped one.
	dirs := map[[2]string]int{}
	for _, ld := range s.logs.AllLogs() {
		for i := 0; i < ld.ResourceLogs().Len(); i++ {
			lrs := ld.ResourceLogs().At(i).ScopeLogs().At(0).LogRecords()
			for j := 0; j < lrs.Len(); j++ {
				a := lrs.At(j).Attributes()
				if lrs.At(j).EventName() != "ebpfnet.flow" || str(a, "network.transport") != "tcp" ||
					(str(a, "source.address") != p1.IPv4.String() && str(a, "destination.address") != p1.IPv4.String()) {
					continue
				}
				require.Equal(t, "c", str(a, "sampling.threshold"))
				src := str(a, "source.address") + ":" + strconv.FormatInt(intAttr(a, "source.port"), 10)
				dst := str(a, "destination.address") + ":" + strconv.FormatInt(intAttr(a, "destination.port"), 10)
				dirs[[2]string{min(src, dst), max(src, dst)}]++
			}
		}
	}
	require.NotEmpty(t, dirs)
	for k, records := range dirs {
		require.GreaterOrEqual(t, records, 2, "flow %v: both directions", k)
	}
	// p1's flows to p2 are the 600 connections and the 10 refused; ~1/4 kept.
	require.InDelta(t, (n+refused)/4, float64(len(dirs)), 3*math.Sqrt((n+refused)*0.25*0.75)+1, "flows with records")
	t.Logf("flow log records of %d of %d flows kept", len(dirs), n+refused)
}
