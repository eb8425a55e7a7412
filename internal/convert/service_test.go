package convert

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/k8s"
)

// TestServiceNames: every resource of every signal names its service; a
// pod of this node the informers know is left to k8s_attributes (which
// never replaces a set service.name); client spans name their peer's
// service the way the peer's own resource is named.
func TestServiceNames(t *testing.T) {
	svcIP := netip.MustParseAddr("10.96.0.10")
	other := netip.MustParseAddr("10.244.3.30")
	opts := testOptions()
	opts.Peers = fakePeers{
		pod:   {Kind: k8s.KindPod, Name: "web-1", Namespace: "shop", NodeName: "node-a", OTelService: "web", OTelNamespace: "shop"},
		peer:  {Kind: k8s.KindPod, Name: "db-0", Namespace: "shop", NodeName: "node-b", OTelService: "db", OTelNamespace: "store"},
		svcIP: {Kind: k8s.KindService, Name: "api", Namespace: "shop", OTelService: "api", OTelNamespace: "shop"},
	}
	service := func(m pcommon.Map) [3]string {
		var out [3]string
		for i, k := range []string{AttrServiceName, AttrServiceNamespace, AttrServiceInstanceID} {
			if v, ok := m.Get(k); ok {
				out[i] = v.Str()
			}
		}
		return out
	}
	b := &flow.Batch{Time: t0.Add(10 * time.Second), TableCapacity: 1024, Flows: []flow.Flow{
		podFlow(ap(pod, 40000), ap(peer, 5432), flow.ProtoTCP, flow.Transmit, 100, 1, t0), // known, this node
		podFlow(ap(peer, 40000), ap(ext, 443), flow.ProtoTCP, flow.Transmit, 100, 1, t0),  // known, another node
		podFlow(ap(other, 40000), ap(ext, 443), flow.ProtoTCP, flow.Transmit, 100, 1, t0), // unknown
	}}
	want := map[string][3]string{
		pod.String():   {"", "", "shop.web-1"},
		peer.String():  {"db", "store", "shop.db-0"},
		other.String(): {other.String(), "", other.String()},
		"":             {"node-a", "", "node-a"}, // the node: the receiver's own metrics
	}
	got := map[string][3]string{}
	md := NewConverter(opts, t0).Metrics(b)
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		a := md.ResourceMetrics().At(i).Resource().Attributes()
		got[str(a, AttrK8sPodIP)] = service(a)
	}
	require.Equal(t, want, got, "metrics")
	delete(want, "")
	got = map[string][3]string{}
	ld := Logs(opts, b)
	for i := 0; i < ld.ResourceLogs().Len(); i++ {
		a := ld.ResourceLogs().At(i).Resource().Attributes()
		got[str(a, AttrK8sPodIP)] = service(a)
	}
	require.Equal(t, want, got, "logs")

	// Spans: host processes by executable, a pod's socket on the node by its
	// pod (left to k8s_attributes), the node's server sockets by the node.
	conn := func(role flow.Role, local, remote netip.AddrPort, onNode bool, comm, podUID string) flow.Conn {
		c := flow.Conn{Role: role, Local: local, Remote: remote, Start: t0, Established: t0.Add(time.Millisecond),
			End: t0.Add(time.Second), ClientISN: uint32(local.Port()), ServerISN: 2, OnNode: onNode, Comm: comm, PodUID: podUID}
		if comm != "" {
			c.PID = 42
		}
		c.TraceID, c.SpanID, c.ParentSpanID = flow.ConnIDs(&c)
		return c
	}
	failed := conn(flow.Client, ap(pod, 40003), ap(other, 80), false, "", "")
	failed.Result = flow.Refused
	td := Traces(opts, []flow.Conn{
		conn(flow.Client, ap(node, 40001), ap(peer, 5432), true, "curl", ""),
		conn(flow.Client, ap(node, 40002), ap(svcIP, 80), true, "wget", ""),
		conn(flow.Server, ap(node, 22), ap(ext, 50000), true, "", ""),
		conn(flow.Client, ap(node, 40004), ap(ext, 443), true, "", "web-1"), // hostNetwork pod web-1
		failed,
	})
	type span struct {
		service     [3]string
		peerService string
	}
	gotSpans := map[uint16]span{}
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		spans := rs.ScopeSpans().At(0).Spans()
		for j := 0; j < spans.Len(); j++ {
			s := spans.At(j)
			ps, ok := s.Attributes().Get(AttrPeerService)
			require.Equal(t, s.Kind() == ptrace.SpanKindClient, ok, "peer.service on client spans only")
			gotSpans[uint16(s.Attributes().AsRaw()[AttrLocalPortAttr].(int64))] = span{service(rs.Resource().Attributes()), ps.Str()}
		}
	}
	require.Equal(t, map[uint16]span{
		40001: {[3]string{"curl", "", "node-a"}, "db"},
		40002: {[3]string{"wget", "", "node-a"}, "api"},
		22:    {[3]string{"node-a", "", "node-a"}, ""},
		40004: {[3]string{"", "", "shop.web-1"}, ext.String()},
		40003: {[3]string{"", "", "shop.web-1"}, other.String()}, // a failed connect: a named virtual node
	}, gotSpans)

	// Without Kubernetes (make run): every resource by the receiver.
	opts.Peers = nil
	td = Traces(opts, []flow.Conn{failed})
	rs := td.ResourceSpans().At(0)
	require.Equal(t, [3]string{pod.String(), "", pod.String()}, service(rs.Resource().Attributes()))
	require.Equal(t, other.String(), str(rs.ScopeSpans().At(0).Spans().At(0).Attributes(), AttrPeerService))
}

