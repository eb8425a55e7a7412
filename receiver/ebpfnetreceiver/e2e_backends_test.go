package ebpfnetreceiver

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ebpfnet/ebpfnet/internal/backendtest"
	"github.com/ebpfnet/ebpfnet/internal/collectortest"
	"github.com/ebpfnet/ebpfnet/internal/k8stest"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// backendNode is a test node whose pods are a Deployment's two replicas
// (web-a, web-c) and a StatefulSet's pod (db-0) in a real API server, with
// the agent (this receiver, k8s_attributes, the example's spanmetrics
// overlay) sending OTLP to a gateway running a shipped backend config.
type backendNode struct {
	node             *testnet.Node
	webA, webC, db   *testnet.Pod
	agentConfig, dir string
}

const backendNodeName = "node-backends"

func startBackendNode(t *testing.T) *backendNode {
	c := k8stest.Start(t)
	ctx := context.Background()
	b := &backendNode{node: testnet.NewNode(t, 25), dir: t.TempDir()}
	b.webA, b.webC, b.db = b.node.AddPod(t, 2), b.node.AddPod(t, 3), b.node.AddPod(t, 4)
	for node, zone := range map[string]string{backendNodeName: "zone-a", "node-b": "zone-b"} {
		_, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node,
			Labels: map[string]string{"topology.kubernetes.io/zone": zone}}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	rs := shopWeb(t, c.Client, "web-6c9d")
	yes := true
	for _, p := range []struct {
		name, node string
		ip         netip.Addr
		owner      metav1.OwnerReference
	}{
		{"web-6c9d-a", backendNodeName, b.webA.IPv4, metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: &yes}},
		{"web-6c9d-c", backendNodeName, b.webC.IPv4, metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: &yes}},
		{"db-0", backendNodeName, b.db.IPv4, metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db", UID: "0b7c1e4a-0000-4000-8000-0000000000db", Controller: &yes}},
		// The test node's remote host, as a pod of a node in another zone.
		{"report-0", "node-b", b.node.Remote.IPv4, metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "report", UID: "0b7c1e4a-0000-4000-8000-0000000000bb", Controller: &yes}},
	} {
		pod, err := c.Client.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: "shop",
			Labels: map[string]string{"pod-template-hash": "6c9d"}, OwnerReferences: []metav1.OwnerReference{p.owner}},
			Spec: corev1.PodSpec{NodeName: p.node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
		require.NoError(t, err)
		ip := p.ip.String()
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		_, err = c.Client.CoreV1().Pods("shop").UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	b.agentConfig = fmt.Sprintf(`
receivers:
  ebpfnet:
    interval: 1s
    node_name: %[1]s
    interfaces: {include: '^%[2]s-', exclude: ''}
    k8s: {enabled: true, auth_type: kubeConfig, kubeconfig: %[3]s}
processors:
  memory_limiter: {check_interval: 1s, limit_mib: 256, spike_limit_mib: 64}
%[4]s  batch: {send_batch_size: 512, send_batch_max_size: 1024}
exporters:
  otlp_grpc: {endpoint: "${env:GATEWAY}", tls: {insecure: true}}
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    metrics: {receivers: [ebpfnet], processors: [memory_limiter, k8s_attributes, batch], exporters: [otlp_grpc]}
    traces: {receivers: [ebpfnet], processors: [memory_limiter, k8s_attributes, batch], exporters: [otlp_grpc]}
`, backendNodeName, testnet.Prefix(b.node.ID), c.Kubeconfig, k8sAttributesConfig)
	require.NoError(t, os.WriteFile(filepath.Join(b.dir, "agent.yaml"), []byte(b.agentConfig), 0o600))
	t.Setenv("KUBECONFIG", c.Kubeconfig)
	return b
}

// examplePath is a file of examples/ (tests run in their package's directory).
func examplePath(parts ...string) string {
	return filepath.Join(append([]string{"..", "..", "examples"}, parts...)...)
}

