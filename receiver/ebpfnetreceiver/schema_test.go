package ebpfnetreceiver

import (
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"sigs.k8s.io/yaml"

	"github.com/ebpfnet/ebpfnet/internal/convert"
	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/k8s"
	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver/internal/metadata"
)

// declared is metadata.yaml (and histograms.yaml), read as plain YAML: the
// contract the converters' output is held to, independently of the code
// generated from it.
type declared struct {
	ResourceAttributes map[string]struct{} `json:"resource_attributes"`
	Attributes         map[string]struct {
		Enum []string `json:"enum"`
	} `json:"attributes"`
	Metrics    map[string]declaredMetric `json:"metrics"`
	Histograms map[string]declaredMetric `json:"histograms"`
	Events     map[string]struct {
		Attributes []string `json:"attributes"`
	} `json:"events"`
}

type declaredMetric struct {
	Description string `json:"description"`
	Unit        string `json:"unit"`
	Sum         *struct {
		Monotonic   bool   `json:"monotonic"`
		Temporality string `json:"aggregation_temporality"`
	} `json:"sum"`
	Gauge      *struct{} `json:"gauge"`
	Histogram  *struct{} `json:"histogram"`
	Attributes []string  `json:"attributes"`
}

func readDeclared(t *testing.T) declared {
	var d declared
	for _, f := range []string{"metadata.yaml", "histograms.yaml"} {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NoError(t, yaml.Unmarshal(raw, &d))
	}
	for n, m := range d.Histograms {
		d.Metrics[n] = m
	}
	return d
}

// everyPeer resolves every address: 10.96.* as a Service, others as a pod.
type everyPeer struct{}

func (everyPeer) Lookup(a netip.Addr) (k8s.Peer, bool) {
	if a.Is4() && a.As4()[1] == 96 {
		return k8s.Peer{Kind: k8s.KindService, Name: "web", Namespace: "shop"}, true
	}
	return k8s.Peer{Kind: k8s.KindPod, Name: "web-1", Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "web",
		ServiceName: "web", NodeName: "node-b", Zone: "zone-b"}, true
}

func (everyPeer) NodeZone(string) string { return "zone-a" }

func (e everyPeer) PodByUID(string) (k8s.Peer, bool) {
	return e.Lookup(netip.MustParseAddr("10.244.0.5"))
}

