package ebpfnetreceiver

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/ebpfnet/ebpfnet/internal/collectortest"
	"github.com/ebpfnet/ebpfnet/internal/image"
	"github.com/ebpfnet/ebpfnet/internal/k8stest"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// agentImage is the ocb collector's image, as `make image` builds it, under
// the name the test's kustomize overlay sets.
const agentImage = "docker.io/ebpfnet/otelcol-ebpfnet:e2e"

func agentArchive(t *testing.T) string {
	img, err := image.Build(image.Spec{Binary: collectortest.Build(t), CACerts: "/etc/ssl/certs/ca-certificates.crt",
		Version: "e2e", Arch: runtime.GOARCH, Created: time.Unix(0, 0).UTC()})
	require.NoError(t, err)
	path := filepath.Join(k8stest.CacheDir(t), "images", "otelcol-ebpfnet-e2e.tar")
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, image.WriteArchive(path, agentImage, img))
	return path
}

// agentOverlay is a kustomize overlay of examples/kubernetes as a user
// would write it: the image from `images:`, the exporter pointed at sink
// (the gateway's upstream images cannot be pulled here, so it goes), a 2 s
// interval.
func agentOverlay(t *testing.T, sink string) string {
	examples, err := filepath.Abs(filepath.Join("..", "..", "examples", "kubernetes"))
	require.NoError(t, err)
	var cm corev1.ConfigMap
	raw, err := os.ReadFile(filepath.Join(examples, "20-agent-config.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, &cm))
	conf := cm.Data["config.yaml"]
	for old, repl := range map[string]string{"endpoint: otel-gateway.ebpfnet.svc:4317": "endpoint: " + sink, "interval: 10s": "interval: 2s"} {
		require.Contains(t, conf, old)
		conf = strings.ReplaceAll(conf, old, repl)
	}
	dir := t.TempDir()
	rel, err := filepath.Rel(dir, examples)
	require.NoError(t, err)
	value, _ := json.Marshal(conf)
	del := func(kind, name string) string {
		return fmt.Sprintf("  - patch: |-\n      $patch: delete\n      apiVersion: v1\n      kind: %s\n      metadata: {name: %s, namespace: ebpfnet}\n", kind, name)
	}
	k := "resources: [" + rel + "]\n" +
		"images:\n  - {name: ebpfnet/otelcol-ebpfnet, newName: docker.io/ebpfnet/otelcol-ebpfnet, newTag: e2e}\n" +
		"patches:\n" +
		"  - target: {kind: ConfigMap, name: ebpfnet-agent}\n    patch: '[{\"op\": \"replace\", \"path\": \"/data/config.yaml\", \"value\": " +
		strings.ReplaceAll(string(value), "'", "''") + "}]'\n" +
		strings.ReplaceAll(del("Deployment", "otel-gateway"), "apiVersion: v1", "apiVersion: apps/v1") +
		strings.ReplaceAll(del("Deployment", "otel-sampler"), "apiVersion: v1", "apiVersion: apps/v1") +
		del("Service", "otel-gateway") + del("Service", "otel-sampler") + del("ConfigMap", "otel-gateway")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644))
	return dir
}

