package flow

import "net/netip"

// DropKind is what a Drop counts (enum drop_kind in bpf/types.h;
// internal/kernel holds the values equal).
type DropKind uint8

const (
	// DropPacket: packets the kernel dropped (kfree_skb).
	DropPacket DropKind = 0
	// DropResetNoSocket: TCP resets the stack sent for segments no full
	// socket owned (a closed port, a timewait or request socket).
	DropResetNoSocket DropKind = 1
)

// Drop is what the kernel dropped, or answered with a reset without a
// socket, for one local endpoint, peer address, transport, direction and
// reason in one interval. The peer's port is not kept (bpf/types.h
// drop_key).
type Drop struct {
	Kind DropKind
	// Local is the local endpoint's address and port (ICMP: type << 8 |
	// code); Peer the other side's address. Both invalid for a packet
	// that was not IP.
	Local     netip.AddrPort
	Peer      netip.Addr
	Protocol  uint8
	Direction Direction
	// Reason is the kernel's name of the reason (enum skb_drop_reason for
	// packets, sk_rst_reason for resets) without its prefix.
	Reason string
	// Ifindex is the pod endpoint interface the packet belonged to (0:
	// none); Netns the namespace it was dropped in; CgroupID its socket's
	// cgroup (0: none).
	Ifindex   uint32
	Interface string
	Netns     uint32
	CgroupID  uint64
	// OnNode: dropped in the node's own namespace, not on a pod's interface
	// nor to or from a pod's address. Set by Endpoints.ResolveDrops, with
	// Endpoint (the local pod's address).
	OnNode   bool
	Endpoint netip.Addr
	// PodUID is, for a drop OnNode, the hostNetwork pod whose socket's
	// cgroup names it (Joiner.DropPod); empty otherwise.
	PodUID  string
	Packets uint64
	Bytes   uint64
	// OnFlow: the drop is on the one flow of the interval it belongs to
	// (AttachDrops); otherwise it is a record of its own.
	OnFlow bool
}

// IsICMP reports whether Local's port holds an ICMP type and code.
func (d *Drop) IsICMP() bool { return d.Protocol == ProtoICMP || d.Protocol == ProtoICMPv6 }

// ResolveDrops attributes every drop of the batch to a local pod, by the
// rule of the flows: a drop on (or that came in through) a pod's endpoint
// interface is that pod's; one in a pod's own namespace is the pod's at its
// local address; one in the node's namespace is a pod's when its local
// address is one this resolver learned from a pod interface, else the
// node's. hostNetns is the node's namespace inode. Call after Resolve.
func (e *Endpoints) ResolveDrops(b *Batch, hostNetns uint32) {
	var pods map[netip.Addr]bool
	for i := range b.Drops {
		d := &b.Drops[i]
		local := d.Local.Addr()
		switch {
		case d.Ifindex != 0:
			d.Endpoint = local
			if ia := e.byIface[d.Ifindex]; ia != nil && ia.v4.IsValid() {
				d.Endpoint = ia.v4
			} else if ia != nil && ia.v6.IsValid() {
				d.Endpoint = ia.v6
			}
		case d.Netns != hostNetns && isUnicast(local):
			d.Endpoint = local
		default:
			if pods == nil {
				pods = e.podAddrs()
			}
			if pods[local] {
				d.Endpoint = local
			}
		}
		d.OnNode = !d.Endpoint.IsValid()
	}
}

// podAddrs are the addresses learned from pod interfaces.
func (e *Endpoints) podAddrs() map[netip.Addr]bool {
	out := make(map[netip.Addr]bool, 2*len(e.byIface))
	for _, ia := range e.byIface {
		if ia.v4.IsValid() {
			out[ia.v4] = true
		}
		if ia.v6.IsValid() {
			out[ia.v6] = true
		}
	}
	return out
}

// dropFlowKey is what a drop and the flows it may belong to share: the
// local endpoint's resource and address, its port (TCP/UDP), the peer
// address, transport and direction.
type dropFlowKey struct {
	resource  netip.Addr // invalid: the node
	local     netip.AddrPort
	peer      netip.Addr
	protocol  uint8
	direction Direction
}

func flowDropKey(f *Flow) dropFlowKey {
	local := f.Local()
	if !f.HasPorts() {
		local = netip.AddrPortFrom(local.Addr(), 0)
	}
	k := dropFlowKey{local: local, peer: f.Peer().Addr(), protocol: f.Protocol, direction: f.Direction}
	if !f.OnNode {
		k.resource = f.Endpoint
	}
	return k
}

// AttachDrops puts each packet drop on the flow of the interval it belongs
// to when exactly one flow has its local endpoint, peer address, transport
// and direction (drops keep no peer port: several flows of one pod and
// peer cannot be told apart); the others stay records of their own. Call
// after Resolve and ResolveDrops.
func AttachDrops(b *Batch) {
	if len(b.Drops) == 0 {
		return
	}
	one := make(map[dropFlowKey]int, len(b.Drops)) // flow index; -1: several
	for i := range b.Drops {
		d := &b.Drops[i]
		if d.Kind == DropPacket {
			one[dropKeyOf(d)] = -2 // wanted, no flow yet
		}
	}
	for i := range b.Flows {
		k := flowDropKey(&b.Flows[i])
		switch at, ok := one[k]; {
		case !ok:
		case at == -2:
			one[k] = i
		default:
			one[k] = -1
		}
	}
	for i := range b.Drops {
		d := &b.Drops[i]
		if d.Kind != DropPacket {
			continue
		}
		if at := one[dropKeyOf(d)]; at >= 0 {
			f := &b.Flows[at]
			f.Drops = append(f.Drops, SocketDrop{Reason: d.Reason, Packets: d.Packets})
			d.OnFlow = true
		}
	}
}

func dropKeyOf(d *Drop) dropFlowKey {
	local := d.Local
	if d.Protocol != ProtoTCP && d.Protocol != ProtoUDP {
		local = netip.AddrPortFrom(local.Addr(), 0)
	}
	k := dropFlowKey{local: local, peer: d.Peer, protocol: d.Protocol, direction: d.Direction}
	if !d.OnNode {
		k.resource = d.Endpoint
	}
	return k
}