// everyMetricBatch has flows of every kind, open and closed connections of
// both roles ending every way, and every loss counter set.
func everyMetricBatch(at time.Time) *flow.Batch {
	pod, peer := netip.MustParseAddr("10.244.0.5"), netip.MustParseAddr("10.244.1.7")
	svc := netip.MustParseAddrPort("10.96.0.10:80")
	ap := netip.AddrPortFrom
	b := &flow.Batch{Time: at, TableCapacity: 1024}
	b.Flows = []flow.Flow{
		{Src: ap(pod, 40000), Dst: ap(peer, 80), Protocol: flow.ProtoTCP, Direction: flow.Transmit, Interface: "veth1", Bytes: 100, Packets: 2, TCPFlags: 0x12},
		{Src: ap(pod, 40001), Dst: svc, Protocol: flow.ProtoUDP, Direction: flow.Transmit, Interface: "veth1", Bytes: 60, Packets: 1, Backend: ap(peer, 53)},
		{Src: ap(peer, 8), Dst: ap(pod, 0), Protocol: flow.ProtoICMP, Direction: flow.Receive, Interface: "veth1", Bytes: 98, Packets: 1},
		{Src: ap(netip.MustParseAddr("192.0.2.1"), 22), Dst: ap(netip.MustParseAddr("192.0.2.9"), 5000), Protocol: flow.ProtoTCP, Direction: flow.Receive, OnNode: true, Interface: "eth0", Bytes: 40, Packets: 1},
	}
	for i := range b.Flows {
		b.Flows[i].Ifindex, b.Flows[i].Start, b.Flows[i].End = 7, at.Add(-time.Second), at
		if !b.Flows[i].OnNode {
			b.Flows[i].Endpoint = pod
		}
	}
	b.Flows[0].Conn = flow.ConnRef{TraceID: [16]byte{1}, SpanID: [8]byte{2}, SRTT: time.Millisecond}
	b.Live = []flow.LiveConn{{Cookie: 1, Role: flow.Client, Local: ap(pod, 40000), Remote: ap(peer, 80), Established: true, Retransmits: 2}}
	conn := func(cookie uint64, role flow.Role, result flow.Result) flow.Conn {
		c := flow.Conn{Cookie: cookie, Role: role, Result: result, Local: ap(pod, 40000+uint16(cookie)), Remote: ap(peer, 80),
			Start: at.Add(-time.Second), End: at, SRTT: time.Millisecond, Retransmits: 3}
		if result == flow.Closed || result == flow.Reset {
			c.Established = at.Add(-time.Second)
		}
		return c
	}
	b.Closed = []flow.Conn{conn(1, flow.Client, flow.Closed), conn(2, flow.Server, flow.Reset), conn(3, flow.Client, flow.Refused)}
	b.Closed[1].ResetsReceived, b.Closed[1].ResetsSent, b.Closed[1].ResetReason = 1, 1, "TCP_ABORT_ON_CLOSE"
	b.Closed[1].Drops = []flow.SocketDrop{{Reason: "NETFILTER_DROP", Packets: 2}}
	b.Drops = []flow.Drop{
		// On the first flow's record; the second has no flow (a record of
		// its own); a reset sent without a socket; the node's.
		{Kind: flow.DropPacket, Local: ap(pod, 40000), Peer: peer, Protocol: flow.ProtoTCP, Direction: flow.Transmit, Reason: "NETFILTER_DROP", Ifindex: 7, Interface: "veth1", Endpoint: pod, Packets: 3, Bytes: 180},
		{Kind: flow.DropPacket, Local: ap(pod, 9000), Peer: peer, Protocol: flow.ProtoUDP, Direction: flow.Receive, Reason: "SOCKET_RCVBUFF", Endpoint: pod, Packets: 5, Bytes: 500},
		{Kind: flow.DropResetNoSocket, Local: ap(pod, 81), Peer: peer, Protocol: flow.ProtoTCP, Direction: flow.Receive, Reason: "NO_SOCKET", Endpoint: pod, Packets: 1},
		{Kind: flow.DropPacket, Local: ap(netip.MustParseAddr("192.0.2.9"), 22), Peer: netip.MustParseAddr("192.0.2.1"), Protocol: flow.ProtoTCP, Direction: flow.Receive, Reason: "TCP_LISTEN_OVERFLOW", OnNode: true, Packets: 1, Bytes: 60},
	}
	flow.AttachDrops(b)
	resolver := netip.MustParseAddr("10.244.1.53")
	b.DNS = []flow.DNSLookup{
		{Side: flow.DNSClient, Client: ap(pod, 40053), Server: ap(resolver, 53), Protocol: flow.ProtoUDP, ID: 7, Start: at,
			Latency: time.Millisecond, Flags: 0x8180, Answers: 1, Sends: 1, Name: "web.shop.svc.cluster.local", QType: 1, QClass: 1, Endpoint: pod},
		{Side: flow.DNSClient, Client: ap(pod, 40054), Server: ap(resolver, 53), Protocol: flow.ProtoTCP, ID: 8, Start: at,
			Latency: time.Millisecond, Flags: 0x8183, Sends: 1, Name: "nope.shop.svc.cluster.local", QType: 28, QClass: 1, Endpoint: pod},
		{Side: flow.DNSClient, Client: ap(pod, 40055), Server: ap(resolver, 53), Protocol: flow.ProtoUDP, ID: 9, Start: at,
			TimedOut: true, Sends: 2, Name: "slow.example", QType: 1, QClass: 1, Endpoint: pod},
		{Side: flow.DNSServer, Client: ap(peer, 40056), Server: ap(pod, 53), Protocol: flow.ProtoUDP, ID: 10, Start: at,
			Latency: time.Millisecond, Flags: 0x8380, Sends: 1, Name: "big.example", QType: 16, QClass: 1, Endpoint: pod},
	}
	b.Flows[0].Policy = flow.PolicyVerdict{Result: flow.PolicyAllowed, Egress: true, Policies: []string{"shop/allow-web"}, Finding: flow.FindingAllowedDropped}
	b.Flows[1].Policy = flow.PolicyVerdict{Result: flow.PolicyDenied, Policies: []string{"shop/default-deny"}, Finding: flow.FindingDeniedDelivered}
	b.Flows[2].Policy = flow.PolicyVerdict{Result: flow.PolicyNone}
	for r := range b.Counters {
		b.Counters[r] = flow.Count{Packets: uint64(r) + 1, Bytes: 64}
	}
	return b
}