func str(m pcommon.Map, k string) string {
	if v, ok := m.Get(k); ok {
		return v.AsString()
	}
	return ""
}

// TestCrossZone: ebpfnet.cross_zone says whether the peer's zone is not
// this node's, on metric points, flow records and spans; absent when
// either zone is unknown.
func TestCrossZone(t *testing.T) {
	same, unknownZone := netip.MustParseAddr("10.244.1.11"), netip.MustParseAddr("10.244.1.12")
	opts := testOptions() // node-a, in zone-a (fakePeers.NodeZone)
	opts.Peers = fakePeers{
		peer:        {Kind: k8s.KindPod, Name: "db-0", Namespace: "shop", NodeName: "node-b", Zone: "zone-b"},
		same:        {Kind: k8s.KindPod, Name: "web-2", Namespace: "shop", NodeName: "node-a", Zone: "zone-a"},
		unknownZone: {Kind: k8s.KindPod, Name: "job-1", Namespace: "shop", NodeName: "node-c"},
	}
	want := map[string]any{peer.String(): true, same.String(): false, unknownZone.String(): nil, ext.String(): nil}
	b := &flow.Batch{Time: t0.Add(10 * time.Second), TableCapacity: 1024}
	for i, a := range []netip.Addr{peer, same, unknownZone, ext} {
		b.Flows = append(b.Flows, podFlow(ap(pod, uint16(40000+i)), ap(a, 443), flow.ProtoTCP, flow.Transmit, 100, 1, t0))
	}
	crossing := func(m pcommon.Map) any {
		if v, ok := m.Get(AttrCrossZone); ok {
			return v.Bool()
		}
		return nil
	}
	got := map[string]any{}
	forMetric(NewConverter(opts, t0).Metrics(b), MetricFlowIO, func(m pmetric.Metric) {
		for j := 0; j < m.Sum().DataPoints().Len(); j++ {
			a := m.Sum().DataPoints().At(j).Attributes()
			got[str(a, AttrPeerAddress)] = crossing(a)
		}
	})
	require.Equal(t, want, got, "flow metric")
	got = map[string]any{}
	recs := Logs(opts, b).ResourceLogs().At(0).ScopeLogs().At(0).LogRecords()
	for j := 0; j < recs.Len(); j++ {
		got[str(recs.At(j).Attributes(), "destination.address")] = crossing(recs.At(j).Attributes())
	}
	require.Equal(t, want, got, "flow log")
	c := flow.Conn{Role: flow.Client, Local: ap(pod, 40010), Remote: ap(peer, 5432), Start: t0, Established: t0, End: t0.Add(time.Second)}
	c.TraceID, c.SpanID, c.ParentSpanID = flow.ConnIDs(&c)
	require.Equal(t, true, crossing(Traces(opts, []flow.Conn{c}).ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes()), "span")
}
