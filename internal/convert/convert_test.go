package convert

import (
	"flag"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/plogtest"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/pmetrictest"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

var (
	t0   = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	pod  = netip.MustParseAddr("10.244.1.10")
	pod6 = netip.MustParseAddr("fd00::10")
	peer = netip.MustParseAddr("10.244.2.20")
	ext  = netip.MustParseAddr("192.0.2.1")
	node = netip.MustParseAddr("172.18.0.2")
)

func podFlow(src, dst netip.AddrPort, proto uint8, dir flow.Direction, bytes, packets uint64, at time.Time) flow.Flow {
	f := flow.Flow{Src: src, Dst: dst, Protocol: proto, Direction: dir, Bytes: bytes, Packets: packets,
		Start: at, End: at.Add(time.Second), Ifindex: 7, Interface: "veth7", TCPFlags: 0x1b}
	f.Endpoint = f.Local().Addr()
	return f
}

func ap(a netip.Addr, p uint16) netip.AddrPort { return netip.AddrPortFrom(a, p) }

func testOptions() Options {
	o := DefaultOptions()
	o.Schema = &testSchema
	o.NodeName = "node-a"
	o.ScopeName = "github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver"
	o.ScopeVersion = "test"
	return o
}

// sumValue returns the value of the one data point of metric name under the
// resource with k8s.pod.ip == podIP ("" for the node) matching attrs.
func sumValue(t *testing.T, md pmetric.Metrics, name, podIP string, attrs map[string]any) (int64, pmetric.NumberDataPoint) {
	t.Helper()
	var found []pmetric.NumberDataPoint
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		ip := ""
		if v, ok := rm.Resource().Attributes().Get(AttrK8sPodIP); ok {
			ip = v.AsString()
		}
		if ip != podIP {
			continue
		}
		ms := rm.ScopeMetrics().At(0).Metrics()
		for j := 0; j < ms.Len(); j++ {
			if ms.At(j).Name() != name {
				continue
			}
			dps := ms.At(j).Sum().DataPoints()
			for k := 0; k < dps.Len(); k++ {
				dp := dps.At(k)
				if attrsMatch(dp.Attributes(), attrs) {
					found = append(found, dp)
				}
			}
		}
	}
	require.Len(t, found, 1, "%s %s %v", name, podIP, attrs)
	return found[0].IntValue(), found[0]
}

func attrsMatch(m pcommon.Map, want map[string]any) bool {
	if m.Len() != len(want) {
		return false
	}
	for k, v := range want {
		got, ok := m.Get(k)
		if !ok || got.AsRaw() != v {
			return false
		}
	}
	return true
}

func peerAttrs(dir, transport, peer string) map[string]any {
	typ := "ipv4"
	if netip.MustParseAddr(peer).Is6() {
		typ = "ipv6"
	}
	return map[string]any{AttrDirection: dir, AttrTransport: transport, AttrNetworkType: typ, AttrPeerAddress: peer}
}

// TestCumulativeSumsAndStartTimes: flows of one peer aggregate over ports;
// cumulative values grow across batches; a series keeps the start time of
// the interval it first appeared in.
func TestCumulativeSumsAndStartTimes(t *testing.T) {
	c := NewConverter(testOptions(), t0)
	b1 := &flow.Batch{Time: t0.Add(10 * time.Second), Flows: []flow.Flow{
		podFlow(ap(pod, 40000), ap(peer, 80), flow.ProtoTCP, flow.Transmit, 1000, 10, t0),
		podFlow(ap(pod, 40001), ap(peer, 80), flow.ProtoTCP, flow.Transmit, 500, 5, t0),
	}}
	md := c.Metrics(b1)
	v, dp := sumValue(t, md, MetricFlowIO, pod.String(), peerAttrs("transmit", "tcp", peer.String()))
	require.Equal(t, int64(1500), v, "two ephemeral ports, one peer-level series")
	require.Equal(t, pcommon.NewTimestampFromTime(t0), dp.StartTimestamp())
	require.Equal(t, pcommon.NewTimestampFromTime(b1.Time), dp.Timestamp())

	b2 := &flow.Batch{Time: t0.Add(20 * time.Second), Flows: []flow.Flow{
		podFlow(ap(pod, 40000), ap(peer, 80), flow.ProtoTCP, flow.Transmit, 250, 2, t0.Add(12*time.Second)),
		podFlow(ap(peer, 80), ap(pod, 40000), flow.ProtoTCP, flow.Receive, 4000, 4, t0.Add(12*time.Second)),
	}}
	md = c.Metrics(b2)
	v, dp = sumValue(t, md, MetricFlowIO, pod.String(), peerAttrs("transmit", "tcp", peer.String()))
	require.Equal(t, int64(1750), v)
	require.Equal(t, pcommon.NewTimestampFromTime(t0), dp.StartTimestamp(), "cumulative start does not move")
	v, dp = sumValue(t, md, MetricFlowIO, pod.String(), peerAttrs("receive", "tcp", peer.String()))
	require.Equal(t, int64(4000), v)
	require.Equal(t, pcommon.NewTimestampFromTime(b1.Time), dp.StartTimestamp(), "new series starts at the previous batch")
	v, _ = sumValue(t, md, MetricFlowPackets, pod.String(), peerAttrs("transmit", "tcp", peer.String()))
	require.Equal(t, int64(17), v)
	require.Equal(t, pmetric.AggregationTemporalityCumulative, findMetric(md, MetricFlowIO).Sum().AggregationTemporality())
}

