package ebpfnetreceiver

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

type spanRec struct {
	resource pcommon.Map
	span     ptrace.Span
}

func collectSpans(sink *consumertest.TracesSink) []spanRec {
	var out []spanRec
	for _, td := range sink.AllTraces() {
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			rs := td.ResourceSpans().At(i)
			for j := 0; j < rs.ScopeSpans().Len(); j++ {
				ss := rs.ScopeSpans().At(j).Spans()
				for k := 0; k < ss.Len(); k++ {
					out = append(out, spanRec{rs.Resource().Attributes(), ss.At(k)})
				}
			}
		}
	}
	return out
}

func sattr(s ptrace.Span, k string) string {
	v, ok := s.Attributes().Get(k)
	if !ok {
		return ""
	}
	return v.AsString()
}

func iattr(s ptrace.Span, k string) int64 {
	v, _ := s.Attributes().Get(k)
	return v.Int()
}

// startTraces runs the receiver with traces and metrics sinks.
func startTraces(t *testing.T, cfg *Config) (*consumertest.TracesSink, *consumertest.MetricsSink, func()) {
	s := startSignals(t, cfg, true, false, true)
	return s.traces, s.metrics, s.stop
}

// connMetric sums the last emission's data points of a connection metric
// for a pod resource matching attrs (histograms: their count).
func connMetric(t *testing.T, sink *consumertest.MetricsSink, name, podIP string, attrs map[string]string) int64 {
	t.Helper()
	all := sink.AllMetrics()
	require.NotEmpty(t, all)
	md := all[len(all)-1]
	var n int64
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		if str(rm.Resource().Attributes(), "k8s.pod.ip") != podIP {
			continue
		}
		ms := rm.ScopeMetrics().At(0).Metrics()
		for j := 0; j < ms.Len(); j++ {
			m := ms.At(j)
			if m.Name() != name {
				continue
			}
			match := func(a pcommon.Map) bool {
				for k, v := range attrs {
					if str(a, k) != v {
						return false
					}
				}
				return true
			}
			if m.Type() == pmetric.MetricTypeHistogram {
				for d := 0; d < m.Histogram().DataPoints().Len(); d++ {
					if dp := m.Histogram().DataPoints().At(d); match(dp.Attributes()) {
						n += int64(dp.Count())
					}
				}
				continue
			}
			for d := 0; d < m.Sum().DataPoints().Len(); d++ {
				if dp := m.Sum().DataPoints().At(d); match(dp.Attributes()) {
					n += dp.IntValue()
				}
			}
		}
	}
	return n
}

