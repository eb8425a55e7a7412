package convert

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// Temporality of the flow sums.
type Temporality int

const (
	Cumulative Temporality = iota
	Delta
)

// MetricOptions enable one flow metric and select its attributes.
type MetricOptions struct {
	Enabled bool
	Attrs   FlowAttrs
}

// Options configure the converters.
type Options struct {
	// Schema defines the metrics (from metadata.yaml).
	Schema *Schema
	// Peers adds the peer's Kubernetes identity (nil: off).
	Peers        PeerResolver
	NodeName     string
	ScopeName    string
	ScopeVersion string
	Resource     ResourceOptions
	FlowIO       MetricOptions
	FlowPackets  MetricOptions
	Uncounted    bool
	// ConnsUnreported enables ebpfnet.connections.unreported.
	ConnsUnreported bool
	// StateChangesMissed enables ebpfnet.tcp.state_changes.missed.
	StateChangesMissed bool
	TableFlows         bool
	TableCapacity      bool
	SeriesEvicted      bool
	FlowEvents         bool
	Temporality        Temporality
	// SeriesIdleTimeout drops cumulative series not updated for this long.
	SeriesIdleTimeout time.Duration
	// MaxSeries bounds the cumulative series kept; the least recently
	// updated are dropped first.
	MaxSeries int
}

// ResourceOptions enable resource attributes.
type ResourceOptions struct {
	K8sNodeName bool
	K8sPodIP    bool
	K8sPodUID   bool
	ContainerID bool
}

// DefaultOptions enable everything at peer level, cumulative.
func DefaultOptions() Options {
	return Options{
		Resource:           ResourceOptions{K8sNodeName: true, K8sPodIP: true, K8sPodUID: true, ContainerID: true},
		FlowIO:             MetricOptions{Enabled: true, Attrs: DefaultFlowAttrs},
		FlowPackets:        MetricOptions{Enabled: true, Attrs: DefaultFlowAttrs},
		Uncounted:          true,
		ConnsUnreported:    true,
		StateChangesMissed: true,
		TableFlows:         true,
		TableCapacity:      true,
		SeriesEvicted:      true,
		FlowEvents:         true,
		SeriesIdleTimeout:  5 * time.Minute,
		MaxSeries:          100000,
	}
}

const (
	metricIO uint8 = iota
	metricPackets
)

// seriesKey identifies one data point series. Fields of attributes that are
// not selected stay zero, so flows differing only in them share a series.
type seriesKey struct {
	metric    uint8
	local     netip.Addr // invalid: the node resource
	direction flow.Direction
	proto     uint8
	v6        bool
	peer      netip.Addr
	ports     bool // the flow has transport ports
	peerPort  uint16
	localPort uint16
	iface     string
}

type series struct {
	value uint64
	start time.Time // start of the cumulative series
	last  time.Time // last batch that updated it
}

// Metrics converts batches to pmetric.Metrics, keeping the cumulative state
// of each series. Not safe for concurrent use.
type Metrics struct {
	opts      Options
	start     time.Time // when counting began (datapath load)
	prev      time.Time // end of the previous batch
	series    map[seriesKey]*series
	delta     map[seriesKey]*series
	evicted   uint64
	prevCount flow.Counters
}

// NewMetrics returns a converter; start is when the kernel began counting.
func NewMetrics(opts Options, start time.Time) *Metrics {
	return &Metrics{
		opts:   opts,
		start:  start,
		prev:   start,
		series: make(map[seriesKey]*series),
		delta:  make(map[seriesKey]*series),
	}
}

// SeriesCount is the number of cumulative series kept.
func (c *Metrics) SeriesCount() int { return len(c.series) }

func (c *Metrics) key(metric uint8, attrs FlowAttrs, f *flow.Flow) seriesKey {
	k := seriesKey{metric: metric, local: resourceAddr(f)}
	if attrs&WithDirection != 0 {
		k.direction = f.Direction
	}
	if attrs&WithTransport != 0 {
		k.proto = f.Protocol
	}
	if attrs&WithNetworkType != 0 {
		k.v6 = !f.Src.Addr().Is4()
	}
	if attrs&WithPeerAddress != 0 {
		k.peer = f.Peer().Addr()
	}
	if f.HasPorts() {
		k.ports = attrs&(WithPeerPort|WithLocalPort) != 0
		if attrs&WithPeerPort != 0 {
			k.peerPort = f.Peer().Port()
		}
		if attrs&WithLocalPort != 0 {
			k.localPort = f.Local().Port()
		}
	}
	if attrs&WithInterface != 0 {
		k.iface = f.Interface
	}
	return k
}

