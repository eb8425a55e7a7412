package k8s

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/ebpfnet/ebpfnet/internal/netpol"
)

// Option configures New.
type Option func(*Resolver)

// WithPolicies also watches NetworkPolicies and Namespaces and keeps every
// pod label and container port, for NetworkPolicy verdicts (Policies,
// PolicyPod). RBAC: list/watch networkpolicies (networking.k8s.io) and
// namespaces.
func WithPolicies() Option { return func(r *Resolver) { r.policy = &policyWatch{} } }

// policyWatch is the NetworkPolicy side of the resolver: its informers and
// the compiled policies, rebuilt when an event changed them.
type policyWatch struct {
	policies, namespaces cache.SharedIndexInformer
	gen                  atomic.Uint64 // bumped by every policy or namespace event

	mu       sync.Mutex
	built    uint64
	compiled *netpol.Policies
}

func (w *policyWatch) start(r *Resolver) error {
	w.policies = r.factory.Networking().V1().NetworkPolicies().Informer()
	w.namespaces = r.factory.Core().V1().Namespaces().Informer()
	bump := func(any) { w.gen.Add(1) }
	for name, inf := range map[string]cache.SharedIndexInformer{"networkpolicies": w.policies, "namespaces": w.namespaces} {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: bump, DeleteFunc: bump,
			UpdateFunc: func(_, n any) { bump(n) }}); err != nil {
			return fmt.Errorf("watch %s: %w", name, err)
		}
		if err := inf.SetWatchErrorHandler(r.watchError(name)); err != nil {
			return fmt.Errorf("watch error handler of %s: %w", name, err)
		}
	}
	w.gen.Add(1)
	return nil
}

// Policies are the cluster's NetworkPolicies compiled with its namespaces'
// labels; nil when they are not watched or not synced yet (no verdict is
// better than a wrong "no policy"). A policy that does not compile is
// logged and left out.
func (r *Resolver) Policies() *netpol.Policies {
	w := r.policy
	if w == nil || !w.policies.HasSynced() || !w.namespaces.HasSynced() {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	gen := w.gen.Load()
	if w.compiled != nil && w.built == gen {
		return w.compiled
	}
	var nps []*networkingv1.NetworkPolicy
	for _, o := range w.policies.GetStore().List() {
		nps = append(nps, o.(*networkingv1.NetworkPolicy))
	}
	labels := map[string]map[string]string{}
	for _, o := range w.namespaces.GetStore().List() {
		ns := o.(*corev1.Namespace)
		labels[ns.Name] = ns.Labels
	}
	compiled, err := netpol.New(nps, labels)
	if err != nil {
		r.logger.Warn("NetworkPolicy verdicts: some policies are left out", zap.Error(err))
	}
	w.compiled, w.built = compiled, gen
	return compiled
}

// PolicyPod is the pod at ip as NetworkPolicies see it (labels, container
// ports); false for an address of no pod, or of a hostNetwork pod (which
// NetworkPolicies do not select).
func (r *Resolver) PolicyPod(ip netip.Addr) (*netpol.Pod, bool) {
	objs, _ := r.pods.GetIndexer().ByIndex(indexIP, ip.Unmap().String())
	if len(objs) == 0 {
		return nil, false
	}
	p := newestPod(objs)
	if p.Spec.HostNetwork {
		return nil, false
	}
	out := &netpol.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels}
	for _, c := range p.Spec.Containers {
		out.Ports = append(out.Ports, c.Ports...)
	}
	return out, true
}

// stripPolicyObjects keeps what verdicts use of the policy informers'
// objects: a policy's spec, a namespace's labels.
func stripPolicyObjects(obj any) (any, bool) {
	switch o := obj.(type) {
	case *networkingv1.NetworkPolicy:
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace,
			ResourceVersion: o.ResourceVersion}, Spec: o.Spec}, true
	case *corev1.Namespace:
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Name, ResourceVersion: o.ResourceVersion,
			Labels: o.Labels}}, true
	}
	return obj, false
}

// policyContainers are a pod's container ports alone (named ports).
func policyContainers(cs []corev1.Container) []corev1.Container {
	var ports []corev1.ContainerPort
	for _, c := range cs {
		ports = append(ports, c.Ports...)
	}
	if len(ports) == 0 {
		return nil
	}
	return []corev1.Container{{Ports: ports}}
}
