package convert

import (
	"net/netip"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/ebpfnet/ebpfnet/internal/k8s"
)

// Attributes of the peer's Kubernetes identity, the same on metric data
// points, spans and flow log records. The local side is the resource (for
// the k8sattributes processor); the peer is described here, by the
// receiver's own informers (internal/k8s).
const (
	AttrPeerKind         = "peer.k8s.kind" // pod, service or node
	AttrPeerPodName      = "peer.k8s.pod.name"
	AttrPeerNamespace    = "peer.k8s.namespace.name"
	AttrPeerWorkloadKind = "peer.k8s.workload.kind" // Deployment, StatefulSet, DaemonSet, CronJob, Job, ...
	AttrPeerWorkloadName = "peer.k8s.workload.name"
	AttrPeerServiceName  = "peer.k8s.service.name" // the Service dialed (a ClusterIP), or one the peer pod backs
	// AttrPeerServiceNamespace: set with the Service a client dialed through
	// a socket-level load balancer (the backend's namespace may differ).
	AttrPeerServiceNamespace = "peer.k8s.service.namespace"
	AttrPeerNodeName         = "peer.k8s.node.name"
	AttrPeerZone             = "peer.cloud.availability_zone"
	// AttrCrossZone: the peer's zone is not this node's (both known).
	AttrCrossZone = "ebpfnet.cross_zone"
)

// PeerResolver resolves a peer address to its Kubernetes identity
// (*k8s.Resolver; nil when Kubernetes enrichment is off).
type PeerResolver interface {
	Lookup(netip.Addr) (k8s.Peer, bool)
	PodByUID(uid string) (k8s.Peer, bool)
	NodeZone(node string) string
}

// localZone is the zone of the node the collector runs on ("": unknown).
func localZone(opts *Options) string {
	if opts.Peers == nil || opts.NodeName == "" {
		return ""
	}
	return opts.Peers.NodeZone(opts.NodeName)
}

// putPeer adds the selected peer attributes of addr, if it resolves, and
// whether its zone is another than zone (this node's). With WithPeerService
// it also names the peer's service (peer.service, from the same lookup):
// the peer's conventional name (pod, Service, node), else the Service the
// client dialed, else the peer's address. That names a peer that sends no
// spans (a failed connect, a host outside the cluster) as servicegraph's
// virtual_node_peer_attributes and Jaeger expect, and the workload graph's
// edges. Without a resolver nothing is added.
func putPeer(m pcommon.Map, r PeerResolver, addr netip.Addr, attrs Attrs, zone string, dialed netip.Addr) {
	fp := lookupPeer(r, addr)
	putPeerFound(m, r, &fp, attrs, zone, dialed)
}

// foundPeer is a peer address and what it resolved to; addr is invalid
// when it was not looked up (no resolver, no address).
type foundPeer struct {
	addr netip.Addr
	peer k8s.Peer
	ok   bool // the address resolved
}

func lookupPeer(r PeerResolver, addr netip.Addr) foundPeer {
	if r == nil || !addr.IsValid() {
		return foundPeer{}
	}
	p, ok := r.Lookup(addr)
	return foundPeer{addr: addr, peer: p, ok: ok}
}

// maxPeerAttrs bounds what putPeerFound adds for a resolved peer (peer
// service, kind, pod, namespace, workload kind and name, service, node,
// zone, cross zone), so that a record's attributes are allocated once.
const maxPeerAttrs = 10

// attrBound is the most attributes putPeerFound adds for fp.
func (fp *foundPeer) attrBound() int {
	switch {
	case fp.ok:
		return maxPeerAttrs
	case fp.addr.IsValid():
		return 1
	}
	return 0
}

// putPeerFound is putPeer of a peer looked up already.
func putPeerFound(m pcommon.Map, r PeerResolver, fp *foundPeer, attrs Attrs, zone string, dialed netip.Addr) {
	if !fp.addr.IsValid() {
		return
	}
	addr, p, ok := fp.addr, &fp.peer, fp.ok
	if attrs&WithPeerService != 0 {
		m.PutStr(AttrPeerService, peerService(r, *p, ok, addr, dialed))
	}
	if !ok {
		return
	}
	put := func(k, v string) {
		if v != "" && attrs&AttrsByName[k] != 0 {
			m.PutStr(k, v)
		}
	}
	put(AttrPeerKind, p.Kind.String())
	switch p.Kind {
	case k8s.KindPod:
		put(AttrPeerPodName, p.Name)
		put(AttrPeerNamespace, p.Namespace)
		put(AttrPeerWorkloadKind, p.WorkloadKind)
		put(AttrPeerWorkloadName, p.WorkloadName)
		put(AttrPeerServiceName, p.ServiceName)
	case k8s.KindService:
		put(AttrPeerServiceName, p.Name)
		put(AttrPeerNamespace, p.Namespace)
	}
	put(AttrPeerNodeName, p.NodeName)
	put(AttrPeerZone, p.Zone)
	if p.Zone != "" && zone != "" && attrs&WithCrossZone != 0 {
		m.PutBool(AttrCrossZone, p.Zone != zone)
	}
}

// putDialedService names the Service a client dialed when a socket-level
// load balancer rewrote the destination: the dialed address resolves to
// the Service, the socket's peer (the backend pod) to the rest.
func putDialedService(m pcommon.Map, r PeerResolver, dialed netip.Addr) {
	if r == nil {
		return
	}
	if p, ok := r.Lookup(dialed); ok && p.Kind == k8s.KindService {
		m.PutStr(AttrPeerServiceName, p.Name)
		m.PutStr(AttrPeerServiceNamespace, p.Namespace)
	}
}