func findMetric(md pmetric.Metrics, name string) pmetric.Metric {
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		ms := md.ResourceMetrics().At(i).ScopeMetrics().At(0).Metrics()
		for j := 0; j < ms.Len(); j++ {
			if ms.At(j).Name() == name {
				return ms.At(j)
			}
		}
	}
	return pmetric.NewMetric()
}

// TestIdleSeriesEvictedAndRestarted: an idle series is dropped, counted,
// and restarts from zero with a new start time (a reset, not a decrease).
func TestIdleSeriesEvictedAndRestarted(t *testing.T) {
	o := testOptions()
	o.SeriesIdleTimeout = 30 * time.Second
	c := NewConverter(o, t0)
	f := podFlow(ap(pod, 1), ap(peer, 53), flow.ProtoUDP, flow.Transmit, 100, 1, t0)
	c.Metrics(&flow.Batch{Time: t0.Add(10 * time.Second), Flows: []flow.Flow{f}})
	require.Equal(t, 2, c.SeriesCount()) // io + packets
	c.Metrics(&flow.Batch{Time: t0.Add(20 * time.Second)})
	require.Equal(t, 2, c.SeriesCount(), "10 s idle is within the timeout")
	md := c.Metrics(&flow.Batch{Time: t0.Add(50 * time.Second)})
	require.Equal(t, 0, c.SeriesCount())
	v, _ := sumValue(t, md, MetricSeriesEvicted, "", map[string]any{})
	require.Equal(t, int64(2), v)

	md = c.Metrics(&flow.Batch{Time: t0.Add(60 * time.Second), Flows: []flow.Flow{f}})
	v, dp := sumValue(t, md, MetricFlowIO, pod.String(), peerAttrs("transmit", "udp", peer.String()))
	require.Equal(t, int64(100), v)
	require.Equal(t, pcommon.NewTimestampFromTime(t0.Add(50*time.Second)), dp.StartTimestamp())
}

// TestMaxSeriesBound keeps at most MaxSeries, dropping the least recently updated.
func TestMaxSeriesBound(t *testing.T) {
	o := testOptions()
	o.MaxSeries = 4
	o.Metrics[FlowPackets].Enabled = false
	c := NewConverter(o, t0)
	for i := 0; i < 10; i++ {
		p := netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})
		c.Metrics(&flow.Batch{Time: t0.Add(time.Duration(i+1) * time.Second), Flows: []flow.Flow{
			podFlow(ap(pod, 1), ap(p, 53), flow.ProtoUDP, flow.Transmit, 1, 1, t0)}})
		require.LessOrEqual(t, c.SeriesCount(), 4)
	}
	md := c.Metrics(&flow.Batch{Time: t0.Add(time.Minute)})
	v, _ := sumValue(t, md, MetricSeriesEvicted, "", map[string]any{})
	require.Equal(t, int64(6), v)
	// The survivors are the four most recent peers.
	for i := 6; i < 10; i++ {
		p := netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})
		sumValue(t, md, MetricFlowIO, pod.String(), peerAttrs("transmit", "udp", p.String()))
	}
}

// TestDeltaTemporality emits each interval's own sums, starting at the
// previous batch.
func TestDeltaTemporality(t *testing.T) {
	o := testOptions()
	o.Temporality = Delta
	c := NewConverter(o, t0)
	f := podFlow(ap(pod, 1), ap(peer, 53), flow.ProtoUDP, flow.Transmit, 100, 1, t0)
	counters := flow.Counters{}
	counters[flow.ReasonMapFull].Packets = 3
	c.Metrics(&flow.Batch{Time: t0.Add(10 * time.Second), Flows: []flow.Flow{f}, Counters: counters})
	counters[flow.ReasonMapFull].Packets = 5
	md := c.Metrics(&flow.Batch{Time: t0.Add(20 * time.Second), Flows: []flow.Flow{f}, Counters: counters})
	v, dp := sumValue(t, md, MetricFlowIO, pod.String(), peerAttrs("transmit", "udp", peer.String()))
	require.Equal(t, int64(100), v)
	require.Equal(t, pcommon.NewTimestampFromTime(t0.Add(10*time.Second)), dp.StartTimestamp())
	require.Equal(t, pmetric.AggregationTemporalityDelta, findMetric(md, MetricFlowIO).Sum().AggregationTemporality())
	v, _ = sumValue(t, md, MetricUncounted, "", map[string]any{AttrReason: "map_full"})
	require.Equal(t, int64(2), v)
	md = c.Metrics(&flow.Batch{Time: t0.Add(30 * time.Second), Counters: counters})
	require.Empty(t, findMetric(md, MetricFlowIO).Name(), "no flows, no flow data points")
}

