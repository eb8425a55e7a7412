package ebpfnetreceiver

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver/internal/metadata"
)

// sinks is a receiver with a sink per signal asked for (nil: not
// asked), all sharing one kernel pipeline as in a collector.
type sinks struct {
	metrics *consumertest.MetricsSink
	logs    *consumertest.LogsSink
	traces  *consumertest.TracesSink
	stop    func() // Shutdown of each, in reverse; idempotent, also at cleanup
}

// startSignals starts the receiver for the signals asked for.
func startSignals(t *testing.T, cfg *Config, metrics, logs, traces bool) *sinks {
	t.Helper()
	f := NewFactory()
	set := receivertest.NewNopSettings(metadata.Type)
	ctx := context.Background()
	s := &sinks{}
	var comps []component.Component
	add := func(c component.Component, err error) {
		require.NoError(t, err)
		comps = append(comps, c)
	}
	if metrics {
		s.metrics = new(consumertest.MetricsSink)
		add(f.CreateMetrics(ctx, set, cfg, s.metrics))
	}
	if logs {
		s.logs = new(consumertest.LogsSink)
		add(f.CreateLogs(ctx, set, cfg, s.logs))
	}
	if traces {
		s.traces = new(consumertest.TracesSink)
		add(f.CreateTraces(ctx, set, cfg, s.traces))
	}
	for _, c := range comps {
		require.NoError(t, c.Start(ctx, componenttest.NewNopHost()))
	}
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			for i := len(comps) - 1; i >= 0; i-- {
				require.NoError(t, comps[i].Shutdown(ctx))
			}
		})
	}
	t.Cleanup(s.stop)
	return s
}

// startReceiver runs the receiver with metrics and logs sinks.
func startReceiver(t *testing.T, cfg *Config) *sinks { return startSignals(t, cfg, true, true, false) }

func testConfig(nodeID int) *Config {
	cfg := createDefaultConfig().(*Config)
	cfg.Interval = 300 * time.Millisecond
	cfg.NodeName = "test-node"
	cfg.Interfaces.Include = fmt.Sprintf("^(%s-|%s$)", testnet.Prefix(nodeID), testnet.UplinkName(nodeID))
	cfg.Interfaces.Uplink = fmt.Sprintf("^%s$", testnet.UplinkName(nodeID))
	cfg.Interfaces.Exclude = ""
	return cfg
}

// series is one data point of the last cumulative emission.
type series struct {
	resource pcommon.Map
	attrs    pcommon.Map
	value    int64
}

// lastCumulative returns the data points of metric name in the last batch.
func lastCumulative(t *testing.T, sink *consumertest.MetricsSink, name string) []series {
	t.Helper()
	all := sink.AllMetrics()
	require.NotEmpty(t, all)
	md := all[len(all)-1]
	var out []series
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		for j := 0; j < rm.ScopeMetrics().Len(); j++ {
			ms := rm.ScopeMetrics().At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				m := ms.At(k)
				if m.Name() != name {
					continue
				}
				require.Equal(t, pmetric.AggregationTemporalityCumulative, m.Sum().AggregationTemporality())
				dps := m.Sum().DataPoints()
				for d := 0; d < dps.Len(); d++ {
					out = append(out, series{rm.Resource().Attributes(), dps.At(d).Attributes(), dps.At(d).IntValue()})
				}
			}
		}
	}
	return out
}

func str(m pcommon.Map, k string) string {
	v, ok := m.Get(k)
	if !ok {
		return ""
	}
	return v.AsString()
}

// sumWhere sums the series matching the filter.
func sumWhere(ss []series, match func(s series) bool) int64 {
	var n int64
	for _, s := range ss {
		if match(s) {
			n += s.value
		}
	}
	return n
}

func podResource(p *testnet.Pod) func(series) bool {
	return func(s series) bool {
		ip := str(s.resource, "k8s.pod.ip")
		return ip == p.IPv4.String() || ip == p.IPv6.String()
	}
}

func and(fs ...func(series) bool) func(series) bool {
	return func(s series) bool {
		for _, f := range fs {
			if !f(s) {
				return false
			}
		}
		return true
	}
}

func attr(k, v string) func(series) bool {
	return func(s series) bool { return str(s.attrs, k) == v }
}

// logBytesOn sums the flow records of an interface that started at or after since.
func logBytesOn(ld []plog.Logs, iface string, since time.Time) (bytes, packets int64) {
	for _, l := range ld {
		for i := 0; i < l.ResourceLogs().Len(); i++ {
			sls := l.ResourceLogs().At(i).ScopeLogs()
			for j := 0; j < sls.Len(); j++ {
				lrs := sls.At(j).LogRecords()
				for k := 0; k < lrs.Len(); k++ {
					a := lrs.At(k).Attributes()
					start, _ := a.Get("ebpfnet.flow.start")
					if str(a, "network.interface.name") != iface || start.Int() < since.UnixNano() {
						continue
					}
					b, _ := a.Get("ebpfnet.flow.bytes")
					p, _ := a.Get("ebpfnet.flow.packets")
					bytes += b.Int()
					packets += p.Int()
				}
			}
		}
	}
	return bytes, packets
}

