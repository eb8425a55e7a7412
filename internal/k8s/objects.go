package k8s

import (
	"net/netip"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ipIndex lists the addresses an object answers for: a pod's IPs unless it
// is terminated (its IP may already belong to a new pod) or on the host
// network (its IP is the node's), a Service's ClusterIPs, an EndpointSlice's
// ready-or-serving addresses, a node's addresses.
func ipIndex(obj any) ([]string, error) {
	var out []string
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap().String())
		}
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		if o.Spec.HostNetwork || o.Status.Phase == corev1.PodSucceeded || o.Status.Phase == corev1.PodFailed {
			return nil, nil
		}
		for _, ip := range o.Status.PodIPs {
			add(ip.IP)
		}
		if len(o.Status.PodIPs) == 0 && o.Status.PodIP != "" {
			add(o.Status.PodIP)
		}
	case *corev1.Service:
		for _, ip := range o.Spec.ClusterIPs {
			if ip != corev1.ClusterIPNone {
				add(ip)
			}
		}
	case *discoveryv1.EndpointSlice:
		for _, ep := range o.Endpoints {
			for _, a := range ep.Addresses {
				add(a)
			}
		}
	case *corev1.Node:
		for _, a := range o.Status.Addresses {
			if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
				add(a.Address)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// stripper is strip, or, with policies, strip keeping every pod label and
// container port and the policy informers' objects (stripPolicyObjects).
func stripper(policies bool) func(any) (any, error) {
	if !policies {
		return strip
	}
	return func(obj any) (any, error) {
		if out, ok := stripPolicyObjects(obj); ok {
			return out, nil
		}
		out, err := strip(obj)
		if p, ok := obj.(*corev1.Pod); ok && err == nil {
			sp := out.(*corev1.Pod)
			sp.Labels = p.Labels
			sp.Spec.Containers = policyContainers(p.Spec.Containers)
		}
		return out, err
	}
}

// strip keeps only what lookups use (informers.WithTransform): names,
// owners, labels where needed, addresses. Runs before an object enters a
// cache, on every add and update.
func strip(obj any) (any, error) {
	meta := func(m *metav1.ObjectMeta, keepLabels ...string) metav1.ObjectMeta {
		out := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID,
			ResourceVersion: m.ResourceVersion, CreationTimestamp: m.CreationTimestamp, OwnerReferences: m.OwnerReferences}
		out.Labels = keep(m.Labels, keepLabels)
		return out
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		m := meta(&o.ObjectMeta, serviceLabels...)
		m.Annotations = keep(o.Annotations, serviceAnnotations)
		return &corev1.Pod{ObjectMeta: m,
			Spec:   corev1.PodSpec{NodeName: o.Spec.NodeName, HostNetwork: o.Spec.HostNetwork},
			Status: corev1.PodStatus{Phase: o.Status.Phase, PodIP: o.Status.PodIP, PodIPs: o.Status.PodIPs}}, nil
	case *corev1.Service:
		return &corev1.Service{ObjectMeta: meta(&o.ObjectMeta),
			Spec: corev1.ServiceSpec{ClusterIP: o.Spec.ClusterIP, ClusterIPs: o.Spec.ClusterIPs, Ports: o.Spec.Ports, Type: o.Spec.Type}}, nil
	case *discoveryv1.EndpointSlice:
		eps := make([]discoveryv1.Endpoint, len(o.Endpoints))
		for i, ep := range o.Endpoints {
			eps[i] = discoveryv1.Endpoint{Addresses: ep.Addresses, TargetRef: ep.TargetRef, NodeName: ep.NodeName}
		}
		return &discoveryv1.EndpointSlice{ObjectMeta: meta(&o.ObjectMeta, discoveryv1.LabelServiceName),
			AddressType: o.AddressType, Endpoints: eps, Ports: o.Ports}, nil
	case *corev1.Node:
		return &corev1.Node{ObjectMeta: meta(&o.ObjectMeta, zoneLabel),
			Status: corev1.NodeStatus{Addresses: o.Status.Addresses}}, nil
	case *appsv1.ReplicaSet: // only the owner chain is used
		return &appsv1.ReplicaSet{ObjectMeta: meta(&o.ObjectMeta)}, nil
	case *batchv1.Job:
		return &batchv1.Job{ObjectMeta: meta(&o.ObjectMeta)}, nil
	}
	return obj, nil
}

// keep returns the entries of m under keys (nil: none).
func keep(m map[string]string, keys []string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := m[k]; ok {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// The pod labels and annotations the OpenTelemetry Kubernetes conventions
// derive service.name and service.namespace from, and the label that names
// a ReplicaSet's Deployment.
const (
	labelInstance       = "app.kubernetes.io/instance"
	labelName           = "app.kubernetes.io/name"
	podTemplateHash     = "pod-template-hash"
	annotationService   = "resource.opentelemetry.io/service.name"
	annotationNamespace = "resource.opentelemetry.io/service.namespace"
)

var (
	serviceLabels      = []string{labelInstance, labelName, podTemplateHash}
	serviceAnnotations = []string{annotationService, annotationNamespace}
)

// otelService is a pod's service.name and service.namespace by the
// OpenTelemetry Kubernetes conventions, in k8s_attributes' (v0.160.0)
// order of precedence: the resource.opentelemetry.io/service.* annotation,
// then the app.kubernetes.io/instance label, then app.kubernetes.io/name,
// then the workload (top owner, of the kinds it knows), then the pod's
// name; the namespace: the annotation, then the pod's namespace.
func otelService(p *corev1.Pod, kind, workload string) (name, namespace string) {
	name = p.Name
	switch kind {
	case "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob":
		name = workload
	}
	for _, v := range []string{p.Labels[labelName], p.Labels[labelInstance], p.Annotations[annotationService]} {
		if v != "" {
			name = v
		}
	}
	namespace = p.Namespace
	if v := p.Annotations[annotationNamespace]; v != "" {
		namespace = v
	}
	return name, namespace
}

// uidIndex indexes a pod by its UID.
func uidIndex(obj any) ([]string, error) {
	if p, ok := obj.(*corev1.Pod); ok && p.UID != "" {
		return []string{string(p.UID)}, nil
	}
	return nil, nil
}
