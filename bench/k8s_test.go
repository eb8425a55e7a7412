//go:build bench

package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ebpfnet/ebpfnet/internal/k8s"
	"github.com/ebpfnet/ebpfnet/internal/k8stest"
)

// rssBytes is the process's resident set (VmRSS).
func rssBytes() uint64 { return statusKB("VmRSS:") << 10 }

// statusKB is a kB field of /proc/self/status.
func statusKB(field string) uint64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return 0
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// parallel runs fn(i) for i in [0, n) on w workers.
func parallel(n, w int, fn func(i int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, w)
	next := make(chan int)
	for k := 0; k < w; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// TestBenchK8sInformers: the peer resolver's memory with 10,000 pods and
// 2,000 Services (with EndpointSlices) in a real kube-apiserver, and the
// cost of one peer lookup.
func TestBenchK8sInformers(t *testing.T) {
	const nodes, pods, services = 100, 10000, 2000
	c := k8stest.Start(t)
	cfg := *c.Config
	cfg.QPS, cfg.Burst = 5000, 5000
	client := kubernetes.NewForConfigOrDie(&cfg)
	ctx := context.Background()
	yes := true

	fill := time.Now()
	require.NoError(t, parallel(nodes, 8, func(i int) error {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%03d", i),
			Labels: map[string]string{"topology.kubernetes.io/zone": fmt.Sprintf("zone-%d", i%3)}}}
		n, err := client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)}}
		_, err = client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	}))
	podIP := func(i int) string { return fmt.Sprintf("10.244.%d.%d", i/250, i%250+1) }
	require.NoError(t, parallel(pods, 16, func(i int) error {
		// Realistic objects: labels, annotations, a container with env and
		// resources, owner references — what the transform strips.
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("app-%d-7f9c5d-%05d", i%200, i),
			Labels:      map[string]string{"app": fmt.Sprintf("app-%d", i%200), "pod-template-hash": "7f9c5d", "tier": "backend"},
			Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-11-20T10:00:00Z", "prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: fmt.Sprintf("app-%d-7f9c5d", i%200),
				UID: "4b6f3a52-0000-4000-8000-000000000001", Controller: &yes}}},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%03d", i%nodes), Containers: []corev1.Container{{Name: "app",
				Image: "registry.example.com/team/app:1.2.3", Args: []string{"--port=8080", "--log-level=info"},
				Env:   []corev1.EnvVar{{Name: "MODE", Value: "production"}, {Name: "REGION", Value: "eu-west-1"}},
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 9090}}}}}}
		p, err := client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		p.Status.Phase = corev1.PodRunning
		p.Status.PodIP = podIP(i)
		p.Status.PodIPs = []corev1.PodIP{{IP: podIP(i)}}
		_, err = client.CoreV1().Pods("default").UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	}))
	svcIPs := make([]string, services)
	require.NoError(t, parallel(services, 16, func(i int) error {
		s, err := client.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("svc-%04d", i)},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": fmt.Sprintf("app-%d", i%200)}, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		svcIPs[i] = s.Spec.ClusterIP
		eps := make([]discoveryv1.Endpoint, 5)
		for k := range eps {
			eps[k] = discoveryv1.Endpoint{Addresses: []string{podIP((i*5 + k) % pods)}}
		}
		_, err = client.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("svc-%04d-1", i), Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc-%04d", i)}},
			AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps}, metav1.CreateOptions{})
		return err
	}))
	t.Logf("created %d nodes, %d pods, %d services in %s", nodes, pods, services, time.Since(fill))

	heap0, rss0 := heapAfterGC(), rssBytes()
	r, err := k8s.New(c.Client, zap.NewNop())
	require.NoError(t, err)
	syncStart := time.Now()
	r.Start()
	defer r.Stop()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	require.True(t, r.WaitSynced(sctx))
	syncTime := time.Since(syncStart)
	heap1, rss1 := heapAfterGC(), rssBytes()

	// Lookups: a mix of pod IPs, ClusterIPs and misses, like a flow batch.
	addrs := make([]netip.Addr, 0, 4096)
	for i := 0; i < 4096; i++ {
		switch i % 4 {
		case 0, 1:
			addrs = append(addrs, netip.MustParseAddr(podIP(i*7%pods)))
		case 2:
			addrs = append(addrs, netip.MustParseAddr(svcIPs[i%services]))
		default:
			addrs = append(addrs, netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i%250)))
		}
	}
	p, ok := r.Lookup(netip.MustParseAddr(podIP(1)))
	require.True(t, ok)
	require.Equal(t, "default", p.Namespace)
	var costs []float64
	for rep := 0; rep < 5; rep++ {
		const n = 400000
		start := time.Now()
		for i := 0; i < n; i++ {
			r.Lookup(addrs[i%len(addrs)])
		}
		costs = append(costs, float64(time.Since(start).Nanoseconds())/n)
	}
	lookup := summarize(costs)
	allocs := testing.AllocsPerRun(10000, func() { r.Lookup(addrs[0]) })
	// What a flow pays in the receiver: the memo of the interval (one
	// resolution per distinct peer, then map reads). 10 flows per peer.
	costs = costs[:0]
	memo := k8s.NewMemo(r)
	for rep := 0; rep < 5; rep++ {
		memo.Reset()
		const n = 40960
		start := time.Now()
		for i := 0; i < n; i++ {
			memo.Lookup(addrs[i/10])
		}
		costs = append(costs, float64(time.Since(start).Nanoseconds())/n)
	}
	perFlow := summarize(costs)

	var b strings.Builder
	b.WriteString("## Kubernetes peer resolver (informers against a real kube-apiserver)\n\n")
	b.WriteString("Reproduce: `make bench` (or `go test -count=1 -tags bench -run TestBenchK8sInformers -v ./bench/`). A kube-apiserver " + k8stest.KubeVersion + " on\n")
	fmt.Fprintf(&b, "etcd (loopback) holds %d nodes, %d pods (labels, annotations, a container with env and ports, an owner) and %d\n", nodes, pods, services)
	b.WriteString("ClusterIP Services with one EndpointSlice of 5 endpoints each; the resolver (`internal/k8s`) watches pods, Services,\n")
	b.WriteString("EndpointSlices, nodes, ReplicaSets and Jobs with transform functions that strip each object to what lookups use.\n")
	b.WriteString("Memory = Go heap after GC and process RSS, before the resolver starts vs after its caches synced. Lookup = one\n")
	b.WriteString("`Resolver.Lookup` over a mix of pod IPs (1/2), ClusterIPs (1/4) and unknown addresses (1/4), median of 5 x 400,000.\n")
	b.WriteString("Per flow = what the receiver pays: lookups go through a memo reset every interval (`k8s.Memo`), here with 10 flows\n")
	b.WriteString("per distinct peer (4,096 peers, 40,960 flows), median of 5. RSS includes what the Go runtime keeps after the\n")
	b.WriteString("initial LISTs (decoded whole, then stripped); the heap after GC is what the caches hold.\n\n")
	b.WriteString("| objects | cache sync | heap growth | RSS growth | lookup | allocations per lookup | per flow (memo) |\n|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| %d pods, %d Services, %d nodes | %.1f s | %.1f MiB | %.1f MiB | %s | %.0f | %s |\n", pods, services, nodes, syncTime.Seconds(),
		float64(int64(heap1)-int64(heap0))/(1<<20), float64(int64(rss1)-int64(rss0))/(1<<20), lookup.format("ns", 1, 0), allocs, perFlow.format("ns", 1, 0))
	addSection(b.String())
	t.Logf("sync %s heap +%.1f MiB rss +%.1f MiB lookup %.0f ns allocs %.0f", syncTime, float64(int64(heap1)-int64(heap0))/(1<<20),
		float64(int64(rss1)-int64(rss0))/(1<<20), lookup.med, allocs)
}
