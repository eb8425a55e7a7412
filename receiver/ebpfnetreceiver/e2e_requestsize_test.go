package ebpfnetreceiver

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/ebpfnet/ebpfnet/internal/backendtest"
	"github.com/ebpfnet/ebpfnet/internal/collectortest"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestLargeIntervalReachesStockOTLPReceiver: 20,000 and 200,000 new flows
// in one interval, from the ocb collector, with the example agent's batch
// processor and with none (the receiver's own chunks alone), to a second
// ocb collector whose stock OTLP receiver takes its default 4 MiB messages
// (it forwards to the test's sink). Every flow arrives, as a flow record
// and in the flow metrics, and nothing was refused on the way.
func TestLargeIntervalReachesStockOTLPReceiver(t *testing.T) {
	testnet.RequireRoot(t)
	bin := collectortest.Build(t)
	node := testnet.NewNode(t, 42)
	pod := node.AddPod(t, 2)
	for _, c := range []struct{ name, processors string }{
		{"20000/example-batch", "[batch]"}, {"20000/no-processor", "[]"},
		{"200000/example-batch", "[batch]"}, {"200000/no-processor", "[]"},
	} {
		var n int
		_, _ = fmt.Sscanf(c.name, "%d/", &n)
		t.Run(c.name, func(t *testing.T) {
			sink := startOTLPSink(t, "127.0.0.1")
			gateway := startGateway(t, bin, sink.Addr)
			dir := t.TempDir()
			config := fmt.Sprintf(`
receivers:
  ebpfnet:
    interval: 1h
    max_flows: 262144
    node_name: node-big
    interfaces: {include: '^%s$', exclude: ''}
processors:
  batch: %s
exporters:
  otlp_grpc: {endpoint: %s, tls: {insecure: true}}
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    metrics: {receivers: [ebpfnet], processors: %[4]s, exporters: [otlp_grpc]}
    logs: {receivers: [ebpfnet], processors: %[4]s, exporters: [otlp_grpc]}
`, pod.Veth, exampleBatch(t), gateway, c.processors)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(config), 0o600))
			// One interval: the final drain at SIGTERM.
			out, code, _ := sigtermRun(t, bin, filepath.Join(dir, "config.yaml"), func() struct{} {
				require.NoError(t, node.SendUDPFlows(pod, n, func(i int) (netip.Addr, uint16, uint16) {
					return netip.AddrFrom4([4]byte{10, 99, byte(i % 1000 / 250), byte(i%1000%250 + 1)}), uint16(1024 + i/1000), 9
				}))
				return struct{}{}
			})
			require.Equal(t, 0, code, "agent exit code\n%s", out)
			require.NotContains(t, out, "rror", "no export error\n%s", out)
			var records int
			require.Eventually(t, func() bool {
				records = udpRecords(sink.signals().logs, pod.Veth)
				return records >= n
			}, time.Minute, 200*time.Millisecond, "flow records at the sink")
			require.Equal(t, n, records, "every flow once")
			require.Equal(t, int64(n), sink.signals().podSum(pod.IPv4, "ebpfnet.flow.packets"), "flow metric packets")
			require.NotContains(t, gateway.Output(), "rror", "the gateway refused nothing")
		})
	}
}

// exampleBatch is the batch processor of the example agent's config, as
// a YAML flow mapping.
func exampleBatch(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "kubernetes", "20-agent-config.yaml"))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "batch: "); ok {
			require.Contains(t, v, "send_batch_max_size", "the example agent bounds its batches")
			return v
		}
	}
	t.Fatal("no batch processor in the example agent's config")
	return ""
}

type gatewayCollector struct {
	addr string
	*collectortest.Collector
}

func (g gatewayCollector) String() string { return g.addr }

// startGateway runs the ocb collector as a gateway: the stock OTLP
// receiver with its defaults, forwarding to the OTLP endpoint next.
func startGateway(t *testing.T, bin, next string) gatewayCollector {
	addr := backendtest.FreeAddr(t)
	dir := t.TempDir()
	config := fmt.Sprintf(`
receivers:
  otlp: {protocols: {grpc: {endpoint: %s}}}
exporters:
  otlp_grpc: {endpoint: %s, tls: {insecure: true}}
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    metrics: {receivers: [otlp], exporters: [otlp_grpc]}
    logs: {receivers: [otlp], exporters: [otlp_grpc]}
    traces: {receivers: [otlp], exporters: [otlp_grpc]}
`, addr, next)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte(config), 0o600))
	return gatewayCollector{addr: addr, Collector: collectortest.Start(t, bin, filepath.Join(dir, "gateway.yaml"), nil)}
}

// udpRecords counts the UDP flow records of an interface.
func udpRecords(lds []plog.Logs, iface string) int {
	n := 0
	for _, ld := range lds {
		for i := 0; i < ld.ResourceLogs().Len(); i++ {
			sls := ld.ResourceLogs().At(i).ScopeLogs()
			for j := 0; j < sls.Len(); j++ {
				recs := sls.At(j).LogRecords()
				for k := 0; k < recs.Len(); k++ {
					a := recs.At(k).Attributes()
					if str(a, "network.interface.name") == iface && str(a, "network.transport") == "udp" {
						n++
					}
				}
			}
		}
	}
	return n
}
