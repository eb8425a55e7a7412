package convert

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/k8s"
)

type fakePeers map[netip.Addr]k8s.Peer

func (f fakePeers) Lookup(a netip.Addr) (k8s.Peer, bool) { p, ok := f[a]; return p, ok }

// NodeZone: node-a is in zone-a.
func (f fakePeers) NodeZone(node string) string {
	if node == "node-a" {
		return "zone-a"
	}
	return ""
}

// PodByUID finds a pod whose Name is uid (the fakes' pods are named so).
func (f fakePeers) PodByUID(uid string) (k8s.Peer, bool) {
	for _, p := range f {
		if p.Kind == k8s.KindPod && p.Name == uid {
			return p, true
		}
	}
	return k8s.Peer{}, false
}

// TestPeerAttributesOnEverySignal: one naming scheme for the peer on metric
// data points, connection metric points, spans and flow log records; an
// unresolved peer gets none.
func TestPeerAttributesOnEverySignal(t *testing.T) {
	svcIP := netip.MustParseAddr("10.96.0.10")
	opts := testOptions()
	opts.Peers = fakePeers{
		peer:  {Kind: k8s.KindPod, Name: "db-0", Namespace: "shop", WorkloadKind: "StatefulSet", WorkloadName: "db", NodeName: "node-b", Zone: "zone-b", ServiceName: "db", ServiceNamespace: "shop"},
		svcIP: {Kind: k8s.KindService, Name: "web", Namespace: "shop"},
	}
	wantPod := map[string]any{AttrPeerKind: "pod", AttrPeerPodName: "db-0", AttrPeerNamespace: "shop", AttrPeerWorkloadKind: "StatefulSet",
		AttrPeerWorkloadName: "db", AttrPeerNodeName: "node-b", AttrPeerZone: "zone-b", AttrPeerServiceName: "db"}
	wantSvc := map[string]any{AttrPeerKind: "service", AttrPeerServiceName: "web", AttrPeerNamespace: "shop"}
	check := func(what string, m pcommon.Map, want map[string]any) {
		t.Helper()
		got := map[string]any{}
		m.Range(func(k string, v pcommon.Value) bool {
			if len(k) > 5 && k[:5] == "peer." && k != AttrPeerService { // TestServiceNames
				got[k] = v.AsRaw()
			}
			return true
		})
		require.Equal(t, want, got, what)
	}

	b := &flow.Batch{Time: t0.Add(10 * time.Second), TableCapacity: 1024, Flows: []flow.Flow{
		podFlow(ap(pod, 40000), ap(peer, 5432), flow.ProtoTCP, flow.Transmit, 100, 1, t0),
		podFlow(ap(ext, 443), ap(pod, 40001), flow.ProtoTCP, flow.Receive, 100, 1, t0),
	}}
	md := NewConverter(opts, t0).Metrics(b)
	seen := 0
	forMetric(md, MetricFlowIO, func(m pmetric.Metric) {
		pts := m.Sum().DataPoints()
		for j := 0; j < pts.Len(); j++ {
			a := pts.At(j).Attributes()
			addr, _ := a.Get(AttrPeerAddress)
			if addr.Str() == peer.String() {
				check("flow metric, resolved peer", a, wantPod)
			} else {
				check("flow metric, unresolved peer", a, map[string]any{})
			}
			seen++
		}
	})
	require.Equal(t, 2, seen)

	ld := Logs(opts, b)
	recs := ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords()
	require.Equal(t, 2, recs.Len())
	check("flow log, resolved peer", recs.At(0).Attributes(), wantPod)
	check("flow log, unresolved peer", recs.At(1).Attributes(), map[string]any{})

	// A client that dialed a ClusterIP: its socket's peer is the Service.
	c := flow.Conn{Role: flow.Client, Local: ap(pod, 40002), Remote: ap(svcIP, 80), Start: t0, Established: t0.Add(time.Millisecond),
		End: t0.Add(time.Second), ClientISN: 1, ServerISN: 2}
	c.TraceID, c.SpanID, c.ParentSpanID = flow.ConnIDs(&c)
	td := Traces(opts, []flow.Conn{c})
	check("span", td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes(), wantSvc)

	// A socket-level load balancer rewrote the ClusterIP to the backend pod:
	// server.* is what the client dialed, the peer is the backend, and the
	// Service is named from the dialed address.
	lb := flow.Conn{Role: flow.Client, Local: ap(pod, 40003), Remote: ap(peer, 5432), Dialed: ap(svcIP, 80), Start: t0,
		Established: t0.Add(time.Millisecond), End: t0.Add(time.Second), ClientISN: 3, ServerISN: 4}
	lb.TraceID, lb.SpanID, lb.ParentSpanID = flow.ConnIDs(&lb)
	a := Traces(opts, []flow.Conn{lb}).ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes()
	wantLB := map[string]any{}
	for k, v := range wantPod {
		wantLB[k] = v
	}
	wantLB[AttrPeerServiceName], wantLB[AttrPeerServiceNamespace] = "web", "shop"
	check("span through a socket LB", a, wantLB)
	hasValues(t, a, map[string]any{AttrServerAddress: svcIP.String(), AttrServerPort: int64(80), AttrPeerAddr: peer.String(), AttrPeerPortAttr: int64(5432)})

	// kube-proxy DNATed the ClusterIP in the node: the socket kept it
	// (Remote, also what connect4 recorded), conntrack named the backend
	// (Backend): the same attributes as through a socket LB.
	nat := flow.Conn{Role: flow.Client, Local: ap(pod, 40005), Remote: ap(svcIP, 80), Dialed: ap(svcIP, 80), Backend: ap(peer, 5432),
		Start: t0, Established: t0.Add(time.Millisecond), End: t0.Add(time.Second), ClientISN: 5, ServerISN: 6}
	nat.TraceID, nat.SpanID, nat.ParentSpanID = flow.ConnIDs(&nat)
	for _, withDialed := range []bool{true, false} {
		c := nat
		if !withDialed { // connect4 not attached
			c.Dialed = netip.AddrPort{}
		}
		a := Traces(opts, []flow.Conn{c}).ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes()
		check("span through the node's NAT", a, wantLB)
		hasValues(t, a, map[string]any{AttrServerAddress: svcIP.String(), AttrServerPort: int64(80), AttrPeerAddr: peer.String(), AttrPeerPortAttr: int64(5432)})
	}

	// The same for a UDP flow (its socket's sendmsg joined by
	// flow.DialedIndex): the flow log names the dialed Service.
	u := podFlow(ap(pod, 40004), ap(peer, 53), flow.ProtoUDP, flow.Transmit, 60, 1, t0)
	u.Dialed = ap(svcIP, 53)
	a = Logs(opts, &flow.Batch{Time: t0.Add(10 * time.Second), Flows: []flow.Flow{u}}).ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(0).Attributes()
	check("UDP flow log through a socket LB", a, wantLB)
	hasValues(t, a, map[string]any{AttrServerAddress: svcIP.String(), AttrServerPort: int64(53), AttrDestinationAddress: peer.String(),
		AttrPeerAddr: peer.String(), AttrPeerPortAttr: int64(53)})

	// A TCP flow of a local client to the ClusterIP that kube-proxy DNATs
	// after the pod's veth: the packets carry the ClusterIP, conntrack
	// named the backend (Backend). Both directions.
	for _, dir := range []flow.Direction{flow.Transmit, flow.Receive} {
		src, dst := ap(pod, 40006), ap(svcIP, 80)
		if dir == flow.Receive {
			src, dst = dst, src
		}
		n := podFlow(src, dst, flow.ProtoTCP, dir, 60, 1, t0)
		n.Backend = ap(peer, 5432)
		a = Logs(opts, &flow.Batch{Time: t0.Add(10 * time.Second), Flows: []flow.Flow{n}}).ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(0).Attributes()
		check("TCP flow log through the node's NAT", a, wantLB)
		hasValues(t, a, map[string]any{AttrServerAddress: svcIP.String(), AttrServerPort: int64(80), AttrPeerAddr: peer.String(), AttrPeerPortAttr: int64(5432)})
	}

	// A DNS lookup of the ClusterIP (kube-dns) that the node's NAT sent
	// to a resolver pod (Backend): the record and the latency histogram
	// name the pod that answered and the Service asked, as flows do.
	dns := flow.DNSLookup{Side: flow.DNSClient, Client: ap(pod, 40007), Server: ap(svcIP, 53), Backend: ap(peer, 5353),
		Protocol: flow.ProtoUDP, Endpoint: pod, Start: t0, Latency: time.Millisecond, QType: 1, Name: "db.shop.svc.cluster.local"}
	dnsBatch := &flow.Batch{Time: t0.Add(10 * time.Second), DNS: []flow.DNSLookup{dns}}
	a = Logs(opts, dnsBatch).ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(0).Attributes()
	check("DNS lookup record through the node's NAT", a, wantLB)
	hasValues(t, a, map[string]any{AttrServerAddress: svcIP.String(), AttrServerPort: int64(53), AttrPeerAddr: peer.String(), AttrPeerPortAttr: int64(5353)})
	dnsMetric := false
	forMetric(NewConverter(opts, t0).Metrics(dnsBatch), MetricDNSLookupDuration, func(m pmetric.Metric) {
		a := m.Histogram().DataPoints().At(0).Attributes()
		check("dns.lookup.duration through the node's NAT", a, wantLB)
		hasValues(t, a, map[string]any{AttrPeerAddr: peer.String()})
		dnsMetric = true
	})
	require.True(t, dnsMetric)

	md = NewConverter(opts, t0).Metrics(&flow.Batch{Time: t0.Add(10 * time.Second), Closed: []flow.Conn{c}})
	found := false
	forMetric(md, MetricConnsOpened, func(m pmetric.Metric) {
		check("connection metric", m.Sum().DataPoints().At(0).Attributes(), wantSvc)
		found = true
	})
	require.True(t, found)
}

