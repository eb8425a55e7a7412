package k8s

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/ebpfnet/ebpfnet/internal/k8stest"
)

// objects creates Kubernetes objects the way controllers and the kubelet
// would leave them (no controller runs in the test control plane).
type objects struct {
	t      *testing.T
	ctx    context.Context
	client kubernetes.Interface
}

var yes = true

func (o objects) node(name, zone, ip string) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{zoneLabel: zone}}}
	n, err := o.client.CoreV1().Nodes().Create(o.ctx, n, metav1.CreateOptions{})
	require.NoError(o.t, err)
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	_, err = o.client.CoreV1().Nodes().UpdateStatus(o.ctx, n, metav1.UpdateOptions{})
	require.NoError(o.t, err)
}

func owner(kind, name string, uid string) []metav1.OwnerReference {
	apiVersion := "apps/v1"
	if kind == "Job" || kind == "CronJob" {
		apiVersion = "batch/v1"
	}
	return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: typesUID(uid), Controller: &yes}}
}

// pod creates a pod and sets its status like the kubelet: IP and phase.
func (o objects) pod(ns, name, node, ip string, phase corev1.PodPhase, hostNetwork bool, owners []metav1.OwnerReference) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, OwnerReferences: owners},
		Spec: corev1.PodSpec{NodeName: node, HostNetwork: hostNetwork, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	p, err := o.client.CoreV1().Pods(ns).Create(o.ctx, p, metav1.CreateOptions{})
	require.NoError(o.t, err)
	p.Status.Phase = phase
	p.Status.PodIP = ip
	p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	p, err = o.client.CoreV1().Pods(ns).UpdateStatus(o.ctx, p, metav1.UpdateOptions{})
	require.NoError(o.t, err)
	return p
}

func (o objects) namespace(name string) {
	_, err := o.client.CoreV1().Namespaces().Create(o.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(o.t, err)
}

// service creates a ClusterIP Service and returns the IP the API server
// allocated, plus an EndpointSlice listing the backends.
func (o objects) service(ns, name string, backends ...string) netip.Addr {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	s, err := o.client.CoreV1().Services(ns).Create(o.ctx, s, metav1.CreateOptions{})
	require.NoError(o.t, err)
	eps := make([]discoveryv1.Endpoint, len(backends))
	for i, b := range backends {
		eps[i] = discoveryv1.Endpoint{Addresses: []string{b}}
	}
	_, err = o.client.DiscoveryV1().EndpointSlices(ns).Create(o.ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps}, metav1.CreateOptions{})
	require.NoError(o.t, err)
	return netip.MustParseAddr(s.Spec.ClusterIP)
}

func eventually(t *testing.T, r *Resolver, ip string, want Peer) {
	t.Helper()
	var got Peer
	require.Eventually(t, func() bool {
		got, _ = r.Lookup(netip.MustParseAddr(ip))
		return got == want
	}, 20*time.Second, 50*time.Millisecond, "lookup %s: got %+v, want %+v", ip, &got, &want)
}