// startBackendGateway runs the collector with a shipped gateway config (its own
// telemetry off: tests run in parallel) and env.
func startBackendGateway(t *testing.T, bin, config string, env ...string) string {
	addr := backendtest.FreeAddr(t)
	collectortest.Start(t, bin, config, func(cmd *exec.Cmd) {
		cmd.Args = append(cmd.Args, "--set=service::telemetry::metrics::level=none")
		cmd.Env = append(append(os.Environ(), "OTLP_GRPC_ENDPOINT="+addr), env...)
	})
	return addr
}

// start runs db's server on port 5432, the collector as the gateway with
// a shipped config (gatewayEnv: where it sends) and as the agent with the
// overlays.
func (b *backendNode) start(t *testing.T, gateway, gatewayEnv string, overlays ...string) {
	bin := collectortest.Build(t)
	gw := startBackendGateway(t, bin, gateway, gatewayEnv)
	ln, err := testnet.ListenTCP(b.db.NS, netip.AddrPortFrom(b.db.IPv4, 5432))
	require.NoError(t, err)
	t.Cleanup(ln.Close)
	b.startAgent(t, bin, gw, overlays...)
}

// startAgent runs the agent with the test's base config and the overlays.
func (b *backendNode) startAgent(t *testing.T, bin, gateway string, overlays ...string) *collectortest.Collector {
	return collectortest.Start(t, bin, filepath.Join(b.dir, "agent.yaml"), func(cmd *exec.Cmd) {
		for _, o := range overlays {
			cmd.Args = append(cmd.Args, "--config", o)
		}
		cmd.Env = append(os.Environ(), "K8S_NODE_NAME="+backendNodeName, "GATEWAY="+gateway, "SPANMETRICS_FLUSH_INTERVAL=1s")
	})
}

