package ebpfnetreceiver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ebpfnet/ebpfnet/internal/collectortest"
	"github.com/ebpfnet/ebpfnet/internal/k8stest"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestCollectorWithK8sAttributes: the ocb-built collector runs our receiver
// on a network-namespace node, then the stock k8s_attributes processor
// (kubeconfig auth to a real kube-apiserver, pod_association on our
// resource attributes), then file exporters the test reads. A remote
// "pod" dials a Service ClusterIP that kube-proxy-style iptables chains
// DNAT to a pod of this node. Asserted: resources carry the pod name,
// namespace and Deployment from the processor; spans, flow metrics and flow
// logs carry the peer pod, its workload, node and zone, and the client span
// the Service and the backend pod conntrack names, from our enrichment;
// deleting the peer pod is reflected; with
// the API server killed the data keeps coming.
func TestCollectorWithK8sAttributes(t *testing.T) {
	testnet.RequireRoot(t)
	c := k8stest.Start(t)
	bin := collectortest.Build(t)
	ctx := context.Background()
	const nodeName = "node-e2e"

	node := testnet.NewNode(t, 21)
	web := node.AddPod(t, 2)
	udpClient := node.AddPod(t, 3) // sends UDP to the Service through a socket LB; no pod in the API
	named := node.AddPod(t, 4)     // app.kubernetes.io/instance and name labels
	annotated := node.AddPod(t, 5) // the resource.opentelemetry.io/service.name annotation too
	remote := node.Remote

	// The cluster: this node and the remote one, a Deployment's pod here,
	// a StatefulSet's pod on the remote node, a Service for the Deployment.
	for _, n := range []struct{ name, zone string }{{nodeName, "zone-a"}, {"node-remote", "zone-b"}} {
		_, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name,
			Labels: map[string]string{"topology.kubernetes.io/zone": n.zone}}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	rs := shopWeb(t, c.Client, "web-5d8f")
	yes := true
	mkPod := func(name, nodeName string, ip netip.Addr, owner metav1.OwnerReference, labels map[string]string) {
		p, err := c.Client.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop",
			Labels: labels, OwnerReferences: []metav1.OwnerReference{owner}},
			Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
		require.NoError(t, err)
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
		_, err = c.Client.CoreV1().Pods("shop").UpdateStatus(ctx, p, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	mkPod("web-5d8f-x7k2p", nodeName, web.IPv4, metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: &yes},
		map[string]string{"app": "web", "pod-template-hash": "5d8f"}) // as the ReplicaSet controller labels them
	mkPod("api-0", nodeName, named.IPv4, metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "api",
		UID: "0b7c1e4a-0000-4000-8000-0000000000a1", Controller: &yes}, map[string]string{"app.kubernetes.io/name": "api", "app.kubernetes.io/instance": "shop-api"})
	p, err := c.Client.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "cart", Namespace: "shop",
		Labels:      map[string]string{"app.kubernetes.io/instance": "cart-1"},
		Annotations: map[string]string{"resource.opentelemetry.io/service.name": "checkout", "resource.opentelemetry.io/service.namespace": "payments"}},
		Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: annotated.IPv4.String(), PodIPs: []corev1.PodIP{{IP: annotated.IPv4.String()}}}
	_, err = c.Client.CoreV1().Pods("shop").UpdateStatus(ctx, p, metav1.UpdateOptions{})
	require.NoError(t, err)
	mkPod("client-0", "node-remote", remote.IPv4, metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "client",
		UID: "0b7c1e4a-0000-4000-8000-00000000c11e", Controller: &yes}, map[string]string{"app": "client"})
	svc, err := c.Client.CoreV1().Services("shop").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = c.Client.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{web.IPv4.String()}}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	clusterIP := netip.MustParseAddr(svc.Spec.ClusterIP)

	// kube-proxy's iptables mode: KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* DNAT.
	testnet.KubeProxy(t, clusterIP, web.IPv4)
	_, err = remote.NS.Exec("ip", "route", "add", k8stest.ServiceCIDR, "via", fmt.Sprintf("10.251.%d.1", node.ID))
	require.NoError(t, err)
	listenOn(t, netip.AddrPortFrom(web.IPv4, 8080), web.NS)
	listenOn(t, netip.AddrPortFrom(named.IPv4, 8081), named.NS)
	listenOn(t, netip.AddrPortFrom(annotated.IPv4, 8082), annotated.NS)

	// The collector.
	dir := t.TempDir()
	config := fmt.Sprintf(`
receivers:
  ebpfnet:
    interval: 500ms
    node_name: %[1]s
    interfaces: {include: '^(%[2]s-|%[3]s$)', exclude: '', uplink: '^%[3]s$'}
    k8s: {enabled: true, auth_type: kubeConfig, kubeconfig: %[4]s}
processors:
%[6]sexporters:
  file/traces: {path: %[5]s/traces.json}
  file/metrics: {path: %[5]s/metrics.json}
  file/logs: {path: %[5]s/logs.json}
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    traces: {receivers: [ebpfnet], processors: [k8s_attributes], exporters: [file/traces]}
    metrics: {receivers: [ebpfnet], processors: [k8s_attributes], exporters: [file/metrics]}
    logs: {receivers: [ebpfnet], processors: [k8s_attributes], exporters: [file/logs]}
`, nodeName, testnet.Prefix(node.ID), testnet.UplinkName(node.ID), c.Kubeconfig, dir, k8sAttributesConfig)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(config), 0o600))
	col := collectortest.Start(t, bin, filepath.Join(dir, "config.yaml"), func(cmd *exec.Cmd) {
		cmd.Env = append(os.Environ(), "K8S_NODE_NAME="+nodeName, "KUBECONFIG="+c.Kubeconfig)
	})

	// Traffic: the remote pod dials the Service every 200 ms.
	dialEvery(t, remote.NS, netip.AddrPortFrom(clusterIP, 80), 100, 200*time.Millisecond)

	isServer := func(s k8sSpan) bool {
		return s.span.Kind() == ptrace.SpanKindServer && str(s.res, "k8s.pod.ip") == web.IPv4.String()
	}
	isClient := func(s k8sSpan) bool {
		return s.span.Kind() == ptrace.SpanKindClient && str(s.span.Attributes(), "server.address") == clusterIP.String()
	}
	traces := filepath.Join(dir, "traces.json")
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		n := 0
		for _, s := range readSpans(traces) {
			if (isServer(s) || isClient(s)) && n < 4 {
				t.Logf("span %s: resource %v attributes %v", s.span.Name(), s.res.AsRaw(), s.span.Attributes().AsRaw())
				n++
			}
		}
		t.Logf("%d spans in total", len(readSpans(traces)))
	})
	require.Eventually(t, func() bool {
		var server, client bool
		for _, s := range readSpans(traces) {
			a := s.span.Attributes()
			if isServer(s) && str(s.res, "k8s.pod.name") == "web-5d8f-x7k2p" && str(s.res, "k8s.namespace.name") == "shop" &&
				str(s.res, "k8s.deployment.name") == "web" && str(a, "peer.k8s.pod.name") == "client-0" &&
				str(a, "peer.k8s.workload.kind") == "StatefulSet" && str(a, "peer.k8s.workload.name") == "client" &&
				str(a, "peer.k8s.node.name") == "node-remote" && str(a, "peer.cloud.availability_zone") == "zone-b" {
				server = true
			}
			// The client's socket kept the ClusterIP (server.address); the
			// node's conntrack names the backend kube-proxy chose.
			if isClient(s) && str(a, "network.peer.address") == web.IPv4.String() && str(a, "network.peer.port") == "8080" &&
				str(a, "peer.k8s.kind") == "pod" && str(a, "peer.k8s.pod.name") == "web-5d8f-x7k2p" &&
				str(a, "peer.k8s.service.name") == "web" && str(a, "peer.k8s.service.namespace") == "shop" {
				client = true
			}
		}
		return server && client
	}, 60*time.Second, 500*time.Millisecond, "server span with processor and peer metadata, client span naming the Service and its backend")

	serviceNames(t, traces, dir, remote, []serviceCase{
		{web.IPv4, 8080, "web", "shop"}, // the Deployment (the ReplicaSet's owner)
		{named.IPv4, 8081, "shop-api", "shop"},
		{annotated.IPv4, 8082, "checkout", "payments"},
	}, udpClient, nodeName)

	// Flow metrics and flow logs of the pod: the same resource and peer.
	require.Eventually(t, func() bool {
		found := false
		jsonLines(filepath.Join(dir, "metrics.json"), func(line []byte) error {
			md, err := (&pmetric.JSONUnmarshaler{}).UnmarshalMetrics(line)
			if err != nil {
				return err
			}
			for i := 0; i < md.ResourceMetrics().Len(); i++ {
				rm := md.ResourceMetrics().At(i)
				if str(rm.Resource().Attributes(), "k8s.pod.name") != "web-5d8f-x7k2p" {
					continue
				}
				ms := rm.ScopeMetrics().At(0).Metrics()
				for k := 0; k < ms.Len(); k++ {
					if ms.At(k).Name() != "ebpfnet.flow.io" {
						continue
					}
					dps := ms.At(k).Sum().DataPoints()
					for p := 0; p < dps.Len(); p++ {
						a := dps.At(p).Attributes()
						if str(a, "peer.k8s.pod.name") == "client-0" && str(a, "peer.k8s.workload.name") == "client" {
							found = true
						}
					}
				}
			}
			return nil
		})
		return found
	}, 30*time.Second, 500*time.Millisecond, "flow metric of the web pod with the peer pod")
	require.Eventually(t, func() bool {
		return anyLogRecord(filepath.Join(dir, "logs.json"), func(res, a pcommon.Map) bool {
			return str(res, "k8s.pod.name") == "web-5d8f-x7k2p" && str(a, "peer.k8s.pod.name") == "client-0"
		})
	}, 30*time.Second, 500*time.Millisecond, "flow log of the web pod with the peer pod")

	// UDP through a socket-level load balancer (attached after the
	// collector's programs, as Cilium's would be on a node where the agent
	// runs first): the client pod sends to the ClusterIP, the datagrams go
	// to the web pod, and the client's flow log names the Service it sent
	// to (the collector's sendmsg4 hook) and the backend pod that got them.
	udpService, udpBackend := netip.AddrPortFrom(clusterIP, 53), netip.AddrPortFrom(web.IPv4, 5353)
	lbProg, err := testnet.SocketLB(ebpf.AttachCGroupUDP4Sendmsg, udpService, udpBackend)
	require.NoError(t, err)
	t.Cleanup(func() { lbProg.Close() })
	cgRoot, err := kernel.Cgroup2Root()
	require.NoError(t, err)
	lbLink, err := link.AttachCgroup(link.CgroupOptions{Path: cgRoot, Attach: ebpf.AttachCGroupUDP4Sendmsg, Program: lbProg})
	require.NoError(t, err)
	t.Cleanup(func() { lbLink.Close() })
	var udpPort uint16
	require.NoError(t, udpClient.NS.Do(func() error {
		conn, err := net.ListenUDP("udp4", nil)
		if err != nil {
			return err
		}
		udpPort = conn.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		go func() {
			defer conn.Close()
			for i := 0; i < 100; i++ {
				if _, err := conn.WriteToUDPAddrPort([]byte("query"), udpService); err != nil {
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
		return nil
	}))
	require.Eventually(t, func() bool {
		return anyLogRecord(filepath.Join(dir, "logs.json"), func(res, a pcommon.Map) bool {
			return str(res, "k8s.pod.ip") == udpClient.IPv4.String() &&
				str(a, "network.transport") == "udp" && str(a, "destination.address") == web.IPv4.String() &&
				str(a, "source.port") == fmt.Sprint(udpPort) &&
				str(a, "server.address") == clusterIP.String() && str(a, "server.port") == "53" &&
				str(a, "peer.k8s.service.name") == "web" && str(a, "peer.k8s.service.namespace") == "shop" &&
				str(a, "peer.k8s.pod.name") == "web-5d8f-x7k2p"
		})
	}, 30*time.Second, 500*time.Millisecond, "UDP flow log through a socket LB names the Service sent to and the backend pod")

	// TCP from the same local pod to the ClusterIP through kube-proxy's
	// DNAT (in the node, after the pod's veth): its packets carry the
	// ClusterIP, and the flow log names the backend from conntrack.
	tcpPort, err := testnet.Dial(udpClient.NS, netip.AddrPortFrom(clusterIP, 80), 1000, 2*time.Second)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return anyLogRecord(filepath.Join(dir, "logs.json"), func(res, a pcommon.Map) bool {
			return str(res, "k8s.pod.ip") == udpClient.IPv4.String() && str(a, "network.transport") == "tcp" &&
				str(a, "network.io.direction") == "transmit" && str(a, "source.port") == fmt.Sprint(tcpPort) &&
				str(a, "destination.address") == clusterIP.String() &&
				str(a, "server.address") == clusterIP.String() && str(a, "server.port") == "80" &&
				str(a, "network.peer.address") == web.IPv4.String() && str(a, "network.peer.port") == "8080" &&
				str(a, "peer.k8s.pod.name") == "web-5d8f-x7k2p" && str(a, "peer.k8s.service.name") == "web"
		})
	}, 30*time.Second, 500*time.Millisecond, "TCP flow log through kube-proxy's DNAT names the ClusterIP and the backend pod")

	// The peer pod is deleted: later spans no longer name it.
	zero := int64(0)
	require.NoError(t, c.Client.CoreV1().Pods("shop").Delete(ctx, "client-0", metav1.DeleteOptions{GracePeriodSeconds: &zero}))
	deleted := time.Now()
	require.Eventually(t, func() bool {
		for _, s := range readSpans(traces) {
			if isServer(s) && s.span.StartTimestamp().AsTime().After(deleted.Add(2*time.Second)) {
				return str(s.span.Attributes(), "peer.k8s.pod.name") == ""
			}
		}
		return false
	}, 30*time.Second, 500*time.Millisecond, "spans after the delete have no peer pod")

	// The API server dies: the data keeps coming, still with the local
	// pod's metadata (the processor's cache).
	c.StopAPIServer()
	killed := time.Now()
	require.Eventually(t, func() bool {
		n := 0
		for _, s := range readSpans(traces) {
			if isServer(s) && s.span.StartTimestamp().AsTime().After(killed.Add(2*time.Second)) &&
				str(s.res, "k8s.pod.name") == "web-5d8f-x7k2p" {
				n++
			}
		}
		return n >= 5
	}, 30*time.Second, 500*time.Millisecond, "spans keep coming with the API server down")
	output := col.Output
	const clearError = "Kubernetes API: cannot list/watch"
	require.Eventually(t, func() bool { return strings.Contains(output(), clearError) }, 20*time.Second, 200*time.Millisecond,
		"our informers log that the API server is gone")
	time.Sleep(6 * time.Second) // a few more failed probes and watch retries
	require.Equal(t, 1, strings.Count(output(), clearError), "one clear error, not one per retry:\n%s", output())
}

