// Package k8s resolves the peer of a flow or connection — an IP address —
// to its Kubernetes identity: a pod (name, namespace, top owner workload,
// node, zone), a Service (for a ClusterIP), or a node (a node address, or a
// hostNetwork pod). It watches Pods, Services, EndpointSlices, Nodes,
// ReplicaSets and Jobs with client-go informers whose transform functions
// keep only what a lookup uses, so memory grows with the cluster's size in
// small records rather than whole objects.
//
// An API server that is unreachable or forbids the watch does not block
// anything: lookups answer from what was synced (or nothing), one error is
// logged, client-go's reflectors retry with backoff, and enrichment resumes
// when the API is back.
package k8s

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Kind says what a peer address belongs to.
type Kind uint8

const (
	KindUnknown Kind = iota
	KindPod
	KindService
	KindNode
)

func (k Kind) String() string {
	switch k {
	case KindPod:
		return "pod"
	case KindService:
		return "service"
	case KindNode:
		return "node"
	}
	return "unknown"
}

// Peer is the Kubernetes identity of an address.
type Peer struct {
	Kind      Kind
	Name      string // pod, Service or node name
	Namespace string // pods and Services
	// WorkloadKind/WorkloadName: the pod's top owner (Deployment,
	// StatefulSet, DaemonSet, CronJob, Job, ReplicaSet without a
	// Deployment, ...); empty for a bare pod.
	WorkloadKind string
	WorkloadName string
	NodeName     string // pods and nodes
	Zone         string // topology.kubernetes.io/zone of the node
	// ServiceName/ServiceNamespace: for a pod, a Service whose
	// EndpointSlices list it (the first by name when several do).
	ServiceName      string
	ServiceNamespace string
	// OTelService/OTelNamespace: the service.name and service.namespace
	// the OpenTelemetry Kubernetes conventions give the pod, as
	// k8s_attributes derives them (extract.metadata service.name and
	// service.namespace, otel_annotations: true): otelService. A Service's
	// and a node's: their names.
	OTelService   string
	OTelNamespace string
}

const (
	indexIP   = "ip"
	indexUID  = "uid"
	zoneLabel = "topology.kubernetes.io/zone"
)

// Resolver answers peer lookups from informer caches.
type Resolver struct {
	logger  *zap.Logger
	factory informers.SharedInformerFactory
	pods    cache.SharedIndexInformer
	svcs    cache.SharedIndexInformer
	slices  cache.SharedIndexInformer
	nodes   cache.SharedIndexInformer
	rsets   cache.SharedIndexInformer
	jobs    cache.SharedIndexInformer
	policy  *policyWatch // nil: NetworkPolicies not watched (WithPolicies)
	cancel  context.CancelFunc
	done    sync.WaitGroup
	client  kubernetes.Interface

	// HealthInterval is how often the API server is probed (GET /version)
	// while watches run: client-go's reflectors retry a refused connection
	// quietly, so the probe is what notices an API server that is gone.
	// Set before Start. Default 5 s.
	HealthInterval time.Duration

	// watchFailing is set while some watch fails: one error is logged
	// when it starts failing, one info line when it recovers.
	watchFailing atomic.Bool
	failures     atomic.Int64
}

// New builds a resolver on client; Start begins watching.
func New(client kubernetes.Interface, logger *zap.Logger, opts ...Option) (*Resolver, error) {
	r := &Resolver{logger: logger, client: client, HealthInterval: 5 * time.Second}
	for _, o := range opts {
		o(r)
	}
	r.factory = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(stripper(r.policy != nil)))
	r.pods = r.factory.Core().V1().Pods().Informer()
	r.svcs = r.factory.Core().V1().Services().Informer()
	r.slices = r.factory.Discovery().V1().EndpointSlices().Informer()
	r.nodes = r.factory.Core().V1().Nodes().Informer()
	r.rsets = r.factory.Apps().V1().ReplicaSets().Informer()
	r.jobs = r.factory.Batch().V1().Jobs().Informer()
	for name, inf := range map[string]cache.SharedIndexInformer{"pods": r.pods, "services": r.svcs, "endpointslices": r.slices, "nodes": r.nodes} {
		if err := inf.AddIndexers(cache.Indexers{indexIP: ipIndex}); err != nil {
			return nil, fmt.Errorf("index %s by IP: %w", name, err)
		}
	}
	if err := r.pods.AddIndexers(cache.Indexers{indexUID: uidIndex}); err != nil {
		return nil, fmt.Errorf("index pods by UID: %w", err)
	}
	if r.policy != nil {
		if err := r.policy.start(r); err != nil {
			return nil, err
		}
	}
	for name, inf := range map[string]cache.SharedIndexInformer{"pods": r.pods, "services": r.svcs, "endpointslices": r.slices,
		"nodes": r.nodes, "replicasets": r.rsets, "jobs": r.jobs} {
		if err := inf.SetWatchErrorHandler(r.watchError(name)); err != nil {
			return nil, fmt.Errorf("watch error handler of %s: %w", name, err)
		}
	}
	return r, nil
}