func forMetric(md pmetric.Metrics, name string, fn func(pmetric.Metric)) {
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		sms := rms.At(i).ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				if ms.At(k).Name() == name {
					fn(ms.At(k))
				}
			}
		}
	}
}

// TestSpanResourceFromCgroup: client spans whose socket's cgroup names a
// pod and container get k8s.pod.uid and container.id on their resource
// (one resource per container), for k8sattributes' pod_association.
func TestSpanResourceFromCgroup(t *testing.T) {
	opts := testOptions()
	mk := func(port uint16, uid, cid string) flow.Conn {
		c := flow.Conn{Role: flow.Client, Local: ap(pod, port), Remote: ap(peer, 80), Start: t0, Established: t0.Add(time.Millisecond),
			End: t0.Add(time.Second), ClientISN: uint32(port), ServerISN: 9, PodUID: uid, ContainerID: cid}
		c.TraceID, c.SpanID, c.ParentSpanID = flow.ConnIDs(&c)
		return c
	}
	const uid, c1, c2 = "0f8a3c2e-1111-4222-8333-944455566677", "aaaa", "bbbb"
	td := Traces(opts, []flow.Conn{mk(1, uid, c1), mk(2, uid, c1), mk(3, uid, c2), mk(4, "", "")})
	got := map[string]int{}
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		a := rs.Resource().Attributes()
		ip, _ := a.Get(AttrK8sPodIP)
		require.Equal(t, pod.String(), ip.Str())
		u, _ := a.Get(AttrK8sPodUID)
		c, _ := a.Get(AttrContainerID)
		got[u.Str()+"/"+c.Str()] += rs.ScopeSpans().At(0).Spans().Len()
	}
	require.Equal(t, map[string]int{uid + "/" + c1: 2, uid + "/" + c2: 1, "/": 1}, got)
}

