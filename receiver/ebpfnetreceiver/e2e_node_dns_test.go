package ebpfnetreceiver

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	corev1 "k8s.io/api/core/v1"

	"github.com/ebpfnet/ebpfnet/internal/k8stest"
)

// dnsQuery is one DNS query of a client: its socket, ID and question.
type dnsQuery struct {
	proto, qtype, name string
	port, id           int
}

func (q dnsQuery) String() string {
	return fmt.Sprintf("%s :%d id %d %s %s", q.proto, q.port, q.id, q.qtype, q.name)
}

// dnsAnswer is who answered a query, with what.
type dnsAnswer struct{ pod, rcode string }

// coreDNSLine is a query line of CoreDNS' log plugin (its default format:
// client address:port - id "type class name proto size do bufsize" rcode).
var coreDNSLine = regexp.MustCompile(`\] (\S+):(\d+) - (\d+) "(\S+) IN (\S+) (udp|tcp) [^"]*" (\S+) `)

func dnsName(s string) string { return strings.TrimSuffix(strings.ToLower(s), ".") }

// coreDNSQueries are the queries of client (an address) the CoreDNS pods
// logged, with the pod that logged each.
func coreDNSQueries(ctx context.Context, t *testing.T, n *k8stest.Node, pods []corev1.Pod, client string) map[dnsQuery]dnsAnswer {
	out := map[dnsQuery]dnsAnswer{}
	for _, p := range pods {
		for _, m := range coreDNSLine.FindAllStringSubmatch(n.PodLog(ctx, t, p.Namespace, p.Name), -1) {
			if m[1] != client {
				continue
			}
			port, _ := strconv.Atoi(m[2])
			id, _ := strconv.Atoi(m[3])
			out[dnsQuery{proto: m[6], qtype: m[4], name: dnsName(m[5]), port: port, id: id}] = dnsAnswer{pod: p.Name, rcode: m[7]}
		}
	}
	return out
}

// reportedLookups are the client-side lookup records of client the sink
// received, with the resolver pod each names; a record that does not name
// kube-dns as its Service is reported in wrong.
func reportedLookups(sink *otlpSink, client string) (got map[dnsQuery]dnsAnswer, wrong []string) {
	got = map[dnsQuery]dnsAnswer{}
	for _, ld := range sink.Logs() {
		for i := 0; i < ld.ResourceLogs().Len(); i++ {
			sls := ld.ResourceLogs().At(i).ScopeLogs()
			for j := 0; j < sls.Len(); j++ {
				for k := 0; k < sls.At(j).LogRecords().Len(); k++ {
					lr := sls.At(j).LogRecords().At(k)
					a := lr.Attributes()
					if lr.EventName() != "ebpfnet.dns.lookup" || str(a, "ebpfnet.dns.side") != "client" || str(a, "client.address") != client {
						continue
					}
					q := dnsQuery{proto: str(a, "network.transport"), qtype: str(a, "dns.question.type"), name: dnsName(str(a, "dns.question.name")),
						port: int(intAttr(a, "client.port")), id: int(intAttr(a, "ebpfnet.dns.id"))}
					rcode := str(a, "ebpfnet.dns.rcode")
					if rcode == "" {
						rcode = "(" + str(a, "error.type") + ")"
					}
					got[q] = dnsAnswer{pod: str(a, "peer.k8s.pod.name"), rcode: rcode}
					if str(a, "server.address") != k8stest.ClusterDNS || str(a, "peer.k8s.service.name") != "kube-dns" ||
						str(a, "peer.k8s.service.namespace") != "kube-system" {
						wrong = append(wrong, fmt.Sprintf("%v: %v", q, a.AsRaw()))
					}
				}
			}
		}
	}
	return got, wrong
}

func intAttr(m pcommon.Map, k string) int64 {
	v, _ := m.Get(k)
	return v.Int()
}

// dnsHistogramCounts are the counts of histogram name on the resources of
// pod (k8s.pod.name, as k8s_attributes sets it), by the values of the
// points' attributes keys joined by "/": each series' largest count (they
// are cumulative), summed. Every resource must carry wantDeployment.
func dnsHistogramCounts(t *testing.T, sink *otlpSink, name, pod, wantDeployment string, keys ...string) map[string]uint64 {
	type point struct {
		label string
		count uint64
	}
	series := map[string]point{}
	for _, md := range sink.Metrics() {
		for i := 0; i < md.ResourceMetrics().Len(); i++ {
			rm := md.ResourceMetrics().At(i)
			res := rm.Resource().Attributes()
			if str(res, "k8s.pod.name") != pod {
				continue
			}
			sms := rm.ScopeMetrics()
			for j := 0; j < sms.Len(); j++ {
				for k := 0; k < sms.At(j).Metrics().Len(); k++ {
					m := sms.At(j).Metrics().At(k)
					if m.Name() != name {
						continue
					}
					require.Equal(t, wantDeployment, str(res, "k8s.deployment.name"), "%s of pod %s", name, pod)
					for p := 0; p < m.Histogram().DataPoints().Len(); p++ {
						dp := m.Histogram().DataPoints().At(p)
						var label []string
						for _, key := range keys {
							label = append(label, str(dp.Attributes(), key))
						}
						id := fmt.Sprint(dp.Attributes().AsRaw())
						series[id] = point{strings.Join(label, "/"), max(series[id].count, dp.Count())}
					}
				}
			}
		}
	}
	out := map[string]uint64{}
	for _, p := range series {
		out[p.label] += p.count
	}
	return out
}