// watchError logs the first failure of a period of failures clearly (API
// server down, RBAC missing) and the rest at debug level; the reflector
// retries with backoff on its own.
func (r *Resolver) watchError(resource string) cache.WatchErrorHandler {
	return func(_ *cache.Reflector, err error) { r.fail(resource, err) }
}

func (r *Resolver) fail(resource string, err error) {
	r.failures.Add(1)
	if r.watchFailing.CompareAndSwap(false, true) {
		r.logger.Error("Kubernetes API: cannot list/watch; peers keep the metadata last seen and new ones are not enriched until it recovers (retrying with backoff)",
			zap.String("resource", resource), zap.Error(err))
		return
	}
	r.logger.Debug("Kubernetes API: still failing", zap.String("resource", resource), zap.Error(err))
}

// Start begins watching; it does not wait for the caches (see WaitSynced).
func (r *Resolver) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.factory.Start(ctx.Done())
	r.done.Add(1)
	go func() {
		defer r.done.Done()
		t := time.NewTicker(r.HealthInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			err := r.client.Discovery().RESTClient().Get().AbsPath("/version").Do(pctx).Error()
			cancel()
			switch {
			case err != nil && ctx.Err() == nil:
				r.fail("version", err)
			case err == nil && r.watchFailing.Load() && r.Synced() && r.lastSyncOK():
				r.watchFailing.Store(false)
				r.logger.Info("Kubernetes API: reachable again; peers are enriched")
			}
		}
	}()
}

// lastSyncOK: every informer's last list/watch resource version is set,
// i.e. the watches have (re)established.
func (r *Resolver) lastSyncOK() bool {
	for _, inf := range r.informers() {
		if inf.LastSyncResourceVersion() == "" {
			return false
		}
	}
	return true
}

func (r *Resolver) informers() []cache.SharedIndexInformer {
	out := []cache.SharedIndexInformer{r.pods, r.svcs, r.slices, r.nodes, r.rsets, r.jobs}
	if r.policy != nil {
		out = append(out, r.policy.policies, r.policy.namespaces)
	}
	return out
}