// TestEndToEndFlowsMatchKernelCounters builds a node (bridge, veth pods, an
// uplink to a remote host), runs the receiver on it, drives TCP and UDP over
// IPv4 and IPv6 pod-to-pod, pod-to-remote, remote-to-pod and node-to-remote,
// adds a pod while running, and checks the exported numbers against the
// interfaces' own kernel counters and against what the test sent.
func TestEndToEndFlowsMatchKernelCounters(t *testing.T) {
	for i, mode := range []string{"tcx", "tc"} {
		t.Run(mode, func(t *testing.T) { endToEnd(t, 11+10*i, mode) })
	}
}

func endToEnd(t *testing.T, nodeID int, attachMode string) {
	node := testnet.NewNode(t, nodeID)
	p1 := node.AddPod(t, 2)
	p2 := node.AddPod(t, 3)
	ifaces := []string{p1.Veth, p2.Veth, node.Uplink}
	testnet.WaitQuiet(t, ifaces...)
	before := map[string]testnet.LinkStats{}
	for _, i := range ifaces {
		before[i] = testnet.Stats(t, i)
	}

	cfg := testConfig(node.ID)
	cfg.AttachMode = attachMode
	r := startReceiver(t, cfg)
	remote := node.Remote.NS

	// pod -> pod, IPv4 TCP and IPv6 UDP.
	require.NoError(t, testnet.TCPTransfer(p1.NS, p2.NS, netip.AddrPortFrom(p2.IPv4, 5001), 1<<20))
	_, err := testnet.UDPSend(p1.NS, p2.NS, netip.AddrPortFrom(p2.IPv6, 5002), 100, 500)
	require.NoError(t, err)
	// pod -> remote over the uplink, IPv6 TCP.
	require.NoError(t, testnet.TCPTransfer(p2.NS, remote, netip.AddrPortFrom(node.Remote.IPv6, 5003), 512<<10))
	// remote -> pod, IPv4 UDP: 50 datagrams of 200 bytes.
	_, err = testnet.UDPSend(remote, p1.NS, netip.AddrPortFrom(p1.IPv4, 5004), 50, 200)
	require.NoError(t, err)
	// node itself -> remote, IPv4 UDP and TCP.
	_, err = testnet.UDPSend(nil, remote, netip.AddrPortFrom(node.Remote.IPv4, 5005), 20, 100)
	require.NoError(t, err)
	require.NoError(t, testnet.TCPTransfer(nil, remote, netip.AddrPortFrom(node.Remote.IPv4, 5006), 100<<10))

	// A pod created while the receiver runs is attached within a second:
	// everything on its veth from one second after creation is counted.
	p3 := node.AddPod(t, 4)
	time.Sleep(time.Second)
	testnet.WaitQuiet(t, p3.Veth)
	before[p3.Veth] = testnet.Stats(t, p3.Veth)
	// Flow times have one kernel tick of resolution; the setup traffic
	// ended at least 300 ms (WaitQuiet) before this point.
	since := map[string]time.Time{p3.Veth: time.Now().Add(-100 * time.Millisecond)}
	ifaces = append(ifaces, p3.Veth)
	_, err = testnet.UDPSend(p3.NS, p1.NS, netip.AddrPortFrom(p1.IPv4, 5007), 10, 100)
	require.NoError(t, err)

	testnet.WaitQuiet(t, ifaces...)
	r.stop()
	delta := map[string]testnet.LinkStats{}
	for _, i := range ifaces {
		delta[i] = testnet.Stats(t, i).Sub(before[i])
	}

	io := lastCumulative(t, r.metrics, "ebpfnet.flow.io")
	pk := lastCumulative(t, r.metrics, "ebpfnet.flow.packets")

	// Every pod's view equals its veth's counters exactly. The host side of
	// the veth receives what the pod transmits, and transmits what it receives.
	for _, p := range []*testnet.Pod{p1, p2, p3} {
		d := delta[p.Veth]
		require.NotZero(t, d.RxPackets+d.TxPackets, p.Name)
		require.Equal(t, int64(d.RxBytes), sumWhere(io, and(podResource(p), attr("network.io.direction", "transmit"))), "%s transmit bytes", p.Name)
		require.Equal(t, int64(d.TxBytes), sumWhere(io, and(podResource(p), attr("network.io.direction", "receive"))), "%s receive bytes", p.Name)
		require.Equal(t, int64(d.RxPackets), sumWhere(pk, and(podResource(p), attr("network.io.direction", "transmit"))), "%s transmit packets", p.Name)
		require.Equal(t, int64(d.TxPackets), sumWhere(pk, and(podResource(p), attr("network.io.direction", "receive"))), "%s receive packets", p.Name)

		// The flow logs carry the same totals.
		lb, lp := logBytesOn(r.logs.AllLogs(), p.Veth, since[p.Veth])
		require.Equal(t, int64(d.RxBytes+d.TxBytes), lb, "%s log bytes", p.Name)
		require.Equal(t, int64(d.RxPackets+d.TxPackets), lp, "%s log packets", p.Name)
	}

	// Pod to pod on one node: once in each pod's view, with equal numbers.
	p1tx := sumWhere(io, and(podResource(p1), attr("network.io.direction", "transmit"), attr("network.peer.address", p2.IPv4.String())))
	p2rx := sumWhere(io, and(podResource(p2), attr("network.io.direction", "receive"), attr("network.peer.address", p1.IPv4.String())))
	require.Equal(t, p1tx, p2rx)
	require.Greater(t, p1tx, int64(1<<20), "the 1 MiB transfer and its headers")

	// What the test sent, exactly: 50 UDP datagrams of 200 bytes remote -> p1
	// (L2 frame = 200 + 8 UDP + 20 IPv4 + 14 Ethernet).
	require.Equal(t, int64(50), sumWhere(pk, and(podResource(p1), attr("network.io.direction", "receive"), attr("network.peer.address", node.Remote.IPv4.String()))))
	require.Equal(t, int64(50*(200+8+20+14)), sumWhere(io, and(podResource(p1), attr("network.io.direction", "receive"), attr("network.peer.address", node.Remote.IPv4.String()))))
	// 100 IPv6 UDP datagrams of 500 bytes p1 -> p2 (+ 8 + 40 + 14).
	require.Equal(t, int64(100*(500+8+40+14)), sumWhere(io, and(podResource(p2), attr("network.io.direction", "receive"), attr("network.peer.address", p1.IPv6.String()), attr("network.transport", "udp"))))
	// The new pod's 10 datagrams.
	require.Equal(t, int64(10*(100+8+20+14)), sumWhere(io, and(podResource(p3), attr("network.io.direction", "transmit"), attr("network.peer.address", p1.IPv4.String()))))

	// The uplink counts only the node's own traffic: pod traffic crossing it
	// was counted at the pods and is reported as de-duplicated.
	nodeRes := func(s series) bool { return str(s.resource, "k8s.pod.ip") == "" }
	for _, s := range io {
		if nodeRes(s) {
			require.Equal(t, "test-node", str(s.resource, "k8s.node.name"))
			peer := str(s.attrs, "network.peer.address")
			for _, p := range []*testnet.Pod{p1, p2, p3} {
				require.NotContains(t, []string{p.IPv4.String(), p.IPv6.String()}, peer, "pod traffic counted again at the uplink")
			}
		}
	}
	un := lastCumulative(t, r.metrics, "ebpfnet.packets.uncounted")
	dedupPackets := sumWhere(un, attr("reason", "dedup_uplink"))
	require.NotZero(t, dedupPackets)
	u := delta[node.Uplink]
	require.Equal(t, int64(u.RxPackets+u.TxPackets), sumWhere(pk, nodeRes)+dedupPackets, "uplink packets = node flows + de-duplicated pod packets")
	require.Equal(t, int64(20), sumWhere(pk, and(nodeRes, attr("network.io.direction", "transmit"), attr("network.transport", "udp"))))
	for _, reason := range []string{"map_full", "truncated", "malformed", "non_ip"} {
		require.Zero(t, sumWhere(un, attr("reason", reason)), reason)
	}
}

