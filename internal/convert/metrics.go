package convert

import (
	"net/netip"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// Temporality of the sums and histograms.
type Temporality int

const (
	Cumulative Temporality = iota
	Delta
)

// MetricOptions enable one metric and select its optional attributes.
type MetricOptions struct {
	Enabled bool
	Attrs   Attrs
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
	// Metrics enables each metric and selects its attributes.
	Metrics    [NumMetrics]MetricOptions
	FlowEvents bool
	// DropEvents: records of drops no flow record carries.
	DropEvents bool
	// DNSEvents: a record per DNS lookup.
	DNSEvents bool
	// DNSTimeout is how long an unanswered query waited (what a timeout
	// is observed as).
	DNSTimeout  time.Duration
	Temporality Temporality
	// SeriesIdleTimeout drops cumulative series not updated for this long
	// (0: never).
	SeriesIdleTimeout time.Duration
	// MaxSeries bounds the cumulative series kept, flow and connection
	// metrics together; the least recently updated are dropped first (0: no
	// bound).
	MaxSeries int
	// SpanSampling thins the spans (the zero value keeps all); kept spans
	// carry their threshold in tracestate (ot=th). Metrics are never
	// sampled.
	SpanSampling flow.SpanSampling
	// FlowLogSampling thins the flow log records by flow.FlowRandomness
	// (0 keeps all); kept records carry sampling.threshold and
	// sampling.randomness.
	FlowLogSampling flow.Threshold
}

// ResourceOptions enable resource attributes.
type ResourceOptions struct {
	K8sNodeName       bool
	K8sPodIP          bool
	K8sPodUID         bool
	ContainerID       bool
	ServiceName       bool
	ServiceNamespace  bool
	ServiceInstanceID bool
}

// DefaultOptions enable every metric at peer level, cumulative.
func DefaultOptions() Options {
	o := Options{
		Resource: ResourceOptions{K8sNodeName: true, K8sPodIP: true, K8sPodUID: true, ContainerID: true,
			ServiceName: true, ServiceNamespace: true, ServiceInstanceID: true},
		FlowEvents:        true,
		DropEvents:        true,
		DNSEvents:         true,
		DNSTimeout:        5 * time.Second,
		SeriesIdleTimeout: 5 * time.Minute,
		MaxSeries:         100000,
	}
	for id := range o.Metrics {
		o.Metrics[id] = MetricOptions{Enabled: true, Attrs: DefaultAttrs(Metric(id))}
	}
	return o
}

// Converter turns each batch into the signals, keeping the state of the
// metrics: one series store for the flow and the connection metrics. Not
// safe for concurrent use.
type Converter struct {
	opts       Options
	zone       string    // this node's, at the last emit (localZone)
	start      time.Time // when the kernel began counting
	store      *store
	conns      openConns
	prevCounts flow.Counters
	flows      int         // recorded since the last Metrics
	addrs      addrStrings // Logs'
}

// NewConverter returns a converter; start is when the kernel began counting.
func NewConverter(opts Options, start time.Time) *Converter {
	return &Converter{opts: opts, start: start, store: newStore(opts, start), conns: make(openConns)}
}

// SeriesCount is the number of series kept.
func (c *Converter) SeriesCount() int { return len(c.store.series) }

// Metrics returns the metrics of the batch: flows, connections, and the
// receiver's own (loss counters, table fill, evicted series).
func (c *Converter) Metrics(b *flow.Batch) pmetric.Metrics {
	c.RecordFlows(b.Flows, b.Time)
	c.recordConns(b.Time, b.Live, b.Closed)
	for i := range b.Drops {
		c.recordDrop(&b.Drops[i], b.Time)
	}
	for i := range b.DNS {
		c.recordDNS(&b.DNS[i], b.Time)
	}
	c.store.evict(b.Time)
	md := c.emit(b)
	c.store.endInterval(b.Time)
	c.prevCounts = b.Counters
	c.flows = 0
	return md
}

// RecordFlows adds flows of the interval that ends at now to the flow
// metrics, before its Metrics, which emits them: the receiver records each
// part of the interval's flows as it is drained.
func (c *Converter) RecordFlows(flows []flow.Flow, now time.Time) {
	for i := range flows {
		c.recordFlow(&flows[i], now)
	}
	c.flows += len(flows)
}

// Traces returns one span per closed connection.
func (c *Converter) Traces(conns []flow.Conn) ptrace.Traces { return Traces(c.opts, conns) }

// Logs returns one record per flow, the address strings kept across calls
// (at most maxAddrStrings).
func (c *Converter) Logs(b *flow.Batch) plog.Logs {
	if c.addrs == nil || len(c.addrs) > maxAddrStrings {
		c.addrs = make(addrStrings)
	}
	return logs(c.opts, b, c.addrs)
}

func (c *Converter) recordFlow(f *flow.Flow, now time.Time) {
	c.addPair([2]Metric{FlowIO, FlowPackets}, [2]uint64{f.Bytes, f.Packets}, now,
		func(id Metric, attrs Attrs) seriesKey { return flowKey(id, attrs, f) })
	if f.Policy.Result != flow.PolicyNotEvaluated {
		c.addPair([2]Metric{PolicyIO, PolicyFlows}, [2]uint64{f.Bytes, 1}, now, func(id Metric, attrs Attrs) seriesKey {
			k := seriesKey{metric: id, local: resourceAddr(f), policy: f.Policy.Result, egress: f.Policy.Egress, finding: f.Policy.Finding}
			if attrs&WithPeerAddress != 0 {
				k.peer = f.Served().Addr()
			}
			return k
		})
	}
}

// addPair adds bytes and packets to a (bytes, packets) pair of metrics,
// each enabled one at the series key makes for its attributes.
func (c *Converter) addPair(ids [2]Metric, v [2]uint64, now time.Time, key func(Metric, Attrs) seriesKey) {
	for i, id := range ids {
		if o := &c.opts.Metrics[id]; o.Enabled {
			c.store.add(key(id, o.Attrs), v[i], now)
		}
	}
}

// recordDrop adds a drop to the drop metrics, or a reset sent without a
// socket to the resets sent.
func (c *Converter) recordDrop(d *flow.Drop, now time.Time) {
	if d.Kind == flow.DropResetNoSocket {
		if c.opts.Metrics[ResetsSent].Enabled {
			k := c.connKey(ResetsSent, d.OnNode, d.Endpoint, flow.NoRole, d.Peer)
			k.cause = d.Reason
			c.store.add(k, d.Packets, now)
		}
		return
	}
	c.addPair([2]Metric{DropBytes, DropPackets}, [2]uint64{d.Bytes, d.Packets}, now,
		func(id Metric, attrs Attrs) seriesKey { return dropKey(id, attrs, d) })
}

// dropKey is the series of a drop in a drop metric.
func dropKey(id Metric, attrs Attrs, d *flow.Drop) seriesKey {
	k := seriesKey{metric: id, cause: d.Reason}
	if !d.OnNode {
		k.local = d.Endpoint
	} else {
		k.pod = d.PodUID
	}
	if attrs&WithDirection != 0 {
		k.direction = d.Direction
	}
	if attrs&WithTransport != 0 {
		k.proto = d.Protocol
	}
	if attrs&WithNetworkType != 0 {
		k.v6 = d.Peer.IsValid() && !d.Peer.Is4()
	}
	if attrs&WithPeerAddress != 0 {
		k.peer = d.Peer
	}
	if attrs&WithLocalPort != 0 && (d.Protocol == flow.ProtoTCP || d.Protocol == flow.ProtoUDP) {
		k.ports, k.localPort = true, d.Local.Port()
	}
	if attrs&WithInterface != 0 {
		k.iface = d.Interface
	}
	return k
}

// flowKey is the series of a flow in a flow metric.
func flowKey(id Metric, attrs Attrs, f *flow.Flow) seriesKey {
	k := seriesKey{metric: id, local: resourceAddr(f)}
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

// resourceAddr is the resource key of a flow (logs and metrics): its pod's
// address, or the invalid address for the node.
func resourceAddr(f *flow.Flow) netip.Addr {
	if f.OnNode {
		return netip.Addr{}
	}
	return f.Endpoint
}