// TestOptInPortsAndInterface splits series by ports only when asked.
func TestOptInPortsAndInterface(t *testing.T) {
	o := testOptions()
	o.Metrics[FlowIO].Attrs |= WithPeerPort | WithInterface
	c := NewConverter(o, t0)
	md := c.Metrics(&flow.Batch{Time: t0.Add(time.Second), Flows: []flow.Flow{
		podFlow(ap(pod, 40000), ap(peer, 80), flow.ProtoTCP, flow.Transmit, 10, 1, t0),
		podFlow(ap(pod, 40001), ap(peer, 80), flow.ProtoTCP, flow.Transmit, 20, 1, t0),
		podFlow(ap(pod, 40002), ap(peer, 443), flow.ProtoTCP, flow.Transmit, 40, 1, t0),
		podFlow(ap(pod, 8), ap(peer, 0), flow.ProtoICMP, flow.Transmit, 80, 1, t0),
	}})
	with := func(port int64) map[string]any {
		a := peerAttrs("transmit", "tcp", peer.String())
		a[AttrPeerPort] = port
		a[AttrInterface] = "veth7"
		return a
	}
	v, _ := sumValue(t, md, MetricFlowIO, pod.String(), with(80))
	require.Equal(t, int64(30), v)
	v, _ = sumValue(t, md, MetricFlowIO, pod.String(), with(443))
	require.Equal(t, int64(40), v)
	icmp := peerAttrs("transmit", "icmp", peer.String())
	icmp[AttrInterface] = "veth7"
	v, _ = sumValue(t, md, MetricFlowIO, pod.String(), icmp)
	require.Equal(t, int64(80), v, "ICMP type/code are not ports")
}

func goldenBatch() *flow.Batch {
	nodeFlow := flow.Flow{Src: ap(node, 22), Dst: ap(ext, 51000), Protocol: flow.ProtoTCP, Direction: flow.Transmit,
		OnNode: true, Bytes: 5000, Packets: 7, Start: t0, End: t0.Add(2 * time.Second), Ifindex: 2, Interface: "eth0", TCPFlags: 0x18}
	counters := flow.Counters{}
	counters[flow.ReasonDedupUplink] = flow.Count{Packets: 12, Bytes: 9000}
	counters[flow.ReasonNonIP] = flow.Count{Packets: 2, Bytes: 84}
	counters[flow.ReasonConnEventsFull] = flow.Count{Packets: 3}
	counters[flow.ReasonStateChangeMissed] = flow.Count{Packets: 5}
	mcast := podFlow(ap(netip.MustParseAddr("fe80::1"), 0), ap(netip.MustParseAddr("ff02::16"), 0), flow.ProtoICMPv6, flow.Receive, 90, 1, t0)
	mcast.Endpoint = pod // resolved from the interface
	return &flow.Batch{Time: t0.Add(10 * time.Second), TableCapacity: 1024, Counters: counters, Flows: []flow.Flow{
		podFlow(ap(pod, 40000), ap(peer, 80), flow.ProtoTCP, flow.Transmit, 1000, 10, t0),
		podFlow(ap(peer, 80), ap(pod, 40000), flow.ProtoTCP, flow.Receive, 64000, 12, t0),
		podFlow(ap(pod6, 5353), ap(netip.MustParseAddr("fd00::20"), 53), flow.ProtoUDP, flow.Transmit, 90, 1, t0),
		podFlow(ap(pod, 8), ap(ext, 0), flow.ProtoICMP, flow.Transmit, 98, 1, t0),
		mcast,
		nodeFlow,
	}}
}

func TestMetricsGolden(t *testing.T) {
	md := NewConverter(testOptions(), t0).Metrics(goldenBatch())
	path := filepath.Join("testdata", "metrics.yaml")
	if *update {
		require.NoError(t, golden.WriteMetricsToFile(path, md, golden.SkipMetricTimestampNormalization()))
	}
	want, err := golden.ReadMetrics(path)
	require.NoError(t, err)
	require.NoError(t, pmetrictest.CompareMetrics(want, md,
		pmetrictest.IgnoreResourceMetricsOrder(), pmetrictest.IgnoreMetricsOrder(), pmetrictest.IgnoreMetricDataPointsOrder()))
}

func TestLogsGolden(t *testing.T) {
	ld := Logs(testOptions(), goldenBatch())
	require.Equal(t, 6, ld.LogRecordCount(), "one record per flow")
	path := filepath.Join("testdata", "logs.yaml")
	if *update {
		require.NoError(t, golden.WriteLogsToFile(path, ld))
	}
	want, err := golden.ReadLogs(path)
	require.NoError(t, err)
	require.NoError(t, plogtest.CompareLogs(want, ld, plogtest.IgnoreResourceLogsOrder(), plogtest.IgnoreLogRecordsOrder()))
}