// TestEndToEndTinyMapReportsLoss fills a 16-flow table with more flows than
// it holds in one interval: the overflow is reported, not hidden.
func TestEndToEndTinyMapReportsLoss(t *testing.T) {
	node := testnet.NewNode(t, 12)
	p1 := node.AddPod(t, 2)
	p2 := node.AddPod(t, 3)
	testnet.WaitQuiet(t, p1.Veth, p2.Veth, node.Uplink)
	cfg := testConfig(node.ID)
	cfg.MaxFlows = 16
	cfg.Interval = time.Hour // one interval: all flows compete for the table
	cfg.MetricsBuilderConfig.Metrics.EbpfnetFlowPackets.EnabledAttributes = append(cfg.MetricsBuilderConfig.Metrics.EbpfnetFlowPackets.EnabledAttributes, metadata.EbpfnetFlowPacketsMetricAttributeKeyNetworkLocalPort)
	r := startReceiver(t, cfg)
	const flows = 40
	for i := 0; i < flows; i++ {
		_, err := testnet.UDPSend(p1.NS, p2.NS, netip.AddrPortFrom(p2.IPv4, uint16(6000+i)), 1, 64)
		require.NoError(t, err)
	}
	r.stop()
	un := lastCumulative(t, r.metrics, "ebpfnet.packets.uncounted")
	lost := sumWhere(un, attr("reason", "map_full"))
	pk := lastCumulative(t, r.metrics, "ebpfnet.flow.packets")
	counted := sumWhere(pk, and(attr("network.transport", "udp"), attr("network.peer.address", p2.IPv4.String()), podResource(p1)))
	counted += sumWhere(pk, and(attr("network.transport", "udp"), attr("network.peer.address", p1.IPv4.String()), podResource(p2)))
	require.NotZero(t, lost, "a full table must be reported")
	// Each datagram passes two veths (p1 transmit, p2 receive).
	require.Equal(t, int64(2*flows), counted+lost, "every packet is in a flow or counted as lost")
}

var _ receiver.Metrics = (*sharedHandle[*pipeline])(nil)