// TestBackendPrometheus: the shipped gateway config writes to Debian's
// Prometheus (remote write), the agent runs the shipped spanmetrics
// overlay. Two replicas of one Deployment dial a StatefulSet's pod, 12 and
// 5 times. Required, through Prometheus' HTTP API: the two pods are two
// series (job shop/web, instance namespace.pod), connection counts per pod
// equal the dials, flow bytes per pod equal the pod veth's kernel counters,
// counters cumulative without a reset, the RTT histogram usable with
// histogram_quantile and carrying exemplars (trace IDs), and spanmetrics'
// calls per service pair (web → db, report → db, client and server) equal
// the connections; db's bytes from the pod of another zone, and only those,
// have ebpfnet.cross_zone=true.
func TestBackendPrometheus(t *testing.T) {
	testnet.RequireRoot(t)
	b := startBackendNode(t)
	prom := backendtest.StartPrometheus(t)
	b.start(t, examplePath("backends", "prometheus", "gateway.yaml"), "PROMETHEUS_URL="+prom.URL,
		examplePath("backends", "prometheus", "agent-spanmetrics.yaml"))

	for _, v := range []*testnet.Pod{b.webA, b.webC, b.db} {
		testnet.WaitQuiet(t, v.Veth)
	}
	before := map[*testnet.Pod]testnet.LinkStats{b.webA: testnet.Stats(t, b.webA.Veth), b.webC: testnet.Stats(t, b.webC.Veth)}
	dbStart := testnet.Stats(t, b.db.Veth)
	dials := map[*testnet.Pod]int{b.webA: 12, b.webC: 5}
	for pod, n := range dials {
		for i := 0; i < n; i++ {
			_, err := testnet.Dial(pod.NS, netip.AddrPortFrom(b.db.IPv4, 5432), 1000+i, 2*time.Second)
			require.NoError(t, err)
		}
	}
	wire := map[string]float64{}
	for pod := range dials {
		testnet.WaitQuiet(t, pod.Veth)
		d := testnet.Stats(t, pod.Veth).Sub(before[pod])
		wire[pod.IPv4.String()] = float64(d.RxBytes + d.TxBytes)
	}
	// The pod of the other zone dials db: the bytes db's veth carries from
	// now on cross zones, those before did not.
	testnet.WaitQuiet(t, b.db.Veth)
	dbSame := testnet.Stats(t, b.db.Veth)
	for i := 0; i < 4; i++ {
		_, err := testnet.Dial(b.node.Remote.NS, netip.AddrPortFrom(b.db.IPv4, 5432), 3000, 2*time.Second)
		require.NoError(t, err)
	}
	testnet.WaitQuiet(t, b.db.Veth)
	sameZone, crossZone := dbSame.Sub(dbStart), testnet.Stats(t, b.db.Veth).Sub(dbSame)
	wantZones := fmt.Sprint(map[string]float64{"false": float64(sameZone.RxBytes + sameZone.TxBytes), "true": float64(crossZone.RxBytes + crossZone.TxBytes)})

	byInstance := func(q string) map[string]float64 {
		out := map[string]float64{}
		for _, s := range prom.Query(t, q) {
			out[s.Labels["job"]+" "+s.Labels["instance"]] = s.Value
		}
		return out
	}
	want := map[string]float64{"shop/web shop.web-6c9d-a": 12, "shop/web shop.web-6c9d-c": 5}
	opened := `sum by (job, instance) (ebpfnet_tcp_connections_opened_total{ebpfnet_tcp_role="client", job="shop/web"})`
	require.Eventually(t, func() bool { return fmt.Sprint(byInstance(opened)) == fmt.Sprint(want) }, 60*time.Second, time.Second,
		"client connections per pod: two series, each the pod's dials")
	calls := `sum by (service_name, peer_service, span_kind) (traces_span_metrics_calls_total{service_name=~"web|db|report"})`
	wantCalls := fmt.Sprint([]string{"db  SPAN_KIND_SERVER 21", "report db SPAN_KIND_CLIENT 4", "web db SPAN_KIND_CLIENT 17"})
	require.Eventually(t, func() bool {
		var got []string
		for _, s := range prom.Query(t, calls) {
			got = append(got, fmt.Sprintf("%s %s %s %v", s.Labels["service_name"], s.Labels["peer_service"], s.Labels["span_kind"], s.Value))
		}
		slices.Sort(got)
		return fmt.Sprint(got) == wantCalls
	}, 60*time.Second, time.Second, "spanmetrics calls per service pair = the connections; got %v", prom.Query(t, calls))

	for ip, bytes := range wire {
		q := fmt.Sprintf(`sum(ebpfnet_flow_io_bytes_total{k8s_pod_ip=%q})`, ip)
		require.Eventually(t, func() bool {
			s := prom.Query(t, q)
			return len(s) == 1 && s[0].Value == bytes
		}, 30*time.Second, time.Second, "%s: flow bytes = the veth's kernel counters (%v); got %v", ip, bytes, prom.Query(t, q))
	}
	zones := `sum by (ebpfnet_cross_zone) (ebpfnet_flow_io_bytes_total{k8s_pod_name="db-0"})`
	require.Eventually(t, func() bool {
		got := map[string]float64{}
		for _, s := range prom.Query(t, zones) {
			got[s.Labels["ebpfnet_cross_zone"]] = s.Value
		}
		return fmt.Sprint(got) == wantZones
	}, 30*time.Second, time.Second, "db's bytes by zone crossing = its veth's kernel counters (%s); got %v", wantZones, prom.Query(t, zones))
	time.Sleep(3 * time.Second) // a few more remote writes of the same cumulative series
	require.Equal(t, want, byInstance(opened), "no count changed")
	for _, s := range prom.Query(t, `resets(ebpfnet_tcp_connections_opened_total[10m]) + resets(ebpfnet_flow_io_bytes_total[10m])`) {
		require.Zero(t, s.Value, "counter reset in %v", s.Labels)
	}
	// The buckets since the start (a rate needs a second point of a series
	// whose first already held every connection, as here).
	q := `histogram_quantile(0.5, sum by (le, job) (ebpfnet_tcp_rtt_seconds_bucket{ebpfnet_tcp_role="client", job="shop/web"}))`
	med := prom.Query(t, q)
	require.Len(t, med, 1, q)
	require.False(t, math.IsNaN(med[0].Value), q)
	require.Greater(t, med[0].Value, 0.0, "median RTT")
	require.Less(t, med[0].Value, 0.1, "median RTT on a veth")
	ex := prom.Exemplars(t, `ebpfnet_tcp_rtt_seconds_bucket{job="shop/web"}`)
	require.NotEmpty(t, ex, "exemplars of the RTT histogram")
	require.Regexp(t, "^[0-9a-f]{32}$", ex[0].Labels["trace_id"], "an exemplar names its connection's trace")
	checkDashboard(t, b, prom)
}