// TestOutputMatchesMetadata runs the converters as the receiver configures
// them, every attribute enabled, on a batch that exercises every metric and
// flow record attribute, and fails on anything metadata.yaml does not
// declare as emitted, or declares otherwise (description, unit, type,
// temporality, attribute set, enum value), and on a declared metric that is
// not emitted.
func TestOutputMatchesMetadata(t *testing.T) {
	d := readDeclared(t)
	cfg := createDefaultConfig().(*Config)
	for _, m := range []*[]metadata.EbpfnetFlowIoMetricAttributeKey{&cfg.Metrics.EbpfnetFlowIo.EnabledAttributes} {
		*m = nil
		for _, a := range metadata.MetricsInfo.EbpfnetFlowIo.Attributes {
			*m = append(*m, metadata.EbpfnetFlowIoMetricAttributeKey(a))
		}
	}
	opts := convertOptions(cfg, receivertest.NewNopSettings(metadata.Type), everyPeer{})
	schema, err := Schema()
	require.NoError(t, err)
	opts.Schema = schema
	conv := newTestConverter(opts)
	b := everyMetricBatch(time.Unix(1000, 0))
	md := conv.Metrics(b)

	emitted := map[string]bool{}
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		requireDeclaredResource(t, d, rms.At(i).Resource().Attributes())
		ms := rms.At(i).ScopeMetrics().At(0).Metrics()
		for j := 0; j < ms.Len(); j++ {
			m := ms.At(j)
			emitted[m.Name()] = true
			want, ok := d.Metrics[m.Name()]
			require.True(t, ok, "metric %s is emitted but not declared", m.Name())
			require.Equal(t, want.Description, m.Description(), m.Name())
			require.Equal(t, want.Unit, m.Unit(), m.Name())
			forPoints(t, m, want, func(attrs pcommon.Map) {
				for k, v := range attrs.All() {
					require.Contains(t, want.Attributes, k, "%s: attribute %s not declared for it", m.Name(), k)
					requireEnumValue(t, d, k, v.AsString())
				}
			})
		}
	}
	for name := range d.Metrics {
		require.True(t, emitted[name], "metric %s is declared but the batch did not make it emitted", name)
	}

	seen := requireDeclaredLogs(t, d, conv.Logs(b))
	for name := range d.Events {
		require.True(t, seen[name], "event %s is declared but the batch made no record of it", name)
	}
	// With flow log sampling, the kept records' attributes too.
	sampled := opts
	sampled.FlowLogSampling = flow.RatioThreshold(0.9)
	ld := convert.Logs(sampled, b)
	require.True(t, requireDeclaredLogs(t, d, ld)[convert.EventFlow])
	require.True(t, anyRecordHas(ld, convert.AttrSamplingThreshold))
	td := conv.Traces(b.Closed)
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		requireDeclaredResource(t, d, td.ResourceSpans().At(i).Resource().Attributes())
	}
}

// requireDeclaredLogs checks every record's event and attributes against
// the declarations and returns the events seen.
func requireDeclaredLogs(t *testing.T, d declared, ld plog.Logs) map[string]bool {
	require.NotZero(t, ld.LogRecordCount())
	seen := map[string]bool{}
	for i := 0; i < ld.ResourceLogs().Len(); i++ {
		rl := ld.ResourceLogs().At(i)
		requireDeclaredResource(t, d, rl.Resource().Attributes())
		lrs := rl.ScopeLogs().At(0).LogRecords()
		for j := 0; j < lrs.Len(); j++ {
			name := lrs.At(j).EventName()
			require.Contains(t, d.Events, name)
			seen[name] = true
			for k, v := range lrs.At(j).Attributes().All() {
				require.Contains(t, d.Events[name].Attributes, k, "record attribute %s not declared for the event %s", k, name)
				requireEnumValue(t, d, k, v.AsString())
			}
		}
	}
	return seen
}