// hasValues asserts that a holds each of want's keys with its value.
func hasValues(t *testing.T, a pcommon.Map, want map[string]any) {
	t.Helper()
	for k, w := range want {
		v, ok := a.Get(k)
		require.True(t, ok, k)
		require.Equal(t, w, v.AsRaw(), k)
	}
}

// TestRecordAttributesSizedOnce: the counts a flow log record's attributes
// are allocated for (flowAttrCount, foundPeer.attrBound) cover what is
// put, for every kind of record and peer, so that no record's attributes
// grow (and copy) while they are put.
func TestRecordAttributesSizedOnce(t *testing.T) {
	tcp := podFlow(ap(pod, 40000), ap(peer, 5432), flow.ProtoTCP, flow.Transmit, 100, 1, t0)
	tcp.Conn.TraceID, tcp.Conn.SpanID, tcp.Conn.SRTT = [16]byte{1}, [8]byte{2}, time.Millisecond
	udp := podFlow(ap(pod, 53), ap(peer, 5353), flow.ProtoUDP, flow.Receive, 100, 1, t0)
	udp.Interface = ""
	icmp := podFlow(ap(pod, 8), ap(ext, 0), flow.ProtoICMP, flow.Transmit, 64, 1, t0)
	denied := podFlow(ap(ext, 443), ap(pod, 40001), flow.ProtoTCP, flow.Receive, 100, 1, t0)
	denied.Policy = flow.PolicyVerdict{Result: flow.PolicyDenied, Finding: flow.FindingDeniedDelivered, Policies: []string{"shop/deny"}}
	dropped := podFlow(ap(ext, 443), ap(pod, 40002), flow.ProtoTCP, flow.Receive, 100, 1, t0)
	dropped.Drops = []flow.SocketDrop{{Reason: "TCP_CSUM", Packets: 1}, {Reason: "NO_SOCKET", Packets: 2}}
	dropped.Policy = flow.PolicyVerdict{Result: flow.PolicyAllowed, Finding: flow.FindingAllowedDropped, Policies: []string{"shop/allow"}}
	for name, f := range map[string]flow.Flow{"tcp with its span": tcp, "udp, no interface": udp, "icmp": icmp,
		"denied": denied, "allowed but dropped": dropped} {
		lr := plog.NewLogRecord()
		putFlowRecord(lr, &f, 0, make(addrStrings), 0)
		require.Equal(t, flowAttrCount(&f), lr.Attributes().Len(), name)
	}

	peers := fakePeers{
		peer: {Kind: k8s.KindPod, Name: "db-0", Namespace: "shop", WorkloadKind: "StatefulSet", WorkloadName: "db", NodeName: "node-b",
			Zone: "zone-b", ServiceName: "db", ServiceNamespace: "shop", OTelService: "db"},
		node: {Kind: k8s.KindNode, Name: "node-b", NodeName: "node-b", Zone: "zone-b"},
	}
	full := lookupPeer(peers, peer)
	m := pcommon.NewMap()
	putPeerFound(m, peers, &full, WithPeerK8s|WithPeerService, "zone-a", netip.Addr{})
	require.Equal(t, maxPeerAttrs, m.Len(), "a pod with every field: the bound is what is put")
	for name, fp := range map[string]foundPeer{"node": lookupPeer(peers, node), "unresolved": lookupPeer(peers, ext),
		"no resolver": lookupPeer(nil, ext)} {
		m := pcommon.NewMap()
		putPeerFound(m, peers, &fp, WithPeerK8s|WithPeerService, "zone-a", netip.Addr{})
		require.LessOrEqual(t, m.Len(), fp.attrBound(), name)
	}
}