type serviceCase struct {
	ip            netip.Addr
	port          uint16
	name, service string
}

// serviceNames: the remote client dials each local pod; k8s_attributes
// names each server span's resource by the OpenTelemetry conventions
// (annotation, instance label, workload), and the client span's
// peer.service, from the receiver's own informers, is that same name: the
// two ends of a service-graph edge agree. The unknown pod and the node
// keep the receiver's fallbacks (its address, the node name).
func serviceNames(t *testing.T, traces, dir string, remote *testnet.Host, cases []serviceCase, unknown *testnet.Pod, nodeName string) {
	t.Helper()
	for _, c := range cases {
		_, err := testnet.Dial(remote.NS, netip.AddrPortFrom(c.ip, c.port), 100, 2*time.Second)
		require.NoError(t, err)
	}
	_, err := testnet.Dial(unknown.NS, netip.AddrPortFrom(cases[0].ip, cases[0].port), 100, 2*time.Second)
	require.NoError(t, err)
	for _, c := range cases {
		require.Eventually(t, func() bool {
			var server, client bool
			for _, s := range readSpans(traces) {
				a := s.span.Attributes()
				if s.span.Kind() == ptrace.SpanKindServer && str(s.res, "k8s.pod.ip") == c.ip.String() && str(a, "network.local.port") == fmt.Sprint(c.port) {
					server = str(s.res, "service.name") == c.name && str(s.res, "service.namespace") == c.service
				}
				if s.span.Kind() == ptrace.SpanKindClient && str(a, "server.address") == c.ip.String() && str(a, "server.port") == fmt.Sprint(c.port) {
					client = str(a, "peer.service") == c.name
				}
			}
			return server && client
		}, 30*time.Second, 300*time.Millisecond, "%s: server resource service.name %s/%s (k8s_attributes), client peer.service the same", c.ip, c.service, c.name)
	}
	require.Eventually(t, func() bool {
		return anyLogRecord(filepath.Join(dir, "logs.json"), func(res, _ pcommon.Map) bool {
			return str(res, "k8s.pod.ip") == unknown.IPv4.String() && str(res, "service.name") == unknown.IPv4.String()
		})
	}, 30*time.Second, 300*time.Millisecond, "a pod the API does not know: its address")
	found := false
	jsonLines(filepath.Join(dir, "metrics.json"), func(line []byte) error {
		md, err := (&pmetric.JSONUnmarshaler{}).UnmarshalMetrics(line)
		for i := 0; err == nil && i < md.ResourceMetrics().Len(); i++ {
			res := md.ResourceMetrics().At(i).Resource().Attributes()
			found = found || (str(res, "k8s.pod.ip") == "" && str(res, "service.name") == nodeName)
		}
		return err
	})
	require.True(t, found, "the node's resource: the node name")
}

// listenOn accepts TCP connections at addr in ns until the test ends.
func listenOn(t *testing.T, addr netip.AddrPort, ns *testnet.Netns) {
	ln, err := testnet.ListenTCP(ns, addr)
	require.NoError(t, err)
	t.Cleanup(ln.Close)
}
