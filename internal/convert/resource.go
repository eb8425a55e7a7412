package convert

import (
	"net/netip"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/ebpfnet/ebpfnet/internal/k8s"
)

// Resource attributes of the service a resource is (OpenTelemetry requires
// service.name on every resource; backends file data by it).
const (
	AttrServiceName       = "service.name"
	AttrServiceNamespace  = "service.namespace"
	AttrServiceInstanceID = "service.instance.id"
	AttrPeerService       = "peer.service"
)

// putResource writes the attributes of the local endpoint's resource: a pod
// (by its address) or, for an invalid address, the node.
func putResource(m pcommon.Map, opts Options, local netip.Addr) {
	if opts.Resource.K8sNodeName && opts.NodeName != "" {
		m.PutStr(AttrK8sNodeName, opts.NodeName)
	}
	if local.IsValid() && opts.Resource.K8sPodIP {
		m.PutStr(AttrK8sPodIP, local.String())
	}
}

// putWorkloadResource adds what a socket's cgroup says (spans).
func putWorkloadResource(m pcommon.Map, opts Options, podUID, containerID string) {
	if podUID != "" && opts.Resource.K8sPodUID {
		m.PutStr(AttrK8sPodUID, podUID)
	}
	if containerID != "" && opts.Resource.ContainerID {
		m.PutStr(AttrContainerID, containerID)
	}
}

// putService names the resource's service: a pod endpoint (local valid), a
// socket's pod (podUID) or process (exe) on the node, or the node.
//
// A pod of this node that the receiver's informers know gets no
// service.name or service.namespace here: k8s_attributes, which runs after
// the receiver and never replaces an attribute that is set, derives them
// (extract.metadata service.name and service.namespace). Every other
// resource gets what the receiver knows: a pod of another node (a test's
// remote endpoint) its conventional name, an unknown pod its address, a
// process its executable, the node its name.
// service.instance.id tells apart the pods and nodes of one service (the
// Prometheus instance label): namespace.pod, the pod address, the node.
func putService(m pcommon.Map, opts Options, local netip.Addr, podUID, exe string) {
	var pod k8s.Peer
	found := false
	switch {
	case opts.Peers != nil && local.IsValid():
		pod, found = opts.Peers.Lookup(local)
		found = found && pod.Kind == k8s.KindPod
	case opts.Peers != nil && podUID != "":
		pod, found = opts.Peers.PodByUID(podUID)
	}
	var name, namespace, instance string
	switch {
	case found && pod.NodeName == opts.NodeName:
		instance = pod.Namespace + "." + pod.Name
	case found:
		name, namespace, instance = pod.OTelService, pod.OTelNamespace, pod.Namespace+"."+pod.Name
	case local.IsValid():
		name, instance = local.String(), local.String()
	case exe != "":
		name, instance = exe, opts.NodeName
	default:
		name, instance = opts.NodeName, opts.NodeName
	}
	put := func(on bool, k, v string) {
		if on && v != "" {
			m.PutStr(k, v)
		}
	}
	put(opts.Resource.ServiceName, AttrServiceName, name)
	put(opts.Resource.ServiceNamespace, AttrServiceNamespace, namespace)
	put(opts.Resource.ServiceInstanceID, AttrServiceInstanceID, instance)
}

// peerService is the service.name the peer p of addr (ok: resolved) has,
// or would have (putPeer).
func peerService(r PeerResolver, p k8s.Peer, ok bool, addr, dialed netip.Addr) string {
	if ok && p.OTelService != "" {
		return p.OTelService
	}
	if dialed.IsValid() {
		if d, ok := r.Lookup(dialed); ok && d.OTelService != "" {
			return d.OTelService
		}
	}
	return addr.String()
}
