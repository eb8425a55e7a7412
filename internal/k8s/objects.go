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

// strip keeps only what lookups use (informers.WithTransform): names,
// owners, labels where needed, addresses. Runs before an object enters a
// cache, on every add and update.
func strip(obj any) (any, error) {
	meta := func(m *metav1.ObjectMeta, keepLabels ...string) metav1.ObjectMeta {
		out := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID,
			ResourceVersion: m.ResourceVersion, CreationTimestamp: m.CreationTimestamp, OwnerReferences: m.OwnerReferences}
		for _, k := range keepLabels {
			if v, ok := m.Labels[k]; ok {
				if out.Labels == nil {
					out.Labels = map[string]string{}
				}
				out.Labels[k] = v
			}
		}
		return out
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		return &corev1.Pod{ObjectMeta: meta(&o.ObjectMeta),
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
