package convert

import (
	"net/netip"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// kind is how a metric is emitted.
type kind uint8

const (
	kindSum kind = iota // monotonic
	kindGauge
	kindHistogram
)

var metricKinds = [NumMetrics]kind{ConnDuration: kindHistogram, ConnRTT: kindHistogram,
	DNSLookupDuration: kindHistogram, DNSServerDuration: kindHistogram,
	TableFlows: kindGauge, TableCapacity: kindGauge}

// counterMetrics says what each kernel counter is reported as: a metric
// and, where the metric has one, its reason attribute's value.
var counterMetrics = [flow.NumReasons]struct {
	metric Metric
	reason string
}{
	flow.ReasonNonIP:             {Uncounted, "non_ip"},
	flow.ReasonTruncated:         {Uncounted, "truncated"},
	flow.ReasonMalformed:         {Uncounted, "malformed"},
	flow.ReasonFragment:          {Uncounted, "fragment"},
	flow.ReasonMapFull:           {Uncounted, "map_full"},
	flow.ReasonDedupUplink:       {Uncounted, "dedup_uplink"},
	flow.ReasonExtHdrLimit:       {Uncounted, "ext_hdr_limit"},
	flow.ReasonNonlinear:         {Uncounted, "nonlinear"},
	flow.ReasonConnStateFull:     {ConnsUnreported, "conn_state_full"},
	flow.ReasonConnEventsFull:    {ConnsUnreported, "conn_events_full"},
	flow.ReasonStateChangeMissed: {StateChangesMissed, ""},
	flow.ReasonDialedFull:        {ConnsUnreported, "dialed_full"},
	flow.ReasonDropsFull:         {Uncounted, "drops_full"},
	flow.ReasonDropsMissed:       {Uncounted, "drops_missed"},
	flow.ReasonDNSPendingFull:    {Uncounted, "dns_pending_full"},
	flow.ReasonDNSEventsFull:     {Uncounted, "dns_events_full"},
}

// resourceMetrics is one local endpoint's ResourceMetrics being filled.
type resourceMetrics struct {
	scope   pmetric.ScopeMetrics
	metrics [NumMetrics]pmetric.Metric
}

func (r *resourceMetrics) metric(c *Converter, id Metric) pmetric.Metric {
	if m := r.metrics[id]; m != (pmetric.Metric{}) {
		return m
	}
	m := r.scope.Metrics().AppendEmpty()
	c.opts.Schema.define(m, id)
	temporality := pmetric.AggregationTemporalityCumulative
	if c.opts.Temporality == Delta {
		temporality = pmetric.AggregationTemporalityDelta
	}
	switch metricKinds[id] {
	case kindSum:
		s := m.SetEmptySum()
		s.SetIsMonotonic(true)
		s.SetAggregationTemporality(temporality)
	case kindGauge:
		m.SetEmptyGauge()
	case kindHistogram:
		m.SetEmptyHistogram().SetAggregationTemporality(temporality)
	}
	r.metrics[id] = m
	return m
}

// emit writes every series, one ResourceMetrics per local endpoint (the
// node first), and the receiver's own metrics on the node's.
func (c *Converter) emit(b *flow.Batch) pmetric.Metrics {
	c.zone = localZone(&c.opts)
	md := pmetric.NewMetrics()
	ts := pcommon.NewTimestampFromTime(b.Time)
	node := c.newResource(md, netip.Addr{}, "")
	type resource struct {
		local netip.Addr
		pod   string
	}
	resources := map[resource]*resourceMetrics{{}: node}
	for _, k := range c.store.sorted() {
		rm := resources[resource{k.local, k.pod}]
		if rm == nil {
			rm = c.newResource(md, k.local, k.pod)
			resources[resource{k.local, k.pod}] = rm
		}
		c.putPoint(rm.metric(c, k.metric), &k, c.store.series[k], ts)
	}
	c.emitSelf(node, b, ts)
	// Drop the node resource when it carries nothing.
	md.ResourceMetrics().RemoveIf(func(rm pmetric.ResourceMetrics) bool {
		return rm.ScopeMetrics().At(0).Metrics().Len() == 0
	})
	return md
}

// putPoint appends series s of key k to metric m.
func (c *Converter) putPoint(m pmetric.Metric, k *seriesKey, s *series, ts pcommon.Timestamp) {
	start := pcommon.NewTimestampFromTime(s.start)
	var attrs pcommon.Map
	switch metricKinds[k.metric] {
	case kindHistogram:
		dp := m.Histogram().DataPoints().AppendEmpty()
		dp.SetStartTimestamp(start)
		dp.SetTimestamp(ts)
		dp.SetCount(s.value)
		dp.SetSum(s.hist.sum)
		dp.ExplicitBounds().FromRaw(c.opts.Schema[k.metric].Bounds)
		dp.BucketCounts().FromRaw(s.hist.buckets)
		if h := s.hist; h.exTrace != [16]byte{} {
			ex := dp.Exemplars().AppendEmpty()
			ex.SetDoubleValue(h.exValue)
			ex.SetTimestamp(pcommon.NewTimestampFromTime(h.exTime))
			ex.SetTraceID(h.exTrace)
			ex.SetSpanID(h.exSpan)
		}
		attrs = dp.Attributes()
	default:
		dp := m.Sum().DataPoints().AppendEmpty()
		dp.SetStartTimestamp(start)
		dp.SetTimestamp(ts)
		dp.SetIntValue(int64(s.value))
		attrs = dp.Attributes()
	}
	c.putSeriesAttrs(attrs, k)
}

// putSeriesAttrs writes the attributes a series key holds.
func (c *Converter) putSeriesAttrs(m pcommon.Map, k *seriesKey) {
	attrs := c.opts.Metrics[k.metric].Attrs
	switch k.metric {
	case DropPackets, DropBytes:
		m.PutStr(AttrDropReason, k.cause)
	case FlowIO, FlowPackets:
	default:
		c.putPeerLevelAttrs(m, k, attrs)
		return
	}
	c.putFlowAttrs(m, k, attrs)
}

// putPeerLevelAttrs writes the attributes of the metrics of connections,
// DNS lookups and policy verdicts: their own, and the peer's.
func (c *Converter) putPeerLevelAttrs(m pcommon.Map, k *seriesKey, attrs Attrs) {
	switch k.metric {
	case DNSLookupDuration, DNSServerDuration:
		putDNSSeriesAttrs(m, k)
	case PolicyFlows, PolicyIO:
		putPolicyAttrs(m, k.policy, k.egress, k.finding)
	default:
		m.PutStr(AttrTCPRole, k.role.String())
		if k.metric == ConnsClosed {
			m.PutStr(AttrTCPCloseReason, k.result.String())
		}
		if k.metric == ResetsSent && k.cause != "" {
			m.PutStr(AttrTCPResetReason, k.cause)
		}
	}
	if attrs&WithPeerAddress != 0 {
		m.PutStr(AttrPeerAddress, k.peer.String())
		putPeer(m, c.opts.Peers, k.peer, attrs, c.zone, k.service)
		if k.service.IsValid() && attrs&WithPeerServiceName != 0 {
			putDialedService(m, c.opts.Peers, k.service)
		}
	}
}

// putFlowAttrs writes the attributes of the flow and drop metrics.
func (c *Converter) putFlowAttrs(m pcommon.Map, k *seriesKey, attrs Attrs) {
	if attrs&WithDirection != 0 {
		m.PutStr(AttrDirection, k.direction.String())
	}
	if attrs&WithTransport != 0 {
		m.PutStr(AttrTransport, Transport(k.proto))
	}
	if attrs&WithNetworkType != 0 {
		if k.v6 {
			m.PutStr(AttrNetworkType, "ipv6")
		} else {
			m.PutStr(AttrNetworkType, "ipv4")
		}
	}
	if attrs&WithPeerAddress != 0 {
		m.PutStr(AttrPeerAddress, k.peer.String())
		putPeer(m, c.opts.Peers, k.peer, attrs, c.zone, netip.Addr{})
	}
	if k.ports && attrs&WithPeerPort != 0 {
		m.PutInt(AttrPeerPort, int64(k.peerPort))
	}
	if k.ports && attrs&WithLocalPort != 0 {
		m.PutInt(AttrLocalPort, int64(k.localPort))
	}
	if attrs&WithInterface != 0 && k.iface != "" {
		m.PutStr(AttrInterface, k.iface)
	}
}

// newResource starts the resource of a local endpoint: a pod's address, a
// hostNetwork pod (pod, its UID), or the node.
func (c *Converter) newResource(md pmetric.Metrics, local netip.Addr, pod string) *resourceMetrics {
	rm := md.ResourceMetrics().AppendEmpty()
	putResource(rm.Resource().Attributes(), c.opts, local)
	putWorkloadResource(rm.Resource().Attributes(), c.opts, pod, "")
	putService(rm.Resource().Attributes(), c.opts, local, pod, "")
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(c.opts.ScopeName)
	sm.Scope().SetVersion(c.opts.ScopeVersion)
	return &resourceMetrics{scope: sm}
}

// emitSelf adds the receiver's own metrics to the node resource: the
// kernel's loss counters (cumulative since the kernel began counting, or
// this interval's part), the table's fill and the evicted series.
func (c *Converter) emitSelf(node *resourceMetrics, b *flow.Batch, ts pcommon.Timestamp) {
	start := pcommon.NewTimestampFromTime(c.start)
	if c.opts.Temporality == Delta {
		start = pcommon.NewTimestampFromTime(c.store.prev)
	}
	sum := func(id Metric, v uint64, reason string) {
		if !c.opts.Metrics[id].Enabled {
			return
		}
		dp := node.metric(c, id).Sum().DataPoints().AppendEmpty()
		dp.SetStartTimestamp(start)
		dp.SetTimestamp(ts)
		dp.SetIntValue(int64(v))
		if reason != "" {
			dp.Attributes().PutStr(AttrReason, reason)
		}
	}
	for r, cm := range counterMetrics {
		v := b.Counters[r].Packets
		if c.opts.Temporality == Delta {
			v -= c.prevCounts[r].Packets
		}
		sum(cm.metric, v, cm.reason)
	}
	gauge := func(id Metric, v int64) {
		if c.opts.Metrics[id].Enabled {
			dp := node.metric(c, id).Gauge().DataPoints().AppendEmpty()
			dp.SetTimestamp(ts)
			dp.SetIntValue(v)
		}
	}
	gauge(TableFlows, int64(c.flows))
	gauge(TableCapacity, int64(b.TableCapacity))
	if c.opts.Temporality == Cumulative {
		sum(SeriesEvicted, c.store.evicted, "")
	}
}

// putPolicyAttrs puts a NetworkPolicy verdict's attributes.
func putPolicyAttrs(m pcommon.Map, r flow.PolicyResult, egress bool, finding flow.PolicyFinding) {
	m.PutStr(AttrPolicyVerdict, r.String())
	if egress {
		m.PutStr(AttrPolicyDirection, "egress")
	} else {
		m.PutStr(AttrPolicyDirection, "ingress")
	}
	if finding != flow.FindingNone {
		m.PutStr(AttrPolicyFinding, finding.String())
	}
}