// checkDashboard: with traffic running (a web pod connects to db every
// 100 ms, the other to a closed port of db every 300 ms, the pod of the
// other zone to db every 300 ms; db drops a fifth of its packets), every query of every panel of the shipped
// Grafana dashboard returns series from Prometheus, with a value above zero
// where the traffic feeds the panel, and its namespace variable lists the
// pods' namespace.
func checkDashboard(t *testing.T, b *backendNode, prom *backendtest.Prometheus) {
	// db drops a fifth of what reaches port 5432 from now on: retransmits.
	out, err := b.db.NS.Exec("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "5432", "-m", "statistic", "--mode", "random", "--probability", "0.2", "-j", "DROP")
	require.NoError(t, err, out)
	dialEvery(t, b.webA.NS, netip.AddrPortFrom(b.db.IPv4, 5432), 500, 100*time.Millisecond)
	dialEvery(t, b.webC.NS, netip.AddrPortFrom(b.db.IPv4, 5433), 500, 300*time.Millisecond) // refused
	dialEvery(t, b.node.Remote.NS, netip.AddrPortFrom(b.db.IPv4, 5432), 500, 300*time.Millisecond)

	panels, variables := backendtest.DashboardQueries(t, examplePath("backends", "grafana", "ebpfnet.json"))
	require.Equal(t, []string{"label_values(ebpfnet_flow_io_bytes_total, k8s_namespace_name)"}, variables)
	require.Contains(t, prom.LabelValues(t, "k8s_namespace_name", "ebpfnet_flow_io_bytes_total"), "shop")
	require.GreaterOrEqual(t, len(panels), 13)
	// Nothing here loses a packet or a connection.
	idle := map[string]bool{"Packets not in any flow": true, "Connections not reported whole": true}
	vars := strings.NewReplacer("$namespace", ".*", "$__rate_interval", "30s", "$__range", "1m")
	var missing string
	ok := assert.Eventually(t, func() bool {
		for _, q := range panels {
			s := prom.Query(t, vars.Replace(q.Expr))
			positive := slices.ContainsFunc(s, func(s backendtest.Sample) bool { return s.Value > 0 })
			if len(s) == 0 || !(positive || idle[q.Panel]) {
				missing = fmt.Sprintf("%q: %s: %v", q.Panel, q.Expr, s)
				return false
			}
		}
		return true
	}, 60*time.Second, 2*time.Second)
	require.True(t, ok, "every panel's query has data; not: %s", missing)
}

// shopWeb creates namespace shop, Deployment web and its ReplicaSet
// rsName (as the Deployment controller would) in the API server.
func shopWeb(t *testing.T, client kubernetes.Interface, rsName string) *appsv1.ReplicaSet {
	ctx := context.Background()
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	yes := true
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	dep, err := client.AppsV1().Deployments("shop").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: appsv1.DeploymentSpec{Selector: sel, Template: tmpl}}, metav1.CreateOptions{})
	require.NoError(t, err)
	rs, err := client.AppsV1().ReplicaSets("shop").Create(ctx, &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: rsName, Namespace: "shop",
		Labels:          map[string]string{"app": "web"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: dep.UID, Controller: &yes}}},
		Spec: appsv1.ReplicaSetSpec{Selector: sel, Template: tmpl}}, metav1.CreateOptions{})
	require.NoError(t, err)
	return rs
}

