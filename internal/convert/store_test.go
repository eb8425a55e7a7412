package convert

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

func closedConn(local, peer netip.Addr, port uint16, at time.Time) flow.Conn {
	return flow.Conn{Cookie: uint64(port), Role: flow.Client, Result: flow.Closed,
		Local: netip.AddrPortFrom(local, port), Remote: netip.AddrPortFrom(peer, 80),
		Start: at.Add(-time.Second), Established: at.Add(-time.Second), End: at, SRTT: time.Millisecond}
}

func connAttrs(peer netip.Addr) map[string]any {
	return map[string]any{AttrTCPRole: "client", AttrTCPCloseReason: "closed", AttrPeerAddress: peer.String()}
}

// TestFlowsAndConnectionsShareOneResource: a pod's flow and connection
// metrics are in one ResourceMetrics (one store emits both).
func TestFlowsAndConnectionsShareOneResource(t *testing.T) {
	pod, peer := netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("10.0.0.20")
	at := t0.Add(10 * time.Second)
	md := NewConverter(testOptions(), t0).Metrics(&flow.Batch{Time: at,
		Flows:  []flow.Flow{podFlow(ap(pod, 40000), ap(peer, 80), flow.ProtoTCP, flow.Transmit, 100, 1, at)},
		Closed: []flow.Conn{closedConn(pod, peer, 40000, at)}})
	n := 0
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		if v, ok := rm.Resource().Attributes().Get(AttrK8sPodIP); ok && v.Str() == pod.String() {
			n++
			names := map[string]bool{}
			for j := 0; j < rm.ScopeMetrics().At(0).Metrics().Len(); j++ {
				names[rm.ScopeMetrics().At(0).Metrics().At(j).Name()] = true
			}
			require.True(t, names[MetricFlowIO] && names[MetricConnsClosed] && names[MetricConnDuration], "%v", names)
		}
	}
	require.Equal(t, 1, n, "one ResourceMetrics for the pod")
}

// TestConnectionMetricsDelta: with temporality delta, connection sums and
// histograms carry each interval's part, marked delta.
func TestConnectionMetricsDelta(t *testing.T) {
	o := testOptions()
	o.Temporality = Delta
	c := NewConverter(o, t0)
	pod, peer := netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("10.0.0.20")
	for i, at := range []time.Time{t0.Add(10 * time.Second), t0.Add(20 * time.Second)} {
		md := c.Metrics(&flow.Batch{Time: at, Closed: []flow.Conn{closedConn(pod, peer, uint16(40000+i), at)}})
		v, dp := sumValue(t, md, MetricConnsClosed, pod.String(), connAttrs(peer))
		require.Equal(t, int64(1), v, "interval %d", i)
		require.Equal(t, at.Add(-10*time.Second).UnixNano(), dp.StartTimestamp().AsTime().UnixNano())
		m := findMetric(md, MetricConnsClosed)
		require.Equal(t, pmetric.AggregationTemporalityDelta, m.Sum().AggregationTemporality())
		h := findMetric(md, MetricConnDuration).Histogram()
		require.Equal(t, pmetric.AggregationTemporalityDelta, h.AggregationTemporality())
		require.Equal(t, uint64(1), h.DataPoints().At(0).Count())
	}
}

// TestConnectionSeriesBoundedAndCounted: connection series count into
// max_series and idle eviction like flow series, and into
// ebpfnet.series.evicted.
func TestConnectionSeriesBoundedAndCounted(t *testing.T) {
	o := testOptions()
	for id := range o.Metrics {
		o.Metrics[id].Enabled = Metric(id) == ConnsClosed || Metric(id) == SeriesEvicted
	}
	o.MaxSeries = 2
	o.SeriesIdleTimeout = 30 * time.Second
	c := NewConverter(o, t0)
	pod := netip.MustParseAddr("10.0.0.10")
	var md pmetric.Metrics
	for i := range 3 {
		at := t0.Add(time.Duration(i+1) * time.Second)
		peer := netip.AddrFrom4([4]byte{10, 0, 1, byte(i)})
		md = c.Metrics(&flow.Batch{Time: at, Closed: []flow.Conn{closedConn(pod, peer, 40000, at)}})
	}
	v, _ := sumValue(t, md, MetricSeriesEvicted, "", map[string]any{})
	require.Equal(t, int64(1), v, "the least recently updated of three connection series")
	require.Equal(t, 2, c.SeriesCount())
	md = c.Metrics(&flow.Batch{Time: t0.Add(time.Minute)})
	v, _ = sumValue(t, md, MetricSeriesEvicted, "", map[string]any{})
	require.Equal(t, int64(3), v, "both left went idle")
	require.Zero(t, c.SeriesCount())
}