func (c *Metrics) add(m map[seriesKey]*series, k seriesKey, v uint64, now, start time.Time) {
	s := m[k]
	if s == nil {
		s = &series{start: start}
		m[k] = s
	}
	s.value += v
	s.last = now
}

// Convert returns the metrics of one batch.
func (c *Metrics) Convert(b *flow.Batch) pmetric.Metrics {
	target := c.series
	if c.opts.Temporality == Delta {
		clear(c.delta)
		target = c.delta
	}
	for i := range b.Flows {
		f := &b.Flows[i]
		if c.opts.FlowIO.Enabled {
			c.add(target, c.key(metricIO, c.opts.FlowIO.Attrs, f), f.Bytes, b.Time, c.prev)
		}
		if c.opts.FlowPackets.Enabled {
			c.add(target, c.key(metricPackets, c.opts.FlowPackets.Attrs, f), f.Packets, b.Time, c.prev)
		}
	}
	if c.opts.Temporality == Cumulative {
		c.evict(b.Time)
	}
	md := c.emit(target, b)
	c.prev = b.Time
	c.prevCount = b.Counters
	return md
}

// evict drops idle series and bounds their number.
func (c *Metrics) evict(now time.Time) {
	if c.opts.SeriesIdleTimeout > 0 {
		for k, s := range c.series {
			if now.Sub(s.last) > c.opts.SeriesIdleTimeout {
				delete(c.series, k)
				c.evicted++
			}
		}
	}
	if c.opts.MaxSeries <= 0 || len(c.series) <= c.opts.MaxSeries {
		return
	}
	keys := make([]seriesKey, 0, len(c.series))
	for k := range c.series {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b seriesKey) int { return c.series[a].last.Compare(c.series[b].last) })
	for _, k := range keys[:len(keys)-c.opts.MaxSeries] {
		delete(c.series, k)
		c.evicted++
	}
}

type resourceMetrics struct {
	metrics [2]pmetric.Metric // by metricIO / metricPackets
	scope   pmetric.ScopeMetrics
}

func (c *Metrics) emit(set map[seriesKey]*series, b *flow.Batch) pmetric.Metrics {
	md := pmetric.NewMetrics()
	ts := pcommon.NewTimestampFromTime(b.Time)
	temporality := pmetric.AggregationTemporalityCumulative
	if c.opts.Temporality == Delta {
		temporality = pmetric.AggregationTemporalityDelta
	}

	// Sorted for stable output: node first, then by address.
	keys := make([]seriesKey, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareSeries)

	node := c.newResource(md, netip.Addr{})
	resources := map[netip.Addr]*resourceMetrics{{}: node}
	for _, k := range keys {
		s := set[k]
		rm := resources[k.local]
		if rm == nil {
			rm = c.newResource(md, k.local)
			resources[k.local] = rm
		}
		m := rm.metrics[k.metric]
		if m == (pmetric.Metric{}) {
			m = rm.scope.Metrics().AppendEmpty()
			if k.metric == metricIO {
				c.opts.Schema.define(m, FlowIO)
			} else {
				c.opts.Schema.define(m, FlowPackets)
			}
			sum := m.SetEmptySum()
			sum.SetIsMonotonic(true)
			sum.SetAggregationTemporality(temporality)
			rm.metrics[k.metric] = m
		}
		dp := m.Sum().DataPoints().AppendEmpty()
		dp.SetStartTimestamp(pcommon.NewTimestampFromTime(s.start))
		dp.SetTimestamp(ts)
		dp.SetIntValue(int64(s.value))
		attrs := c.opts.FlowIO.Attrs
		if k.metric == metricPackets {
			attrs = c.opts.FlowPackets.Attrs
		}
		putSeriesAttrs(dp.Attributes(), attrs, &k, c.opts.Peers)
	}
	c.emitSelf(node.scope, b, ts, temporality)
	// Drop the node resource when it carries nothing.
	md.ResourceMetrics().RemoveIf(func(rm pmetric.ResourceMetrics) bool {
		return rm.ScopeMetrics().At(0).Metrics().Len() == 0
	})
	return md
}

