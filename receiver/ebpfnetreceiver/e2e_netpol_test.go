package ebpfnetreceiver

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/ebpfnet/ebpfnet/internal/k8stest"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// policyRecord is what a flow record says of its NetworkPolicy verdict.
type policyRecord struct {
	verdict, direction, finding, dropReason string
	names                                   []string
}

// policyRecords are the verdicts on the flow records of pod local with
// peer, whose server side is port (the local port for ingress, the peer's
// for egress).
func policyRecords(logs []plog.Logs, local, peer netip.Addr, port int64) []policyRecord {
	var out []policyRecord
	forEachRecord(logs, func(res, a map[string]any, _ plog.LogRecord) {
		if res["k8s.pod.ip"] != local.String() || a["network.peer.address"] != peer.String() && peerOf(a) != peer.String() {
			return
		}
		if a["source.port"] != port && a["destination.port"] != port {
			return
		}
		v, ok := a["ebpfnet.policy.verdict"].(string)
		if !ok {
			return
		}
		r := policyRecord{verdict: v}
		r.direction, _ = a["ebpfnet.policy.direction"].(string)
		r.finding, _ = a["ebpfnet.policy.finding"].(string)
		r.dropReason, _ = a["ebpfnet.drop.reason"].(string)
		if ns, ok := a["ebpfnet.policy.names"].([]any); ok {
			for _, n := range ns {
				r.names = append(r.names, n.(string))
			}
		}
		out = append(out, r)
	})
	return out
}

// peerOf is a flow record's peer: its source or destination that is not
// the local side (records without network.peer.address).
func peerOf(a map[string]any) string {
	if a["network.io.direction"] == "receive" {
		s, _ := a["source.address"].(string)
		return s
	}
	s, _ := a["destination.address"].(string)
	return s
}

// apiPod registers a pod of the test node in the API server, running at ip.
func apiPod(t *testing.T, c kubernetes.Interface, ns, name string, ip netip.Addr, labels map[string]string, ports ...corev1.ContainerPort) {
	ctx := context.Background()
	p, err := c.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{NodeName: "node-np", Containers: []corev1.Container{{Name: "c", Image: "busybox", Ports: ports}}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
	_, err = c.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	require.NoError(t, err)
}

// netpolCluster creates the namespaces and policies of the test: in shop,
// a default deny of ingress, web open to namespaces labelled
// team=frontend on its named port http, and shop's clients' egress to the
// pod range except web.
func netpolCluster(t *testing.T, c kubernetes.Interface, webIP netip.Addr) {
	ctx := context.Background()
	for ns, labels := range map[string]map[string]string{"shop": nil, "other": {"team": "frontend"}, "blocked": nil} {
		_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	tcp, http := corev1.ProtocolTCP, intstr.FromString("http")
	for _, np := range []*networkingv1.NetworkPolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "default-deny"}, Spec: networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "allow-frontend"}, Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "frontend"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &http}}}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "client-egress"}, Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
				CIDR: "10.250.30.0/24", Except: []string{webIP.String() + "/32"}}}}}}}},
	} {
		_, err := c.NetworkingV1().NetworkPolicies("shop").Create(ctx, np, metav1.CreateOptions{})
		require.NoError(t, err)
	}
}