// TestEndToEndConnectionSpans: 1,000 short connections pod to pod, and
// connections from a remote host to a DNATed "ClusterIP", each give one
// client and one server span with real times and byte counts, stitched into
// one trace; failed connects are classified.
func TestEndToEndConnectionSpans(t *testing.T) {
	node := testnet.NewNode(t, 13)
	p1 := node.AddPod(t, 2)
	p2 := node.AddPod(t, 3)
	remote := node.Remote.NS
	// kube-proxy style DNAT on the node: ClusterIP 10.96.13.10:80 -> p2:8080.
	clusterIP := netip.MustParseAddr("10.96.13.10")
	testnet.Must(t, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", clusterIP.String(), "-p", "tcp", "--dport", "80",
		"-j", "DNAT", "--to-destination", p2.IPv4.String()+":8080")
	t.Cleanup(func() {
		testnet.Must(t, "iptables", "-t", "nat", "-D", "PREROUTING", "-d", clusterIP.String(), "-p", "tcp", "--dport", "80",
			"-j", "DNAT", "--to-destination", p2.IPv4.String()+":8080")
	})
	_, err := remote.Exec("ip", "route", "add", "10.96.13.0/24", "via", "10.251.13.1")
	require.NoError(t, err)

	cfg := testConfig(node.ID)
	cfg.Interval = 200 * time.Millisecond
	sink, msink, stop := startTraces(t, cfg)

	ln, err := testnet.ListenTCP(p2.NS, netip.AddrPortFrom(p2.IPv4, 8080))
	require.NoError(t, err)
	const n = 1000
	sent := map[uint16]int{} // client port -> bytes
	for i := 0; i < n; i++ {
		size := 100 + i%500
		port, err := testnet.Dial(p1.NS, netip.AddrPortFrom(p2.IPv4, 8080), size, 5*time.Second)
		require.NoError(t, err)
		sent[port] = size
	}
	const viaService = 20
	dnatSent := map[uint16]int{}
	for i := 0; i < viaService; i++ {
		port, err := testnet.Dial(remote, netip.AddrPortFrom(clusterIP, 80), 1000+i, 5*time.Second)
		require.NoError(t, err)
		dnatSent[port] = 1000 + i
	}
	ln.Close()

	// Refused: nothing listens on 9090. Timed out: p2 drops SYNs to 9091 and
	// p1 gives up after one retry.
	const refused, timedOut = 5, 3
	for i := 0; i < refused; i++ {
		_, err := testnet.Dial(p1.NS, netip.AddrPortFrom(p2.IPv4, 9090), 1, time.Second)
		require.Error(t, err)
	}
	_, err = p2.NS.Exec("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "9091", "-j", "DROP")
	require.NoError(t, err)
	_, err = p1.NS.Exec("sysctl", "-qw", "net.ipv4.tcp_syn_retries=1")
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := 0; i < timedOut; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := testnet.Dial(p1.NS, netip.AddrPortFrom(p2.IPv4, 9091), 1, 30*time.Second)
			require.Error(t, err)
		}()
	}
	wg.Wait()

	type pair struct{ client, server *spanRec }
	want := 2*(n+viaService) + refused + timedOut
	var spans []spanRec
	require.Eventually(t, func() bool {
		spans = nil
		for _, s := range collectSpans(sink) {
			local := sattr(s.span, "network.local.address")
			peer := sattr(s.span, "network.peer.address")
			if local == p1.IPv4.String() || local == p2.IPv4.String() || peer == p2.IPv4.String() || peer == clusterIP.String() {
				spans = append(spans, s)
			}
		}
		return len(spans) >= want
	}, 20*time.Second, 100*time.Millisecond, "spans: got %d, want %d", len(spans), want)
	time.Sleep(2 * cfg.Interval) // the metrics of the last closes
	stop()
	require.Len(t, spans, want)

	byTrace := map[pcommon.TraceID]*pair{}
	results := map[string]int{}
	for i := range spans {
		s := &spans[i]
		require.True(t, s.span.StartTimestamp() < s.span.EndTimestamp(), "start before end")
		results[sattr(s.span, "ebpfnet.tcp.close_reason")]++
		if s.span.Status().Code() == ptrace.StatusCodeError {
			continue
		}
		p := byTrace[s.span.TraceID()]
		if p == nil {
			p = &pair{}
			byTrace[s.span.TraceID()] = p
		}
		switch s.span.Kind() {
		case ptrace.SpanKindClient:
			require.Nil(t, p.client, "two client spans in one trace")
			p.client = s
		case ptrace.SpanKindServer:
			require.Nil(t, p.server, "two server spans in one trace")
			p.server = s
		}
	}
	require.Equal(t, 2*(n+viaService), results["closed"], "client and server span of each connection")
	require.Equal(t, refused, results["refused"])
	require.Equal(t, timedOut, results["timed_out"])
	require.Len(t, byTrace, n+viaService, "one trace per connection")

	direct, service := 0, 0
	for _, p := range byTrace {
		require.NotNil(t, p.client)
		require.NotNil(t, p.server)
		c, s := p.client.span, p.server.span
		require.Equal(t, c.SpanID(), s.ParentSpanID(), "server span's parent is the client span")
		require.True(t, c.ParentSpanID().IsEmpty())
		require.LessOrEqual(t, c.StartTimestamp(), s.StartTimestamp(), "client SYN before server SYN-ACK")
		port := uint16(iattr(c, "network.local.port"))
		if sattr(c, "server.address") == clusterIP.String() {
			service++
			require.Equal(t, int64(80), iattr(c, "server.port"), "the client's span names what it dialed")
			require.Equal(t, p2.IPv4.String(), sattr(s, "server.address"), "the server span names the pod")
			require.Equal(t, int64(8080), iattr(s, "server.port"))
			require.Equal(t, int64(dnatSent[port]), iattr(c, "ebpfnet.tcp.bytes_sent"))
			require.Equal(t, int64(dnatSent[port]), iattr(s, "ebpfnet.tcp.bytes_received"))
			continue
		}
		direct++
		size, ok := sent[port]
		require.True(t, ok, "client port %d", port)
		require.Equal(t, int64(size), iattr(c, "ebpfnet.tcp.bytes_sent"), "acked bytes = what the test sent")
		require.Equal(t, int64(size), iattr(s, "ebpfnet.tcp.bytes_received"))
		ip, _ := p.client.resource.Get("k8s.pod.ip")
		require.Equal(t, p1.IPv4.String(), ip.AsString())
		ip, _ = p.server.resource.Get("k8s.pod.ip")
		require.Equal(t, p2.IPv4.String(), ip.AsString())
	}
	require.Equal(t, n, direct)
	require.Equal(t, viaService, service)

	// The connection metrics count the same connections.
	c1, c2 := p1.IPv4.String(), p2.IPv4.String()
	peer := func(role, ip string) map[string]string {
		return map[string]string{"ebpfnet.tcp.role": role, "network.peer.address": ip}
	}
	require.Equal(t, int64(n), connMetric(t, msink, "ebpfnet.tcp.connections.opened", c1, peer("client", c2)))
	require.Equal(t, int64(n+viaService), connMetric(t, msink, "ebpfnet.tcp.connections.opened", c2, map[string]string{"ebpfnet.tcp.role": "server"}))
	require.Equal(t, int64(n), connMetric(t, msink, "ebpfnet.tcp.connections.closed", c1,
		map[string]string{"ebpfnet.tcp.role": "client", "network.peer.address": c2, "ebpfnet.tcp.close_reason": "closed"}))
	require.Equal(t, int64(refused), connMetric(t, msink, "ebpfnet.tcp.connections.closed", c1,
		map[string]string{"ebpfnet.tcp.role": "client", "ebpfnet.tcp.close_reason": "refused"}))
	require.Equal(t, int64(timedOut), connMetric(t, msink, "ebpfnet.tcp.connections.closed", c1,
		map[string]string{"ebpfnet.tcp.role": "client", "ebpfnet.tcp.close_reason": "timed_out"}))
	require.Equal(t, int64(n+refused+timedOut), connMetric(t, msink, "ebpfnet.tcp.connection.duration", c1, peer("client", c2)))
	require.Equal(t, int64(n), connMetric(t, msink, "ebpfnet.tcp.rtt", c1, peer("client", c2)), "one RTT sample per established connection")
	t.Log(fmt.Sprintf("%d traces stitched, %d through DNAT", len(byTrace), service))
}