// TestAgentOnRealNode applies examples/kubernetes (through an overlay) to a
// real single-node cluster (kubelet, containerd, runc, the bridge CNI,
// kube-proxy) and checks what a platform engineer would: the agent Running
// and Ready under the manifest's security context as the runtime applied
// it, and the real pods' identity on what it exports.
func TestAgentOnRealNode(t *testing.T) {
	testnet.RequireRoot(t)
	n := k8stest.StartNode(t, k8stest.ProgramImage(t, "internal/k8stest/pause", k8stest.PauseImage))
	n.Import(t, k8stest.ProgramImage(t, "internal/k8stest/testapp", k8stest.TestAppImage))
	n.Import(t, agentArchive(t))
	n.Import(t, k8stest.CoreDNSArchive(t))
	sink := startOTLPSink(t, k8stest.NodeAddr.String())
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	out, err := n.Kubectl(ctx, "apply", "-k", agentOverlay(t, sink.Addr))
	require.NoError(t, err, out)
	agent := n.WaitReady(ctx, t, "ebpfnet", "app.kubernetes.io/name=ebpfnet-agent", 1)[0]
	requireUnprivileged(t, n, &agent)

	svc := n.RunTestApp(ctx, t, "shop", 2)
	client := n.RunTestClient(ctx, t, "shop", "client", svc.Spec.ClusterIP, 1000)
	pod, err := n.Client.CoreV1().Pods("shop").Get(ctx, client, metav1.GetOptions{})
	require.NoError(t, err)
	containerID := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")

	// A client span of the real pod, enriched by k8s_attributes, with the
	// UID and container the API server reports for it.
	var span ptrace.Span
	var res pcommon.Map
	ok := assert.Eventually(t, func() bool {
		for _, td := range sink.Traces() {
			if s, r, found := findSpan(td, func(res pcommon.Map, s ptrace.Span) bool {
				return s.Kind() == ptrace.SpanKindClient && str(res, "k8s.pod.name") == client
			}); found {
				span, res = s, r
				return true
			}
		}
		return false
	}, 2*time.Minute, time.Second)
	n.Alive(t)
	require.True(t, ok, "a client span of pod %s; received: %s\nagent log: %s", client, describeSpans(sink.Traces()),
		n.PodLog(ctx, t, "ebpfnet", agent.Name))
	require.Equal(t, string(pod.UID), str(res, "k8s.pod.uid"))
	require.Equal(t, containerID, str(res, "container.id"))
	require.Equal(t, "shop", str(res, "k8s.namespace.name"))
	require.Equal(t, "client", str(res, "k8s.deployment.name"))
	require.Equal(t, svc.Spec.ClusterIP, str(span.Attributes(), "server.address"))
	// service.name / service.namespace as the OpenTelemetry Kubernetes
	// conventions derive them: the client's from its app.kubernetes.io/name
	// label; the web pods' from their annotation, which wins over the label.
	require.Equal(t, "client", str(res, "service.name"))
	require.Equal(t, "shop", str(res, "service.namespace"))
	webs, err := n.Client.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=web"})
	require.NoError(t, err)
	requireConnectionsStitched(t, sink, client, svc.Spec.ClusterIP, webs.Items)

	// Each pod's flows against its CNI veth's own counters.
	requireFlowsMatchVeths(ctx, t, n, sink, append([]corev1.Pod{*pod}, webs.Items...), pod.Status.ContainerStatuses[0].ContainerID)

	// Cluster DNS: a pod's lookups of a Service name through kube-dns.
	requireClusterDNS(ctx, t, n, sink, svc)

	// The kubelet restarts a killed agent; a rolling update replaces it.
	// Neither leaves anything of the old instance loaded or attached.
	requireReplacedCleanly(ctx, t, n, sink, "SIGKILL", func() { killContainer(t, n, agent.Status.ContainerStatuses[0].ContainerID) })
	requireReplacedCleanly(ctx, t, n, sink, "rolling update", func() {
		out, err := n.Kubectl(ctx, "-n", "ebpfnet", "rollout", "restart", "daemonset/ebpfnet-agent")
		require.NoError(t, err, out)
	})
}

// agentContainer is the running agent's container ID.
func agentContainer(ctx context.Context, t *testing.T, n *k8stest.Node) string {
	pods, err := n.Client.CoreV1().Pods("ebpfnet").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ebpfnet-agent"})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1)
	require.Len(t, pods.Items[0].Status.ContainerStatuses, 1)
	return pods.Items[0].Status.ContainerStatuses[0].ContainerID
}

// killContainer sends SIGKILL to a container's process.
func killContainer(t *testing.T, n *k8stest.Node, id string) {
	require.NoError(t, syscall.Kill(taskPID(t, n, id), syscall.SIGKILL))
}