// k8sAttributesConfig is the test collectors' k8s_attributes processor:
// the examples' association and extraction, kubeconfig auth.
const k8sAttributesConfig = `  k8s_attributes:
    auth_type: kubeConfig
    wait_for_metadata: true
    filter: {node_from_env_var: K8S_NODE_NAME}
    pod_association:
      - sources: [{from: resource_attribute, name: k8s.pod.uid}]
      - sources: [{from: resource_attribute, name: k8s.pod.ip}]
      - sources: [{from: resource_attribute, name: container.id}]
    extract:
      metadata: [k8s.pod.name, k8s.namespace.name, k8s.deployment.name, k8s.statefulset.name, k8s.node.name, service.name, service.namespace]
      otel_annotations: true
`

// dialEvery connects from ns to dst and sends n bytes every period (errors,
// such as a refused connect, ignored) until the end of the test.
func dialEvery(t *testing.T, ns *testnet.Netns, dst netip.AddrPort, n int, every time.Duration) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			_, _ = testnet.Dial(ns, dst, n, 2*time.Second)
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })
}

// TestBackendJaeger: the shipped Jaeger gateway config sends the agent's
// spans to Jaeger v2 (memory storage). Two replicas of web dial db 12 and 5
// times, the pod of the other zone 4 times, and a web pod 3 times a closed
// port. Required, through Jaeger's query API: the services by their
// k8s_attributes names; each successful connection one trace holding the
// client span under its service and the server span under db, the server's
// parent the client's; a failed connect a trace of its client span alone;
// and Jaeger's dependency graph counting exactly the connections made
// (web → db 17, report → db 4): the pairing servicegraph makes too.
func TestBackendJaeger(t *testing.T) {
	testnet.RequireRoot(t)
	b := startBackendNode(t)
	jaeger := backendtest.StartJaeger(t)
	b.start(t, examplePath("backends", "jaeger", "gateway.yaml"), "JAEGER_OTLP_ENDPOINT="+jaeger.OTLP)

	for pod, n := range map[*testnet.Netns]int{b.webA.NS: 12, b.webC.NS: 5, b.node.Remote.NS: 4} {
		for i := 0; i < n; i++ {
			_, err := testnet.Dial(pod, netip.AddrPortFrom(b.db.IPv4, 5432), 100, 2*time.Second)
			require.NoError(t, err)
		}
	}
	for i := 0; i < 3; i++ {
		_, err := testnet.Dial(b.webA.NS, netip.AddrPortFrom(b.db.IPv4, 5433), 100, 2*time.Second)
		require.Error(t, err, "nothing listens on 5433")
	}

	wantDeps := map[string]int{"web -> db": 17, "report -> db": 4}
	// The node's own processes (this test, the API server) have edges too.
	ours := func() map[string]int {
		d := jaeger.Dependencies(t)
		return map[string]int{"web -> db": d["web -> db"], "report -> db": d["report -> db"]}
	}
	if !assert.Eventually(t, func() bool { return fmt.Sprint(ours()) == fmt.Sprint(wantDeps) }, 60*time.Second, time.Second) {
		t.Fatalf("Jaeger's dependencies %v, want the connections %v; services %v", jaeger.Dependencies(t), wantDeps, jaeger.Services(t))
	}
	require.Subset(t, jaeger.Services(t), []string{"web", "db", "report"})
	pairs, alone := map[string]int{}, 0
	for _, tr := range jaeger.Traces(t, "web") {
		byID := map[string]string{}
		for _, s := range tr.Spans {
			byID[s.SpanID] = tr.Processes[s.ProcessID].ServiceName
		}
		switch len(tr.Spans) {
		case 1:
			require.Equal(t, "tcp connect", tr.Spans[0].OperationName)
			alone++
		case 2:
			for _, s := range tr.Spans {
				if s.OperationName == "tcp accept" {
					require.Len(t, s.References, 1, "the server span's parent")
					pairs[byID[s.References[0].SpanID]+" -> "+tr.Processes[s.ProcessID].ServiceName]++
				}
			}
		default:
			t.Fatalf("trace %s has %d spans", tr.TraceID, len(tr.Spans))
		}
	}
	require.Equal(t, map[string]int{"web -> db": 17}, pairs, "each connection one trace, client span the server span's parent")
	require.Equal(t, 3, alone, "each failed connect a trace of its client span")
}
