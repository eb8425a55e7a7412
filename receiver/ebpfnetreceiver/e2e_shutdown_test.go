package ebpfnetreceiver

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/ebpfnet/ebpfnet/internal/collectortest"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// signals is what one backend received: every signal, as requests.
type signals struct {
	metrics []pmetric.Metrics
	logs    []plog.Logs
	traces  []ptrace.Traces
}

// readSignals reads a file exporter's output shared by the three signals:
// one OTLP/JSON request per line, of any signal.
func readSignals(path string) signals {
	var s signals
	jsonLines(path, func(line []byte) error {
		switch {
		case bytes.Contains(line[:min(len(line), 32)], []byte(`"resourceMetrics"`)):
			md, err := (&pmetric.JSONUnmarshaler{}).UnmarshalMetrics(line)
			s.metrics = append(s.metrics, md)
			return err
		case bytes.Contains(line[:min(len(line), 32)], []byte(`"resourceLogs"`)):
			ld, err := (&plog.JSONUnmarshaler{}).UnmarshalLogs(line)
			s.logs = append(s.logs, ld)
			return err
		case bytes.Contains(line[:min(len(line), 32)], []byte(`"resourceSpans"`)):
			td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(line)
			s.traces = append(s.traces, td)
			return err
		}
		return errors.New("not OTLP/JSON")
	})
	return s
}

func (s *otlpSink) signals() signals {
	s.mu.Lock()
	defer s.mu.Unlock()
	return signals{metrics: append([]pmetric.Metrics(nil), s.m...), logs: append([]plog.Logs(nil), s.l...),
		traces: append([]ptrace.Traces(nil), s.tr...)}
}

// podSum sums the points of a pod's sum metric (one collection: each
// series once).
func (s signals) podSum(ip netip.Addr, name string) int64 {
	var n int64
	for _, md := range s.metrics {
		for i := 0; i < md.ResourceMetrics().Len(); i++ {
			rm := md.ResourceMetrics().At(i)
			if str(rm.Resource().Attributes(), "k8s.pod.ip") != ip.String() {
				continue
			}
			for j := 0; j < rm.ScopeMetrics().Len(); j++ {
				ms := rm.ScopeMetrics().At(j).Metrics()
				for k := 0; k < ms.Len(); k++ {
					if ms.At(k).Name() != name {
						continue
					}
					for p := 0; p < ms.At(k).Sum().DataPoints().Len(); p++ {
						n += ms.At(k).Sum().DataPoints().At(p).IntValue()
					}
				}
			}
		}
	}
	return n
}

// spanPorts counts the spans of each client port, by kind.
func (s signals) spanPorts() map[string]int {
	out := map[string]int{}
	for _, td := range s.traces {
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			ss := td.ResourceSpans().At(i).ScopeSpans()
			for j := 0; j < ss.Len(); j++ {
				for k := 0; k < ss.At(j).Spans().Len(); k++ {
					sp := ss.At(j).Spans().At(k)
					port, _ := sp.Attributes().Get("client.port")
					out[fmt.Sprint(sp.Kind(), port.Int())]++
				}
			}
		}
	}
	return out
}

// TestCollectorSIGTERMLosesNothing: the ocb collector, metrics, logs and
// traces each exported to one file exporter shared by the three signals
// (it stops at its first Shutdown) and, through the batch processor, to
// OTLP, with an interval longer than the test, so that everything the
// backends get is the final drain at SIGTERM. (A batch processor in front
// of a shared file exporter is not tested: the collector stops that
// exporter while another signal's batch still flushes into it, a panic in
// the file exporter whatever the receiver; README, "Shutdown".) Twenty times in a row: the collector exits 0, and
// both backends have every connection's two spans, flow logs and flow
// metrics whose bytes equal the pod veth's kernel counters.
func TestCollectorSIGTERMLosesNothing(t *testing.T) {
	testnet.RequireRoot(t)
	bin := collectortest.Build(t)
	node := testnet.NewNode(t, 41)
	pod := node.AddPod(t, 2)
	ln, err := testnet.ListenTCP(pod.NS, netip.AddrPortFrom(pod.IPv4, 8080))
	require.NoError(t, err)
	t.Cleanup(ln.Close)
	for run := 0; run < 20; run++ {
		sink := startOTLPSink(t, "127.0.0.1")
		dir := t.TempDir()
		config := fmt.Sprintf(`
receivers:
  ebpfnet:
    interval: 1h
    node_name: node-sigterm
    interfaces: {include: '^%s$', exclude: ''}
processors:
  batch: {send_batch_size: 512, send_batch_max_size: 1024}
exporters:
  file: {path: %s/out.json}
  otlp_grpc: {endpoint: %s, tls: {insecure: true}}
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    metrics/file: {receivers: [ebpfnet], exporters: [file]}
    logs/file: {receivers: [ebpfnet], exporters: [file]}
    traces/file: {receivers: [ebpfnet], exporters: [file]}
    metrics/otlp: {receivers: [ebpfnet], processors: [batch], exporters: [otlp_grpc]}
    logs/otlp: {receivers: [ebpfnet], processors: [batch], exporters: [otlp_grpc]}
    traces/otlp: {receivers: [ebpfnet], processors: [batch], exporters: [otlp_grpc]}
`, pod.Veth, dir, sink.Addr)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(config), 0o600))
		testnet.WaitQuiet(t, pod.Veth)
		before := testnet.Stats(t, pod.Veth)
		out, code, ports := sigtermRun(t, bin, filepath.Join(dir, "config.yaml"), func() []uint16 {
			var ports []uint16
			for i := 0; i < 10; i++ {
				port, err := testnet.Dial(node.Remote.NS, netip.AddrPortFrom(pod.IPv4, 8080), 1000+i, 2*time.Second)
				require.NoError(t, err)
				ports = append(ports, port)
			}
			testnet.WaitQuiet(t, pod.Veth)
			return ports
		})
		d := testnet.Stats(t, pod.Veth).Sub(before)
		require.Equal(t, 0, code, "run %d: exit code\n%s", run, out)
		require.NotContains(t, out, "panic", "run %d", run)
		for name, got := range map[string]signals{"file": readSignals(filepath.Join(dir, "out.json")), "otlp": sink.signals()} {
			lb, _ := logBytesOn(got.logs, pod.Veth, time.Time{})
			require.Equal(t, int64(d.RxBytes+d.TxBytes), lb, "run %d, %s: flow log bytes = the veth's counters", run, name)
			require.Equal(t, int64(d.RxBytes+d.TxBytes), got.podSum(pod.IPv4, "ebpfnet.flow.io"), "run %d, %s: flow metric bytes", run, name)
			spans := got.spanPorts()
			for _, port := range ports {
				require.Equal(t, 1, spans[fmt.Sprint(ptrace.SpanKindServer, port)], "run %d, %s: server span of port %d", run, name, port)
				require.Equal(t, 1, spans[fmt.Sprint(ptrace.SpanKindClient, port)], "run %d, %s: client span of port %d", run, name, port)
			}
		}
	}
}

// sigtermRun starts the collector, runs traffic once it is ready, SIGTERMs
// it and returns its output, exit code and what traffic returned.
func sigtermRun[T any](t *testing.T, bin, config string, traffic func() T) (string, int, T) {
	col := collectortest.Start(t, bin, config, nil)
	result := traffic()
	code := col.Stop(t, 30*time.Second)
	return col.Output(), code, result
}