// requireConnectionsStitched: every request connection of the client pod
// to the Service has its client and server span in one trace (the server's
// parent is the client's span), the client span names the Service and the
// backend pod the real kube-proxy's DNAT chose, as the node's conntrack says
// for the connections it still remembers, and the server span's resource is
// that pod, named as its annotation says.
func requireConnectionsStitched(t *testing.T, sink *otlpSink, client, clusterIP string, webs []corev1.Pod) {
	backends := map[string]string{} // pod IP -> name
	for _, p := range webs {
		backends[p.Status.PodIP] = p.Name
	}
	time.Sleep(5 * time.Second) // two intervals: the server spans of the last client spans
	clients, servers := map[pcommon.TraceID]ptrace.Span{}, map[pcommon.TraceID]pcommon.Map{}
	serverSpans := map[pcommon.TraceID]ptrace.Span{}
	for _, td := range sink.Traces() {
		findSpan(td, func(res pcommon.Map, s ptrace.Span) bool {
			switch {
			case s.Kind() == ptrace.SpanKindClient && str(res, "k8s.pod.name") == client && str(s.Attributes(), "ebpfnet.tcp.close_reason") == "closed":
				clients[s.TraceID()] = s
			case s.Kind() == ptrace.SpanKindServer && backends[str(res, "k8s.pod.ip")] != "":
				servers[s.TraceID()], serverSpans[s.TraceID()] = res, s
			}
			return false
		})
	}
	require.GreaterOrEqual(t, len(clients), 5, "request connections of %s", client)
	cutoff := time.Now().Add(-4 * time.Second)
	checked, conntracked := 0, 0
	for trace, c := range clients {
		if c.EndTimestamp().AsTime().After(cutoff) {
			continue // its server span may be in the next interval
		}
		a := c.Attributes()
		backend := str(a, "network.peer.address")
		require.Contains(t, backends, backend, "the client span's peer is a backend pod")
		require.Equal(t, backends[backend], str(a, "peer.k8s.pod.name"))
		require.Equal(t, "web", str(a, "peer.k8s.service.name"))
		require.Equal(t, clusterIP, str(a, "server.address"))
		if ct, ok := conntrackBackend(t, clusterIP, a.AsRaw()["client.port"]); ok {
			require.Equal(t, ct, backend, "the backend kube-proxy's DNAT chose, as conntrack says")
			conntracked++
		}
		res, ok := servers[trace]
		require.True(t, ok, "the server span of connection %v in the same trace (%d client, %d server spans; all: %s)",
			a.AsRaw(), len(clients), len(servers), describeSpans(sink.Traces()))
		require.Equal(t, c.SpanID(), serverSpans[trace].ParentSpanID(), "the server span's parent is the client span")
		require.Equal(t, backends[backend], str(res, "k8s.pod.name"), "the server span is on the backend pod")
		require.Equal(t, k8stest.WebServiceName, str(res, "service.name"), "the annotation wins over the label")
		checked++
	}
	require.GreaterOrEqual(t, checked, 3)
	require.NotZero(t, conntracked, "conntrack still knew some of the connections")
}

// conntrackBackend asks the node's conntrack (the conntrack tool, not our
// code) where the TCP connection from port to clusterIP:80 went.
func conntrackBackend(t *testing.T, clusterIP string, port any) (string, bool) {
	out, err := exec.Command("conntrack", "-L", "-p", "tcp", "--dst", clusterIP, "--dport", "80",
		"--sport", fmt.Sprint(port)).Output()
	if err != nil {
		return "", false
	}
	// tcp 6 117 TIME_WAIT src=C dst=SVC sport=P dport=80 src=BACKEND dst=C sport=8080 dport=P ...
	f := strings.Fields(string(out))
	n := 0
	for _, w := range f {
		if strings.HasPrefix(w, "src=") {
			if n++; n == 2 {
				return strings.TrimPrefix(w, "src="), true
			}
		}
	}
	return "", false
}

// describeSpans lists the resources and names of what arrived (a failure's
// evidence).
func describeSpans(tds []ptrace.Traces) string {
	var b strings.Builder
	n := 0
	for _, td := range tds {
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			rs := td.ResourceSpans().At(i)
			for j := 0; j < rs.ScopeSpans().Len(); j++ {
				ss := rs.ScopeSpans().At(j).Spans()
				for k := 0; k < ss.Len() && n < 20; k++ {
					fmt.Fprintf(&b, "\n  %s %v %v", ss.At(k).Name(), rs.Resource().Attributes().AsRaw(), ss.At(k).Attributes().AsRaw())
					n++
				}
			}
		}
	}
	return fmt.Sprintf("%d batches%s", len(tds), b.String())
}

