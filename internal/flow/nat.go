package flow

import "net/netip"

// BackendFunc asks where the node's NAT (kube-proxy's DNAT of a Service
// ClusterIP, in the node after the socket and after the pod's veth) sent the
// connection of proto from local to service; false when it did not
// translate it or the answer is unknown.
type BackendFunc func(proto uint8, local, service netip.AddrPort) (netip.AddrPort, bool)

// ConnJoins complete a closed connection as it is read: the pod and the
// container its socket's cgroup names, and, for a client of a Service
// ClusterIP that its socket saw untranslated, the backend the node's NAT
// chose (asked as the close is read: conntrack keeps a reset connection
// only 10 s). A nil lookup skips its join.
type ConnJoins struct {
	// Pod names the pod and container of a cgroup v2 id.
	Pod func(cgroupID uint64) (podUID, containerID string)
	// IsService reports whether an address is a Service ClusterIP.
	IsService func(netip.Addr) bool
	// Backend asks the node's conntrack.
	Backend BackendFunc
}

// Join completes c.
func (j *ConnJoins) Join(c *Conn) {
	if j.Pod != nil && c.CgroupID != 0 {
		c.PodUID, c.ContainerID = j.Pod(c.CgroupID)
	}
	if j.IsService == nil || j.Backend == nil || c.Role != Client || !c.Remote.IsValid() ||
		(c.Dialed.IsValid() && c.Dialed != c.Remote) || !j.IsService(c.Remote.Addr()) {
		return
	}
	if b, ok := j.Backend(ProtoTCP, c.Local, c.Remote); ok {
		c.Backend = b
	}
}

// tcpSYN is the SYN bit of Flow.TCPFlags.
const tcpSYN = 0x02

// natConn is a connection of a local client to a Service ClusterIP.
type natConn struct {
	proto          uint8
	local, service netip.AddrPort
}

// FlowNAT sets Backend on the flows of local clients to a Service ClusterIP
// (both directions: the replies come back from the ClusterIP) and on their
// DNS lookups of one. One lookup
// per UDP flow and interval, and per TCP connection: a TCP connection keeps
// the backend it got while it has flows in consecutive intervals (the NAT of
// an established connection does not change); a SYN in the interval means a
// new connection on the same addresses, which is looked up again. Not safe
// for concurrent use.
type FlowNAT struct {
	IsService func(netip.Addr) bool
	Backend   BackendFunc
	// TCP connections to ClusterIPs of the last batch with their backends,
	// and the map the next one fills.
	known, next map[natConn]netip.AddrPort
}

// Annotate sets Backend on the batch's flows to Services when flows (flow
// logs want them), and on the DNS lookups of local clients that asked a
// Service ClusterIP (kube-dns), reusing the answer for the lookup's UDP
// flow of the same batch. Lookups always: their metric names the resolver
// pod that answered. It is Begin, Flow of each flow, End.
func (n *FlowNAT) Annotate(b *Batch, flows bool) {
	if !n.Begin(b) {
		return
	}
	if flows {
		for i := range b.Flows {
			n.Flow(&b.Flows[i])
		}
	}
	n.End()
}

// Begin starts a batch: it sets the DNS lookups' backends; false when there
// are no Service addresses to ask about (Flow and End do nothing then).
func (n *FlowNAT) Begin(b *Batch) bool {
	if n == nil || n.IsService == nil || n.Backend == nil {
		return false
	}
	if n.next == nil {
		n.next = make(map[natConn]netip.AddrPort)
	}
	clear(n.next)
	for i := range b.DNS {
		if l := &b.DNS[i]; l.Side == DNSClient && l.Client.IsValid() && n.IsService(l.Server.Addr()) {
			l.Backend = n.backend(natConn{l.Protocol, l.Client, l.Server}, true, nil, n.next)
		}
	}
	return true
}

// Flow sets f's backend when it is a flow of a local client to a Service.
func (n *FlowNAT) Flow(f *Flow) {
	if n == nil || n.next == nil {
		return
	}
	if f.HasPorts() && !f.Dialed.IsValid() && n.IsService(f.Peer().Addr()) {
		f.Backend = n.backend(natConn{f.Protocol, f.Local(), f.Peer()}, f.TCPFlags&tcpSYN != 0, n.known, n.next)
	}
}

// End ends the batch: only its TCP connections stay known (one that had no
// flow for an interval is looked up again).
func (n *FlowNAT) End() {
	if n == nil || n.next == nil {
		return
	}
	for k := range n.next {
		if k.proto != ProtoTCP {
			delete(n.next, k)
		}
	}
	n.known, n.next = n.next, n.known
}

// backend is the backend of k: this batch's answer, a TCP connection's of
// the last batch (unless syn: a new connection), or conntrack's.
func (n *FlowNAT) backend(k natConn, syn bool, prev, next map[natConn]netip.AddrPort) netip.AddrPort {
	backend, done := next[k]
	if done {
		return backend
	}
	if k.proto == ProtoTCP && !syn {
		backend, done = prev[k]
	}
	if !done || !backend.IsValid() {
		backend, _ = n.Backend(k.proto, k.local, k.service)
	}
	next[k] = backend
	return backend
}

// Joiner completes each batch: the local endpoint of every flow, the
// resolver pod the node's NAT sent DNS lookups of a Service to, and, when
// flow logs are wanted (PerFlow), the connection each TCP flow belongs to,
// the Service a rewritten UDP flow's socket sent to, and the backend the
// node's NAT chose for flows to a Service. Not safe for concurrent use.
type Joiner struct {
	Endpoints *Endpoints
	// PerFlow enables the joins only flow log records carry.
	PerFlow bool
	// Backs reports whether backend is an endpoint of the Service at
	// service; nil: no UDP Service attribution.
	Backs func(service, backend netip.Addr) bool
	NAT   *FlowNAT // nil: no NAT backends
	// HostNetns is the node's network namespace inode (the drops' rule).
	HostNetns uint32
	// Policy judges pod flows by their NetworkPolicies (nil: no verdicts).
	Policy PolicyEvaluator
	// DropPod names the pod of a socket's cgroup (nil: none): the drops of
	// hostNetwork pods' sockets in the node's namespace are theirs.
	DropPod func(cgroupID uint64) string
}

// Join completes b, its flows in one part (a Stream's): the flows a join
// held until the end (see Stream) come last.
func (j *Joiner) Join(b *Batch) {
	s := j.Begin(b)
	for i := range b.Flows {
		s.Learn(&b.Flows[i])
	}
	ready := s.Flows(b.Flows)
	b.Flows = append(b.Flows[:len(ready)], s.End()...)
}