func anyRecordHas(ld plog.Logs, key string) bool {
	for i := 0; i < ld.ResourceLogs().Len(); i++ {
		lrs := ld.ResourceLogs().At(i).ScopeLogs().At(0).LogRecords()
		for j := 0; j < lrs.Len(); j++ {
			if _, ok := lrs.At(j).Attributes().Get(key); ok {
				return true
			}
		}
	}
	return false
}

func requireDeclaredResource(t *testing.T, d declared, attrs pcommon.Map) {
	for k := range attrs.All() {
		require.Contains(t, d.ResourceAttributes, k, "resource attribute %s not declared", k)
	}
}

func requireEnumValue(t *testing.T, d declared, key, value string) {
	a, ok := d.Attributes[key]
	require.True(t, ok, "attribute %s not declared", key)
	if len(a.Enum) > 0 {
		require.True(t, slices.Contains(a.Enum, value), "%s=%q is not among its declared values %v", key, value, a.Enum)
	}
}

// forPoints checks the metric's type against its declaration and calls fn
// with each data point's attributes.
func forPoints(t *testing.T, m pmetric.Metric, want declaredMetric, fn func(pcommon.Map)) {
	switch m.Type() {
	case pmetric.MetricTypeSum:
		require.NotNil(t, want.Sum, "%s is a sum", m.Name())
		require.Equal(t, want.Sum.Monotonic, m.Sum().IsMonotonic(), m.Name())
		require.Equal(t, want.Sum.Temporality, map[pmetric.AggregationTemporality]string{
			pmetric.AggregationTemporalityCumulative: "cumulative", pmetric.AggregationTemporalityDelta: "delta",
		}[m.Sum().AggregationTemporality()], m.Name())
		for i := 0; i < m.Sum().DataPoints().Len(); i++ {
			fn(m.Sum().DataPoints().At(i).Attributes())
		}
	case pmetric.MetricTypeGauge:
		require.NotNil(t, want.Gauge, "%s is a gauge", m.Name())
		for i := 0; i < m.Gauge().DataPoints().Len(); i++ {
			fn(m.Gauge().DataPoints().At(i).Attributes())
		}
	case pmetric.MetricTypeHistogram:
		require.NotNil(t, want.Histogram, "%s is a histogram", m.Name())
		for i := 0; i < m.Histogram().DataPoints().Len(); i++ {
			fn(m.Histogram().DataPoints().At(i).Attributes())
		}
	default:
		t.Fatalf("%s: unexpected type %s", m.Name(), m.Type())
	}
}

func newTestConverter(opts convert.Options) *convert.Converter {
	return convert.NewConverter(opts, time.Unix(990, 0))
}

// declaredSpans is spans.yaml.
type declaredSpans struct {
	Spans struct {
		Attributes []string `json:"attributes"`
		Events     map[string]struct {
			Attributes []string `json:"attributes"`
		} `json:"events"`
	} `json:"spans"`
	Attrs map[string]struct {
		Enum []string `json:"enum"`
	} `json:"attributes"`
}

