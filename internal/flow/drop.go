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
// after Resolve and ResolveDrops. A Stream does the same a chunk at a time.
func AttachDrops(b *Batch) {
	c := newDropCandidates(b.Drops)
	if c == nil {
		return
	}
	for i := range b.Flows {
		c.see(&b.Flows[i], i)
	}
	c.attach(b.Drops, func(at int) *Flow { return &b.Flows[at] })
}

// dropCandidates are the flows a batch's packet drops may belong to, by the
// drops' keys: how many flows each key has and where the first one is (an
// index of the caller's).
type dropCandidates struct {
	byKey map[dropFlowKey]*dropCandidate
	order []*dropCandidate // by first flow seen
}

type dropCandidate struct {
	key     dropFlowKey
	flows   int    // flows seen with the key
	first   int    // where the first one is
	packets uint64 // the flows' packets
	// delivered are the delivery keys (deliveredSet.key) of the key's
	// received flows past the first that had packets no drop took: they
	// were delivered unless the drops no flow took are as many as the
	// flows' packets, known at the end.
	delivered []uint64
}

// newDropCandidates: nil when no packet drop waits for a flow.
func newDropCandidates(drops []Drop) *dropCandidates {
	var c *dropCandidates
	for i := range drops {
		if d := &drops[i]; d.Kind == DropPacket {
			if c == nil {
				c = &dropCandidates{byKey: make(map[dropFlowKey]*dropCandidate)}
			}
			k := dropKeyOf(d)
			if c.byKey[k] == nil {
				c.byKey[k] = &dropCandidate{key: k, first: -1}
			}
		}
	}
	return c
}

// see counts f, at at, for its drop key; the candidate when a drop has the
// key (nil otherwise).
func (c *dropCandidates) see(f *Flow, at int) *dropCandidate {
	if c == nil {
		return nil
	}
	d := c.byKey[flowDropKey(f)]
	if d == nil {
		return nil
	}
	if d.flows == 0 {
		d.first = at
		c.order = append(c.order, d)
	}
	d.flows++
	d.packets += f.Packets
	return d
}

// attach puts each packet drop on the first flow of its key when it is the
// key's only one (flow finds it by where it is).
func (c *dropCandidates) attach(drops []Drop, flow func(at int) *Flow) {
	for i := range drops {
		d := &drops[i]
		if d.Kind != DropPacket {
			continue
		}
		if cand := c.byKey[dropKeyOf(d)]; cand.flows == 1 {
			f := flow(cand.first)
			f.Drops = append(f.Drops, SocketDrop{Reason: d.Reason, Packets: d.Packets})
			d.OnFlow = true
		}
	}
}

// unattached are the packets of the received packet drops no flow took,
// by key.
func (c *dropCandidates) unattached(drops []Drop) map[dropFlowKey]uint64 {
	out := make(map[dropFlowKey]uint64)
	for i := range drops {
		if d := &drops[i]; d.Kind == DropPacket && !d.OnFlow && d.Direction == Receive {
			out[dropKeyOf(d)] += d.Packets
		}
	}
	return out
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