// TestEndToEndNetworkPolicyVerdicts: against a real kube-apiserver, the
// receiver evaluates every flow of this node's pods by the cluster's
// NetworkPolicies (default deny, allow from a namespace on a named port,
// egress to an ipBlock with except), with test-only iptables rules standing
// in for a plugin that enforces some of them: each flow record carries the
// verdict, the policies behind it and the finding against what the kernel
// saw — denied but delivered where nothing enforces, allowed but dropped
// (with the kernel's reason) where something else drops — and the verdict
// metric counts them.
func TestEndToEndNetworkPolicyVerdicts(t *testing.T) {
	testnet.RequireRoot(t)
	c := k8stest.Start(t)
	node := testnet.NewNode(t, 30)
	web, shopClient, frontend, outsider := node.AddPod(t, 2), node.AddPod(t, 3), node.AddPod(t, 4), node.AddPod(t, 5)
	netpolCluster(t, c.Client, web.IPv4)
	apiPod(t, c.Client, "shop", "web-0", web.IPv4, map[string]string{"app": "web"}, corev1.ContainerPort{Name: "http", ContainerPort: 8080})
	apiPod(t, c.Client, "shop", "client-0", shopClient.IPv4, map[string]string{"app": "client"})
	apiPod(t, c.Client, "other", "frontend-0", frontend.IPv4, map[string]string{"app": "client"})
	apiPod(t, c.Client, "blocked", "outsider-0", outsider.IPv4, map[string]string{"app": "client"})
	listenOn(t, netip.AddrPortFrom(web.IPv4, 8080), web.NS)
	listenOn(t, netip.AddrPortFrom(web.IPv4, 8081), web.NS)
	listenOn(t, netip.AddrPortFrom(frontend.IPv4, 9090), frontend.NS)
	// The "plugin" enforces shop's default deny for its own clients only,
	// and something else drops every 5th packet from the frontend.
	for _, rule := range [][]string{
		{"-s", shopClient.IPv4.String(), "-j", "DROP"},
		{"-s", frontend.IPv4.String(), "-p", "tcp", "--dport", "8080", "-m", "statistic", "--mode", "nth", "--every", "5", "--packet", "4", "-j", "DROP"},
	} {
		_, err := web.NS.Exec(append([]string{"iptables", "-w", "-A", "INPUT"}, rule...)...)
		require.NoError(t, err)
	}
	cfg := testConfig(node.ID)
	cfg.K8s = K8sConfig{Enabled: true, AuthType: "kubeConfig", Kubeconfig: c.Kubeconfig, NetworkPolicies: true}
	s := startAll(t, cfg)
	for _, d := range []struct {
		from *testnet.Pod
		to   netip.AddrPort
	}{
		{frontend, netip.AddrPortFrom(web.IPv4, 8080)}, // allowed (named port), some packets dropped
		{frontend, netip.AddrPortFrom(web.IPv4, 8081)}, // denied: not the named port; delivered
		{outsider, netip.AddrPortFrom(web.IPv4, 8080)}, // denied: not a frontend namespace; delivered
		{shopClient, netip.AddrPortFrom(web.IPv4, 8080)},
		{shopClient, netip.AddrPortFrom(frontend.IPv4, 9090)}, // egress allowed by the ipBlock
	} {
		dialEvery(t, d.from.NS, d.to, 20000, 300*time.Millisecond)
	}

	type want struct {
		local, peer *testnet.Pod
		port        int64
		record      policyRecord
	}
	frontendIn := policyRecord{verdict: "allowed", direction: "ingress", names: []string{"shop/allow-frontend"}}
	droppedIn := frontendIn
	droppedIn.finding, droppedIn.dropReason = "allowed_but_dropped", "NETFILTER_DROP"
	deniedIn := policyRecord{verdict: "denied", direction: "ingress", names: []string{"shop/allow-frontend", "shop/default-deny"},
		finding: "denied_but_delivered"}
	cases := []want{
		{web, frontend, 8080, droppedIn},
		{web, frontend, 8081, deniedIn},
		{web, outsider, 8080, deniedIn},
		// Enforced: every packet from the shop client dropped, no reply.
		{web, shopClient, 8080, policyRecord{verdict: "denied", direction: "ingress", names: []string{"shop/allow-frontend", "shop/default-deny"}}},
		{shopClient, web, 8080, policyRecord{verdict: "denied", direction: "egress", names: []string{"shop/client-egress"}}},
		{shopClient, frontend, 9090, policyRecord{verdict: "allowed", direction: "egress", names: []string{"shop/client-egress"}}},
		{frontend, web, 8080, policyRecord{verdict: "no_policy", direction: "egress", finding: ""}},
	}
	missing := func() string {
		logs := s.logs.AllLogs()
		for _, w := range cases {
			got := policyRecords(logs, w.local.IPv4, w.peer.IPv4, w.port)
			if !slices.ContainsFunc(got, func(r policyRecord) bool { return fmt.Sprint(r) == fmt.Sprint(w.record) }) {
				return fmt.Sprintf("%s -> %s:%d: want a record %+v, got %+v", w.local.Name, w.peer.Name, w.port, w.record, got)
			}
		}
		return ""
	}
	for deadline := time.Now().Add(30 * time.Second); missing() != "" && time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
	}
	require.Empty(t, missing(), "verdicts on the flow records")

	logs := s.logs.AllLogs()
	for _, w := range cases {
		got := policyRecords(logs, w.local.IPv4, w.peer.IPv4, w.port)
		require.NotEmpty(t, got)
		if w.record.finding == "denied_but_delivered" || w.record.verdict == "no_policy" {
			continue // an interval may see only one direction of a connection: no finding then
		}
		for _, r := range got {
			require.Equal(t, w.record.verdict, r.verdict, "%s -> %s:%d: %+v", w.local.Name, w.peer.Name, w.port, got)
			require.Equal(t, w.record.names, r.names)
			if w.record.finding == "" {
				require.Empty(t, r.finding, "%s -> %s:%d: %+v", w.local.Name, w.peer.Name, w.port, got)
			}
		}
	}

	// The drops carry the peer's Kubernetes identity.
	drops := lastCumulative(t, s.metrics, "ebpfnet.packets.dropped")
	require.Positive(t, sumWhere(drops, and(podResource(web), attr("ebpfnet.drop.reason", "NETFILTER_DROP"),
		attr("peer.k8s.pod.name", "frontend-0"), attr("peer.k8s.namespace.name", "other"))), "%v", drops)

	// The metric counts the flows by verdict and finding on web.
	pts := lastCumulative(t, s.metrics, "ebpfnet.policy.flows")
	for _, m := range []func(series) bool{
		and(podResource(web), attr("ebpfnet.policy.verdict", "denied"), attr("ebpfnet.policy.finding", "denied_but_delivered"),
			attr("network.peer.address", outsider.IPv4.String())),
		and(podResource(web), attr("ebpfnet.policy.verdict", "allowed"), attr("ebpfnet.policy.finding", "allowed_but_dropped")),
		and(podResource(shopClient), attr("ebpfnet.policy.verdict", "denied"), attr("ebpfnet.policy.direction", "egress")),
	} {
		require.Positive(t, sumWhere(pts, m), "%v", pts)
	}
}