// TestResolverAgainstAPIServer: a real kube-apiserver; peers resolve to
// pods with their top owner workload, node and zone, to Services, to nodes
// (hostNetwork pods too); terminated pods do not shadow a reused IP; updates
// and deletes are reflected; with the API server gone lookups keep
// answering, one error is logged, and enrichment resumes when it is back.
func TestResolverAgainstAPIServer(t *testing.T) {
	c := k8stest.Start(t)
	ctx := context.Background()
	o := objects{t, ctx, c.Client}
	o.namespace("shop")
	o.node("node-a", "zone-a", "10.1.0.1")
	o.node("node-b", "zone-b", "10.1.0.2")

	dep, err := c.Client.AppsV1().Deployments("shop").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	rs, err := c.Client.AppsV1().ReplicaSets("shop").Create(ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-7f9c", OwnerReferences: owner("Deployment", "web", string(dep.UID))},
		Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	job, err := c.Client.BatchV1().Jobs("shop").Create(ctx, &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "report-2911", OwnerReferences: owner("CronJob", "report", "4b6f3a52-0000-4000-8000-000000000001")},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}, metav1.CreateOptions{})
	require.NoError(t, err)

	web := o.pod("shop", "web-7f9c-x1", "node-a", "10.244.1.10", corev1.PodRunning, false, owner("ReplicaSet", rs.Name, string(rs.UID)))
	o.pod("shop", "db-0", "node-b", "10.244.2.20", corev1.PodRunning, false, owner("StatefulSet", "db", "4b6f3a52-0000-4000-8000-000000000002"))
	o.pod("shop", "report-2911-abc", "node-b", "10.244.2.21", corev1.PodRunning, false, owner("Job", job.Name, string(job.UID)))
	o.pod("shop", "bare", "node-a", "10.244.1.11", corev1.PodRunning, false, nil)
	o.pod("kube-system", "proxy-node-b", "node-b", "10.1.0.2", corev1.PodRunning, true, owner("DaemonSet", "kube-proxy", "4b6f3a52-0000-4000-8000-000000000003"))
	// A finished pod whose IP now belongs to a new pod, and a finished pod alone.
	o.pod("shop", "old", "node-a", "10.244.1.12", corev1.PodSucceeded, false, nil)
	o.pod("shop", "new", "node-a", "10.244.1.12", corev1.PodRunning, false, nil)
	o.pod("shop", "done", "node-a", "10.244.1.13", corev1.PodFailed, false, nil)
	clusterIP := o.service("shop", "web", "10.244.1.10")

	core, logs := observer.New(zapcore.DebugLevel)
	r, err := New(c.Client, zap.New(core))
	require.NoError(t, err)
	r.HealthInterval = 200 * time.Millisecond
	r.Start()
	t.Cleanup(r.Stop)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.True(t, r.WaitSynced(sctx))

	eventually(t, r, "10.244.1.10", Peer{Kind: KindPod, Name: "web-7f9c-x1", Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "web",
		NodeName: "node-a", Zone: "zone-a", ServiceName: "web", ServiceNamespace: "shop", OTelService: "web", OTelNamespace: "shop"})
	eventually(t, r, "10.244.2.20", Peer{Kind: KindPod, Name: "db-0", Namespace: "shop", WorkloadKind: "StatefulSet", WorkloadName: "db", NodeName: "node-b", Zone: "zone-b", OTelService: "db", OTelNamespace: "shop"})
	eventually(t, r, "10.244.2.21", Peer{Kind: KindPod, Name: "report-2911-abc", Namespace: "shop", WorkloadKind: "CronJob", WorkloadName: "report", NodeName: "node-b", Zone: "zone-b", OTelService: "report", OTelNamespace: "shop"})
	eventually(t, r, "10.244.1.11", Peer{Kind: KindPod, Name: "bare", Namespace: "shop", NodeName: "node-a", Zone: "zone-a", OTelService: "bare", OTelNamespace: "shop"})
	eventually(t, r, "10.1.0.2", Peer{Kind: KindNode, Name: "node-b", NodeName: "node-b", Zone: "zone-b", OTelService: "node-b"}) // hostNetwork pod's IP: its node
	eventually(t, r, "10.244.1.12", Peer{Kind: KindPod, Name: "new", Namespace: "shop", NodeName: "node-a", Zone: "zone-a", OTelService: "new", OTelNamespace: "shop"})
	eventually(t, r, "10.244.1.13", Peer{})
	eventually(t, r, clusterIP.String(), Peer{Kind: KindService, Name: "web", Namespace: "shop", OTelService: "web", OTelNamespace: "shop"})
	// The Service's EndpointSlice lists web's pod: it backs the Service, no
	// other address does, and a pod IP is not a Service.
	require.True(t, r.Backs(clusterIP, netip.MustParseAddr("10.244.1.10")))
	require.True(t, r.Backs(clusterIP, netip.MustParseAddr("::ffff:10.244.1.10")))
	require.False(t, r.Backs(clusterIP, netip.MustParseAddr("10.244.2.20")))
	require.False(t, r.Backs(netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("10.244.1.10")))
	eventually(t, r, "::ffff:10.244.2.20", Peer{Kind: KindPod, Name: "db-0", Namespace: "shop", WorkloadKind: "StatefulSet", WorkloadName: "db", NodeName: "node-b", Zone: "zone-b", OTelService: "db", OTelNamespace: "shop"})

	// Updates and deletes.
	web.Status.Phase = corev1.PodSucceeded
	_, err = c.Client.CoreV1().Pods("shop").UpdateStatus(ctx, web, metav1.UpdateOptions{})
	require.NoError(t, err)
	eventually(t, r, "10.244.1.10", Peer{})
	// Deleted with no grace period: what the kubelet's confirmation does
	// after a graceful delete (no kubelet runs here).
	zero := int64(0)
	require.NoError(t, c.Client.CoreV1().Pods("shop").Delete(ctx, "db-0", metav1.DeleteOptions{GracePeriodSeconds: &zero}))
	eventually(t, r, "10.244.2.20", Peer{})
	require.Zero(t, logs.FilterLevelExact(zapcore.ErrorLevel).Len())

	// The API server goes away: cached answers stay, one error is logged.
	c.StopAPIServer()
	require.Eventually(t, func() bool { return r.WatchFailures() > 3 }, 10*time.Second, 100*time.Millisecond)
	eventually(t, r, "10.244.1.11", Peer{Kind: KindPod, Name: "bare", Namespace: "shop", NodeName: "node-a", Zone: "zone-a", OTelService: "bare", OTelNamespace: "shop"})
	require.Equal(t, 1, logs.FilterLevelExact(zapcore.ErrorLevel).Len(), "one clear error while the API is down: %v", logs.FilterLevelExact(zapcore.ErrorLevel).All())

	// It comes back: a pod created meanwhile is found, recovery is logged.
	c.StartAPIServer()
	o.pod("shop", "late", "node-b", "10.244.2.30", corev1.PodRunning, false, nil)
	eventually(t, r, "10.244.2.30", Peer{Kind: KindPod, Name: "late", Namespace: "shop", NodeName: "node-b", Zone: "zone-b", OTelService: "late", OTelNamespace: "shop"})
	require.Eventually(t, func() bool { return logs.FilterMessageSnippet("reachable again").Len() == 1 }, 20*time.Second, 100*time.Millisecond)
}

func typesUID(s string) types.UID { return types.UID(s) }