// requireUnprivileged checks the agent's security context in the API and in
// the OCI spec containerd gave runc: not privileged, the runtime's default
// seccomp profile, exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, a
// read-only root filesystem.
func requireUnprivileged(t *testing.T, n *k8stest.Node, agent *corev1.Pod) {
	sc := agent.Spec.Containers[0].SecurityContext
	require.False(t, sc.Privileged != nil && *sc.Privileged)
	require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, agent.Spec.SecurityContext.SeccompProfile.Type)
	id := strings.TrimPrefix(agent.Status.ContainerStatuses[0].ContainerID, "containerd://")
	info, err := n.Ctr("containers", "info", id)
	require.NoError(t, err, info)
	var c struct {
		Spec struct {
			Process struct {
				Capabilities struct {
					Bounding, Effective, Permitted []string
				}
			}
			Root struct {
				Readonly bool
			}
			Linux struct {
				Seccomp *struct {
					DefaultAction string
					Syscalls      []any
				}
			}
		}
	}
	require.NoError(t, json.Unmarshal([]byte(info), &c))
	caps := []string{"CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"}
	require.ElementsMatch(t, caps, c.Spec.Process.Capabilities.Bounding)
	require.ElementsMatch(t, caps, c.Spec.Process.Capabilities.Effective)
	require.True(t, c.Spec.Root.Readonly, "read-only root filesystem")
	require.NotNil(t, c.Spec.Linux.Seccomp, "a seccomp profile")
	require.Equal(t, "SCMP_ACT_ERRNO", c.Spec.Linux.Seccomp.DefaultAction, "the runtime's default profile denies what it does not list")
	require.NotEmpty(t, c.Spec.Linux.Seccomp.Syscalls)
}

// findSpan returns the first span of td that match accepts, with its
// resource's attributes.
func findSpan(td ptrace.Traces, match func(res pcommon.Map, s ptrace.Span) bool) (ptrace.Span, pcommon.Map, bool) {
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j).Spans()
			for k := 0; k < ss.Len(); k++ {
				if match(rs.Resource().Attributes(), ss.At(k)) {
					return ss.At(k), rs.Resource().Attributes(), true
				}
			}
		}
	}
	return ptrace.Span{}, pcommon.Map{}, false
}

// agentPrograms are the kernel IDs of the agent's loaded BPF programs
// (bpftool: the kernel's view, not ours), by the names our object gives
// them.
func agentPrograms(t *testing.T) map[int]string {
	out, err := exec.Command("bpftool", "-j", "prog", "show").Output()
	require.NoError(t, err)
	var progs []struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	require.NoError(t, json.Unmarshal(out, &progs))
	ours := map[string]bool{"endpoint_ingress": true, "endpoint_egress": true, "uplink_ingress": true, "uplink_egress": true,
		"inet_sock_set_state": true, "tcp_sockops": true, "record_connect4": true}
	ids := map[int]string{}
	for _, p := range progs {
		if ours[p.Name] {
			ids[p.ID] = p.Name
		}
	}
	return ids
}

// requireReplacedCleanly: after restart (which ends the running agent), a
// new agent is Ready, none of the old instance's programs is loaded (so none
// is attached), the new one's are, and it reports within two intervals of
// being Ready.
func requireReplacedCleanly(ctx context.Context, t *testing.T, n *k8stest.Node, sink *otlpSink, what string, restart func()) {
	old := agentPrograms(t)
	require.NotEmpty(t, old, "the running agent's programs")
	oldContainer := agentContainer(ctx, t, n)
	restart()
	var ready corev1.Pod
	require.Eventually(t, func() bool {
		pods, err := n.Client.CoreV1().Pods("ebpfnet").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ebpfnet-agent"})
		if err != nil || len(pods.Items) != 1 {
			return false
		}
		p := pods.Items[0]
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil &&
				len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil &&
				p.Status.ContainerStatuses[0].ContainerID != oldContainer {
				ready = p
				return true
			}
		}
		return false
	}, 2*time.Minute, 200*time.Millisecond, "%s: a new agent Ready", what)
	readyAt, batches := time.Now(), len(sink.Metrics()) // the old agent is gone: what comes now is the new one's
	// Two intervals (2 s each), and a second for the batch processor and the export.
	require.Eventually(t, func() bool { return len(sink.Metrics()) > batches }, 2*2*time.Second+time.Second, 100*time.Millisecond,
		"%s: the new agent reports within two intervals of being Ready", what)
	t.Logf("%s: new agent %s Ready, first export %v later", what, ready.Name, time.Since(readyAt).Round(100*time.Millisecond))
	now := agentPrograms(t)
	for id, name := range old {
		_, still := now[id]
		require.False(t, still, "%s: the old instance's %s (id %d) is still loaded", what, name, id)
	}
	require.NotEmpty(t, now, "%s: the new instance's programs", what)
}