// TestSpansMatchDeclaration: every span, span attribute and span event the
// converters emit, on connections that end every way, is declared in
// spans.yaml (attributes there or in metadata.yaml).
func TestSpansMatchDeclaration(t *testing.T) {
	d := readDeclared(t)
	raw, err := os.ReadFile("spans.yaml")
	require.NoError(t, err)
	var s declaredSpans
	require.NoError(t, yaml.Unmarshal(raw, &s))
	var names struct {
		Spans map[string]any `json:"spans"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &names))
	for k, v := range s.Attrs {
		d.Attributes[k] = v
	}
	opts := convertOptions(createDefaultConfig().(*Config), receivertest.NewNopSettings(metadata.Type), everyPeer{})
	schema, err := Schema()
	require.NoError(t, err)
	opts.Schema = schema
	b := everyMetricBatch(time.Unix(1000, 0))
	b.Closed[0].PID, b.Closed[0].Comm, b.Closed[0].MinRTT = 7, "curl", time.Microsecond
	b.Closed[0].RetransmitBursts = []flow.RetransmitBurst{{Start: time.Unix(999, 0), Count: 3}}
	b.Closed[2].SockErr = 111
	td := newTestConverter(opts).Traces(b.Closed)
	require.Equal(t, len(b.Closed), td.SpanCount())
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		ss := td.ResourceSpans().At(i).ScopeSpans().At(0).Spans()
		for j := 0; j < ss.Len(); j++ {
			sp := ss.At(j)
			require.Contains(t, names.Spans, sp.Name())
			for k, v := range sp.Attributes().All() {
				require.Contains(t, s.Spans.Attributes, k, "span attribute %s not declared in spans.yaml", k)
				requireEnumValue(t, d, k, v.AsString())
			}
			for e := 0; e < sp.Events().Len(); e++ {
				ev, ok := s.Spans.Events[sp.Events().At(e).Name()]
				require.True(t, ok, "span event %q not declared", sp.Events().At(e).Name())
				for k := range sp.Events().At(e).Attributes().All() {
					require.Contains(t, ev.Attributes, k)
				}
			}
		}
	}
}

// TestDefaultRecordsPerCallFit4MiB: a call of the default
// max_records_per_call flow records or spans, at their largest (IPv6,
// every attribute a record can carry, each of a pod of its own, every span
// event), is at most half of what a stock OTLP receiver takes (4 MiB).
func TestDefaultRecordsPerCallFit4MiB(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	opts := convertOptions(cfg, receivertest.NewNopSettings(metadata.Type), everyPeer{})
	schema, err := Schema()
	require.NoError(t, err)
	opts.Schema = schema
	at := time.Unix(1000, 0)
	tmpl := everyMetricBatch(at)
	b := &flow.Batch{Time: at, TableCapacity: 1024}
	for i := 0; i < cfg.MaxRecordsPerCall; i++ {
		f := tmpl.Flows[0]
		pod := netip.AddrFrom16([16]byte{0xfd, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, byte(i >> 8), byte(i)})
		f.Src, f.Dst, f.Endpoint = netip.AddrPortFrom(pod, 65535), netip.AddrPortFrom(pod.Prev(), 65535), pod
		f.Interface, f.Backend = "veth0123456789a", netip.AddrPortFrom(pod.Next(), 65535)
		b.Flows = append(b.Flows, f)
		c := tmpl.Closed[1]
		c.Local, c.Remote = f.Src, f.Dst
		c.PID, c.Comm, c.SockErr = 1<<22, "executable-name", 111
		for j := 0; j < 4; j++ {
			c.RetransmitBursts = append(c.RetransmitBursts, flow.RetransmitBurst{Start: at, Count: 1 << 20})
		}
		b.Closed = append(b.Closed, c)
	}
	conv := newTestConverter(opts)
	ld := conv.Logs(b)
	require.Equal(t, cfg.MaxRecordsPerCall, ld.LogRecordCount())
	logBytes := (&plog.ProtoMarshaler{}).LogsSize(ld)
	td := conv.Traces(b.Closed)
	require.Equal(t, cfg.MaxRecordsPerCall, td.SpanCount())
	spanBytes := (&ptrace.ProtoMarshaler{}).TracesSize(td)
	t.Logf("%d flow records: %d bytes (%d per record); %d spans: %d bytes (%d per span)", cfg.MaxRecordsPerCall,
		logBytes, logBytes/cfg.MaxRecordsPerCall, cfg.MaxRecordsPerCall, spanBytes, spanBytes/cfg.MaxRecordsPerCall)
	// Half of 4 MiB: the rest is for what processors add (k8s_attributes
	// adds ~10 resource attributes, here to every record).
	require.Less(t, logBytes, 2<<20, "flow records: under 2 MiB")
	require.Less(t, spanBytes, 2<<20, "spans: under 2 MiB")
}