func compareSeries(a, b seriesKey) int {
	if c := cmp.Compare(boolInt(a.local.IsValid()), boolInt(b.local.IsValid())); c != 0 {
		return c
	}
	if c := a.local.Compare(b.local); c != 0 {
		return c
	}
	if c := cmp.Compare(a.metric, b.metric); c != 0 {
		return c
	}
	if c := cmp.Compare(a.direction, b.direction); c != 0 {
		return c
	}
	if c := a.peer.Compare(b.peer); c != 0 {
		return c
	}
	if c := cmp.Compare(a.proto, b.proto); c != 0 {
		return c
	}
	if c := cmp.Compare(a.peerPort, b.peerPort); c != 0 {
		return c
	}
	if c := cmp.Compare(a.localPort, b.localPort); c != 0 {
		return c
	}
	return cmp.Compare(a.iface, b.iface)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func putSeriesAttrs(m pcommon.Map, attrs FlowAttrs, k *seriesKey, peers PeerResolver) {
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
		putPeer(m, peers, k.peer)
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

func (c *Metrics) newResource(md pmetric.Metrics, local netip.Addr) *resourceMetrics {
	rm := md.ResourceMetrics().AppendEmpty()
	putResource(rm.Resource().Attributes(), c.opts, local)
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(c.opts.ScopeName)
	sm.Scope().SetVersion(c.opts.ScopeVersion)
	return &resourceMetrics{scope: sm}
}

// putResource writes the attributes of the local endpoint's resource: a pod
// (by its address) or, for an invalid address, the node.
func putResource(m pcommon.Map, opts Options, local netip.Addr) {
	if opts.Resource.K8sNodeName && opts.NodeName != "" {
		m.PutStr(AttrK8sNodeName, opts.NodeName)
	}
	if local.IsValid() && opts.Resource.K8sPodIP {
		m.PutStr(AttrK8sPodIP, local.String())
	}
}

// putWorkloadResource adds what a socket's cgroup says (spans).
func putWorkloadResource(m pcommon.Map, opts Options, podUID, containerID string) {
	if podUID != "" && opts.Resource.K8sPodUID {
		m.PutStr(AttrK8sPodUID, podUID)
	}
	if containerID != "" && opts.Resource.ContainerID {
		m.PutStr(AttrContainerID, containerID)
	}
}

// emitSelf adds the receiver's own metrics to the node resource.
func (c *Metrics) emitSelf(sm pmetric.ScopeMetrics, b *flow.Batch, ts pcommon.Timestamp, temporality pmetric.AggregationTemporality) {
	start := pcommon.NewTimestampFromTime(c.start)
	if c.opts.Temporality == Delta {
		start = pcommon.NewTimestampFromTime(c.prev)
	}
	reasons := func(id Metric, from, to int, withReason bool) {
		m := sm.Metrics().AppendEmpty()
		c.opts.Schema.define(m, id)
		sum := m.SetEmptySum()
		sum.SetIsMonotonic(true)
		sum.SetAggregationTemporality(temporality)
		for r := from; r < to; r++ {
			if withReason && flow.Reason(r) == flow.ReasonStateChangeMissed {
				continue // its own metric (below)
			}
			v := b.Counters[r].Packets
			if c.opts.Temporality == Delta {
				v -= c.prevCount[r].Packets
			}
			dp := sum.DataPoints().AppendEmpty()
			dp.SetStartTimestamp(start)
			dp.SetTimestamp(ts)
			dp.SetIntValue(int64(v))
			if withReason {
				dp.Attributes().PutStr(AttrReason, reasonNames[r])
			}
		}
	}
	if c.opts.Uncounted {
		reasons(Uncounted, 0, int(flow.ReasonConnStateFull), true)
	}
	if c.opts.ConnsUnreported {
		reasons(ConnsUnreported, int(flow.ReasonConnStateFull), flow.NumReasons, true)
	}
	if c.opts.StateChangesMissed {
		reasons(StateChangesMissed, int(flow.ReasonStateChangeMissed), int(flow.ReasonStateChangeMissed)+1, false)
	}
	gauge := func(id Metric, v int64) {
		m := sm.Metrics().AppendEmpty()
		c.opts.Schema.define(m, id)
		dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
		dp.SetTimestamp(ts)
		dp.SetIntValue(v)
	}
	if c.opts.TableFlows {
		gauge(TableFlows, int64(len(b.Flows)))
	}
	if c.opts.TableCapacity {
		gauge(TableCapacity, int64(b.TableCapacity))
	}
	if c.opts.SeriesEvicted && c.opts.Temporality == Cumulative {
		m := sm.Metrics().AppendEmpty()
		c.opts.Schema.define(m, SeriesEvicted)
		sum := m.SetEmptySum()
		sum.SetIsMonotonic(true)
		sum.SetAggregationTemporality(temporality)
		dp := sum.DataPoints().AppendEmpty()
		dp.SetStartTimestamp(start)
		dp.SetTimestamp(ts)
		dp.SetIntValue(int64(c.evicted))
	}
}