// podVeth is the host side of a pod's veth (the CNI's vethXXXX): the
// interface whose index the pod's eth0 names as its peer, read in the pod's
// network namespace through its container's process.
func podVeth(t *testing.T, n *k8stest.Node, containerID string) string {
	pid := taskPID(t, n, containerID)
	// netlink answers in the namespace entered (sysfs would show the
	// host's: the mount namespace stays).
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "ip", "-j", "link", "show", "eth0").Output()
	require.NoError(t, err)
	var links []struct {
		LinkIndex int `json:"link_index"`
	}
	require.NoError(t, json.Unmarshal(out, &links))
	require.Len(t, links, 1)
	iface, err := net.InterfaceByIndex(links[0].LinkIndex)
	require.NoError(t, err)
	return iface.Name
}

// taskPID is the process of a container, from containerd.
func taskPID(t *testing.T, n *k8stest.Node, id string) int {
	id = strings.TrimPrefix(id, "containerd://")
	out, err := n.Ctr("task", "ls")
	require.NoError(t, err, out)
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			require.NoError(t, err)
			return pid
		}
	}
	t.Fatalf("no task of container %s: %s", id, out)
	return 0
}

// nonIPCapture counts, with tcpdump, the frames of one direction of an
// interface that are not IPv4 or IPv6 (ARP, mostly): the receiver counts
// them (ebpfnet.packets.uncounted{reason=non_ip}, node-wide), not in flows.
type nonIPCapture struct {
	cmd     *exec.Cmd
	out     *strings.Builder
	packets int64
	bytes   int64
}

func captureNonIP(t *testing.T, iface, dir string) *nonIPCapture {
	c := &nonIPCapture{out: &strings.Builder{}}
	c.cmd = exec.Command("tcpdump", "-i", iface, "-Q", dir, "-p", "-n", "-e", "-l", "-tt", "not ip and not ip6")
	c.cmd.Stdout = c.out
	require.NoError(t, c.cmd.Start())
	t.Cleanup(func() { _ = c.cmd.Process.Kill() })
	return c
}

// stop ends the capture and counts its frames between from and to
// (tcpdump -tt prints each frame's time, -e its L2 length: what the
// interface counters count).
func (c *nonIPCapture) stop(t *testing.T, from, to time.Time) {
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	_ = c.cmd.Wait()
	for _, line := range strings.Split(c.out.String(), "\n") {
		i := strings.Index(line, ", length ")
		if i < 0 {
			continue
		}
		var sec float64
		var l int64
		_, err := fmt.Sscanf(line, "%f", &sec)
		require.NoError(t, err, line)
		_, err = fmt.Sscanf(line[i+len(", length "):], "%d", &l)
		require.NoError(t, err, line)
		if at := time.Unix(0, int64(sec*1e9)); at.After(from) && !at.After(to) {
			c.packets++
			c.bytes += l
		}
	}
}

// flowTotals sums ebpfnet.flow.io and ebpfnet.flow.packets of the pod at
// podIP by direction, in the first batch drained at least one interval
// after since (what was counted until then); false while there is none.
func flowTotals(sink *otlpSink, podIP string, since time.Time) (map[string][2]int64, bool) {
	for _, md := range sink.Metrics() {
		out, found := map[string][2]int64{}, false
		for i := 0; i < md.ResourceMetrics().Len(); i++ {
			rm := md.ResourceMetrics().At(i)
			if str(rm.Resource().Attributes(), "k8s.pod.ip") != podIP {
				continue
			}
			ms := rm.ScopeMetrics().At(0).Metrics()
			for j := 0; j < ms.Len(); j++ {
				m := ms.At(j)
				k := map[string]int{"ebpfnet.flow.io": 0, "ebpfnet.flow.packets": 1}
				idx, ok := k[m.Name()]
				if !ok {
					continue
				}
				for p := 0; p < m.Sum().DataPoints().Len(); p++ {
					dp := m.Sum().DataPoints().At(p)
					if dp.Timestamp().AsTime().Before(since.Add(2 * time.Second)) {
						break
					}
					found = true
					v := out[str(dp.Attributes(), "network.io.direction")]
					v[idx] += dp.IntValue()
					out[str(dp.Attributes(), "network.io.direction")] = v
				}
			}
		}
		if found {
			return out, true
		}
	}
	return nil, false
}