// requireClusterDNS: CoreDNS (two replicas) behind kube-dns at the kubelet's
// clusterDNS, and a pod of Deployment "resolver" that looks up a Service
// name and a missing one through the Go resolver, its resolv.conf's search
// path and kube-proxy's DNAT. Every query CoreDNS logged from that pod has
// the pod's lookup record, with CoreDNS' rcode, kube-dns as its Service and
// the CoreDNS pod that logged it as the peer (conntrack's NAT join), and no
// other record exists; dns.lookup.duration on the resolver's resource (its
// Deployment from k8s_attributes) counts them by CoreDNS pod, with kube-dns
// as peer.k8s.service.name, and by error.type; each CoreDNS pod's server
// view counts what it logged from the resolver.
func requireClusterDNS(ctx context.Context, t *testing.T, n *k8stest.Node, sink *otlpSink, web *corev1.Service) {
	coredns := n.RunCoreDNS(ctx, t, 2)
	pod := n.RunResolver(ctx, t, "shop", "resolver", 25, "web", "nothere")
	require.Eventually(t, func() bool { return strings.Contains(n.PodLog(ctx, t, "shop", pod.Name), "done") }, time.Minute, time.Second,
		"the resolver's lookups; its log: %s", n.PodLog(ctx, t, "shop", pod.Name))
	log := n.PodLog(ctx, t, "shop", pod.Name)
	require.Contains(t, log, "dns 0 web addrs=["+web.Spec.ClusterIP+"] err=<nil>", "web resolved through the search path")
	require.Contains(t, log, "dns 0 nothere addrs=[] err=lookup nothere", "a missing name fails")
	asked := coreDNSQueries(ctx, t, n, coredns, pod.Status.PodIP)
	byPod, byError := map[string]uint64{}, map[string]uint64{}
	for q, a := range asked {
		byPod[a.pod+"/kube-dns/kube-system"]++
		if a.rcode != "NOERROR" {
			byError[a.rcode+"/"+q.qtype]++
		} else {
			byError["/"+q.qtype]++
		}
	}
	require.Len(t, byPod, 2, "both CoreDNS pods answered (kube-proxy spreads the queries): %v", byPod)
	require.Contains(t, byError, "NXDOMAIN/A")

	// The records and the histogram reach the sink within an interval or
	// two of the last lookup.
	var got map[dnsQuery]dnsAnswer
	var wrong []string
	var lookups, errs map[string]uint64
	ok := assert.Eventually(t, func() bool {
		got, wrong = reportedLookups(sink, pod.Status.PodIP)
		lookups = dnsHistogramCounts(t, sink, "dns.lookup.duration", pod.Name, "resolver", "peer.k8s.pod.name", "peer.k8s.service.name",
			"peer.k8s.service.namespace")
		errs = dnsHistogramCounts(t, sink, "dns.lookup.duration", pod.Name, "resolver", "error.type", "dns.question.type")
		return len(got) >= len(asked) && sum(lookups) >= uint64(len(asked))
	}, 30*time.Second, time.Second)
	require.Empty(t, wrong, "lookup records that do not name kube-dns as the Service asked")
	require.True(t, ok, "%d lookups reported of %d CoreDNS logged; missing: %v", len(got), len(asked), queryDiff(asked, got))
	require.Equal(t, asked, got, "each query CoreDNS logged, as the resolver pod's records report it (CoreDNS pod, rcode); "+
		"logged, not reported: %v; reported, not logged: %v", queryDiff(asked, got), queryDiff(got, asked))
	require.Equal(t, byPod, lookups, "dns.lookup.duration by CoreDNS pod and Service")
	require.Equal(t, byError, errs, "dns.lookup.duration by error.type and type")
	t.Logf("cluster DNS: %d queries CoreDNS logged from %s, each reported with its CoreDNS pod; by pod %v, by error.type/type %v",
		len(asked), pod.Name, byPod, byError)
	for _, p := range coredns {
		served := dnsHistogramCounts(t, sink, "ebpfnet.dns.server.duration", p.Name, "coredns", "peer.k8s.pod.name")
		require.Equal(t, byPod[p.Name+"/kube-dns/kube-system"], served[pod.Name], "%s's server view of the resolver's queries", p.Name)
	}
}

func sum(m map[string]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}

// queryDiff lists the queries of a that b lacks or answers otherwise.
func queryDiff(a, b map[dnsQuery]dnsAnswer) []string {
	var out []string
	for q, x := range a {
		if y, ok := b[q]; !ok || x != y {
			out = append(out, fmt.Sprintf("%v %v (other: %v)", q, x, y))
		}
	}
	sort.Strings(out)
	if len(out) > 20 {
		out = append(out[:20], fmt.Sprintf("... %d more", len(out)-20))
	}
	return out
}