// Synced reports whether every cache has completed its first list.
func (r *Resolver) Synced() bool {
	for _, inf := range r.informers() {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}

// WaitSynced waits until the caches are synced or ctx ends.
func (r *Resolver) WaitSynced(ctx context.Context) bool {
	fns := make([]cache.InformerSynced, 0, 8)
	for _, inf := range r.informers() {
		fns = append(fns, inf.HasSynced)
	}
	return cache.WaitForCacheSync(ctx.Done(), fns...)
}

// WatchFailures counts list/watch errors since the start.
func (r *Resolver) WatchFailures() int64 { return r.failures.Load() }

// Stop ends the watches.
func (r *Resolver) Stop() {
	if r.cancel != nil {
		r.cancel()
		r.factory.Shutdown()
		r.done.Wait()
	}
}

// Lookup resolves ip. A running pod's IP wins over a Service, a Service's
// ClusterIP over a node address; hostNetwork pods share their node's
// address and resolve to the node.
func (r *Resolver) Lookup(ip netip.Addr) (Peer, bool) {
	key := ip.Unmap().String()
	if objs, _ := r.pods.GetIndexer().ByIndex(indexIP, key); len(objs) > 0 {
		peer := r.pod(newestPod(objs))
		peer.ServiceName, peer.ServiceNamespace = r.serviceOf(key)
		return peer, true
	}
	if objs, _ := r.svcs.GetIndexer().ByIndex(indexIP, key); len(objs) > 0 {
		s := objs[0].(*corev1.Service)
		return Peer{Kind: KindService, Name: s.Name, Namespace: s.Namespace, OTelService: s.Name, OTelNamespace: s.Namespace}, true
	}
	if objs, _ := r.nodes.GetIndexer().ByIndex(indexIP, key); len(objs) > 0 {
		n := objs[0].(*corev1.Node)
		return Peer{Kind: KindNode, Name: n.Name, NodeName: n.Name, Zone: n.Labels[zoneLabel], OTelService: n.Name}, true
	}
	return Peer{}, false
}

// PodByUID resolves a pod by its UID (a socket's cgroup names it), without
// its Service.
func (r *Resolver) PodByUID(uid string) (Peer, bool) {
	objs, _ := r.pods.GetIndexer().ByIndex(indexUID, uid)
	if len(objs) == 0 {
		return Peer{}, false
	}
	return r.pod(objs[0].(*corev1.Pod)), true
}

func (r *Resolver) pod(p *corev1.Pod) Peer {
	peer := Peer{Kind: KindPod, Name: p.Name, Namespace: p.Namespace, NodeName: p.Spec.NodeName}
	peer.WorkloadKind, peer.WorkloadName = r.topOwner(p.Namespace, p.OwnerReferences, p.Labels[podTemplateHash])
	peer.Zone = r.zone(p.Spec.NodeName)
	peer.OTelService, peer.OTelNamespace = otelService(p, peer.WorkloadKind, peer.WorkloadName)
	return peer
}

// IsService reports whether ip is the ClusterIP of a Service.
func (r *Resolver) IsService(ip netip.Addr) bool {
	objs, _ := r.svcs.GetIndexer().ByIndex(indexIP, ip.Unmap().String())
	return len(objs) > 0
}

// Backs reports whether backend is an endpoint of the Service whose
// ClusterIP is service (one of that Service's EndpointSlices lists it).
func (r *Resolver) Backs(service, backend netip.Addr) bool {
	svc, ok := r.Lookup(service)
	return ok && r.backs(svc, backend)
}

func (r *Resolver) backs(svc Peer, backend netip.Addr) bool {
	if svc.Kind != KindService {
		return false
	}
	objs, _ := r.slices.GetIndexer().ByIndex(indexIP, backend.Unmap().String())
	for _, o := range objs {
		s := o.(*discoveryv1.EndpointSlice)
		if s.Namespace == svc.Namespace && s.Labels[discoveryv1.LabelServiceName] == svc.Name {
			return true
		}
	}
	return false
}

// newestPod picks the most recently created pod of several sharing an IP
// (a reused IP whose old pod is not yet deleted but no longer terminated).
func newestPod(objs []any) *corev1.Pod {
	best := objs[0].(*corev1.Pod)
	for _, o := range objs[1:] {
		if p := o.(*corev1.Pod); best.CreationTimestamp.Before(&p.CreationTimestamp) {
			best = p
		}
	}
	return best
}

// NodeZone is the topology.kubernetes.io/zone label of the named node
// ("" if unknown).
func (r *Resolver) NodeZone(node string) string { return r.zone(node) }

func (r *Resolver) zone(node string) string {
	if node == "" {
		return ""
	}
	obj, ok, _ := r.nodes.GetIndexer().GetByKey(node)
	if !ok {
		return ""
	}
	return obj.(*corev1.Node).Labels[zoneLabel]
}

// serviceOf names a Service whose EndpointSlices list the address.
func (r *Resolver) serviceOf(ip string) (name, namespace string) {
	objs, _ := r.slices.GetIndexer().ByIndex(indexIP, ip)
	best := ""
	for _, o := range objs {
		s := o.(*discoveryv1.EndpointSlice)
		svc := s.Labels[discoveryv1.LabelServiceName]
		if svc != "" && (best == "" || svc < best) {
			best, namespace = svc, s.Namespace
		}
	}
	return best, namespace
}

// topOwner follows ReplicaSet → Deployment and Job → CronJob. A ReplicaSet
// not (yet) in the cache whose name is a Deployment's pod-template-hash
// suffix names the Deployment, as k8s_attributes' heuristic does.
func (r *Resolver) topOwner(ns string, refs []metav1.OwnerReference, hash string) (kind, name string) {
	ref := controllerOf(refs)
	if ref == nil {
		return "", ""
	}
	var next cache.SharedIndexInformer
	switch ref.Kind {
	case "ReplicaSet":
		next = r.rsets
	case "Job":
		next = r.jobs
	default:
		return ref.Kind, ref.Name
	}
	obj, ok, _ := next.GetIndexer().GetByKey(ns + "/" + ref.Name)
	if !ok {
		if d, cut := strings.CutSuffix(ref.Name, "-"+hash); ref.Kind == "ReplicaSet" && hash != "" && cut {
			return "Deployment", d
		}
		return ref.Kind, ref.Name
	}
	if up := controllerOf(obj.(metav1.Object).GetOwnerReferences()); up != nil {
		return up.Kind, up.Name
	}
	return ref.Kind, ref.Name
}

func controllerOf(refs []metav1.OwnerReference) *metav1.OwnerReference {
	for i := range refs {
		if refs[i].Controller != nil && *refs[i].Controller {
			return &refs[i]
		}
	}
	if len(refs) > 0 {
		return &refs[0]
	}
	return nil
}