// requireFlowsMatchVeths: over a window that the client's pause opens and
// closes (its task frozen through containerd; the veths stay), each pod's
// flow bytes and packets per direction equal its veth's own counters, less
// the non-IP frames tcpdump saw on it.
func requireFlowsMatchVeths(ctx context.Context, t *testing.T, n *k8stest.Node, sink *otlpSink, pods []corev1.Pod, client string) {
	pause := func(verb string) {
		out, err := n.Ctr("task", verb, strings.TrimPrefix(client, "containerd://"))
		require.NoError(t, err, out)
		time.Sleep(1500 * time.Millisecond) // what was in flight is over
	}
	type view struct {
		ip, veth string
		in, out  *nonIPCapture
	}
	views0 := func(vs []*view) []podView {
		out := make([]podView, len(vs))
		for i, v := range vs {
			out[i] = podView{v.ip, v.veth}
		}
		return out
	}
	// A new interface sends router solicitations and MLD reports in its
	// first seconds, at times of its own: start when those are over.
	for _, p := range pods {
		if age := time.Since(p.CreationTimestamp.Time); age < 30*time.Second {
			time.Sleep(30*time.Second - age)
		}
	}
	pause("pause")
	var views []*view
	var veths []string
	for _, p := range pods {
		veths = append(veths, podVeth(t, n, p.Status.ContainerStatuses[0].ContainerID))
	}
	for i, p := range pods {
		v := &view{ip: p.Status.PodIP, veth: veths[i]}
		v.in, v.out = captureNonIP(t, v.veth, "in"), captureNonIP(t, v.veth, "out")
		views = append(views, v)
	}
	// An interface that starts being captured sends a router solicitation
	// (seen here): the window starts after it.
	time.Sleep(500 * time.Millisecond)
	c0, at0, base := flowEdge(t, sink, views0(views))
	pause("resume")
	time.Sleep(5 * time.Second)
	pause("pause")
	defer pause("resume")
	c1, at1, end := flowEdge(t, sink, views0(views))
	for _, v := range views {
		d := c1[v.veth].Sub(c0[v.veth])
		v.in.stop(t, at0, at1)
		v.out.stop(t, at0, at1)
		tx := [2]int64{end[v.ip]["transmit"][0] - base[v.ip]["transmit"][0], end[v.ip]["transmit"][1] - base[v.ip]["transmit"][1]}
		rx := [2]int64{end[v.ip]["receive"][0] - base[v.ip]["receive"][0], end[v.ip]["receive"][1] - base[v.ip]["receive"][1]}
		require.NotZero(t, d.RxPackets+d.TxPackets, v.veth)
		// The host side of the veth receives what the pod transmits.
		require.Equal(t, int64(d.RxBytes), tx[0]+v.in.bytes, "%s (%s) transmit bytes", v.ip, v.veth)
		require.Equal(t, int64(d.RxPackets), tx[1]+v.in.packets, "%s (%s) transmit packets", v.ip, v.veth)
		require.Equal(t, int64(d.TxBytes), rx[0]+v.out.bytes, "%s (%s) receive bytes", v.ip, v.veth)
		require.Equal(t, int64(d.TxPackets), rx[1]+v.out.packets, "%s (%s) receive packets", v.ip, v.veth)
		t.Logf("%s %s: %d/%d packets transmitted/received in flows, %d/%d non-IP frames", v.ip, v.veth, tx[1], rx[1], v.in.packets, v.out.packets)
	}
}

// podView is a pod's address and the host side of its veth.
type podView struct{ ip, veth string }

// flowEdge is one end of the window: the veths' counters, when they were
// read, and each pod's flow totals of the first drain after that; taken only
// when the counters did not move until that drain (else again), so that no
// packet falls between the counters and the flows.
func flowEdge(t *testing.T, sink *otlpSink, views []podView) (map[string]testnet.LinkStats, time.Time, map[string]map[string][2]int64) {
	var veths []string
	for _, v := range views {
		veths = append(veths, v.veth)
	}
	read := func() map[string]testnet.LinkStats {
		c := map[string]testnet.LinkStats{}
		for _, v := range veths {
			c[v] = testnet.Stats(t, v)
		}
		return c
	}
	for try := 0; ; try++ {
		testnet.WaitQuiet(t, veths...)
		c, at := read(), time.Now()
		totals := map[string]map[string][2]int64{}
		for _, v := range views {
			require.Eventually(t, func() (ok bool) { totals[v.ip], ok = flowTotals(sink, v.ip, at); return ok }, 30*time.Second, 200*time.Millisecond)
		}
		if after := read(); fmt.Sprint(after) == fmt.Sprint(c) {
			return c, at, totals
		}
		require.Less(t, try, 5, "the veths never stayed quiet until a drain")
	}
}
