package flow

import (
	"net/netip"
	"time"
)

// Direction of a flow from the local endpoint's point of view. The values
// are those of enum flow_direction (bpf/types.h); internal/kernel holds them
// equal to bpf2go's constants.
type Direction uint8

const (
	Transmit Direction = 0
	Receive  Direction = 1
)

func (d Direction) String() string {
	if d == Receive {
		return "receive"
	}
	return "transmit"
}

// IP protocol numbers the model names.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// Flow is one flow of one interval, as the local endpoint saw it.
type Flow struct {
	Src, Dst  netip.AddrPort // packet source and destination; ICMP: port = type / code
	Protocol  uint8          // IP protocol number
	Direction Direction      // transmit: Src is local; receive: Dst is local
	// OnNode is true when the flow was observed on a node uplink: the local
	// endpoint is the node itself, not a pod.
	OnNode bool
	// Endpoint identifies the local pod (its address) for the resource;
	// set by Endpoints.Resolve. Invalid for OnNode flows.
	Endpoint  netip.Addr
	Ifindex   uint32
	Interface string
	Bytes     uint64
	Packets   uint64
	Start     time.Time // first packet in the interval
	End       time.Time // last packet in the interval
	TCPFlags  uint8     // OR of TCP flags seen in the interval
	// Conn is the TCP connection the flow belongs to, where known
	// (ConnIndex.Annotate); zero otherwise.
	Conn ConnRef
	// Dialed is, for a UDP flow a socket-level load balancer rewrote, the
	// Service address the local socket sent to (DialedIndex.Annotate);
	// invalid otherwise.
	Dialed netip.AddrPort
	// Backend is, for a flow of a local client to a Service ClusterIP the
	// node's NAT translated (kube-proxy), where the connection went, from
	// conntrack; invalid otherwise (set by the receiver).
	Backend netip.AddrPort
	// Drops are the flow's packets the kernel dropped in the interval, by
	// reason (AttachDrops).
	Drops []SocketDrop
	// Policy is the NetworkPolicy verdict of the flow's connection for the
	// local pod (Stream); zero: not evaluated.
	Policy PolicyVerdict
}

// Local is the endpoint the flow belongs to (the resource).
func (f *Flow) Local() netip.AddrPort {
	if f.Direction == Receive {
		return f.Dst
	}
	return f.Src
}

// Peer is the other endpoint.
func (f *Flow) Peer() netip.AddrPort {
	if f.Direction == Receive {
		return f.Src
	}
	return f.Dst
}

// Served is the address that got the flow's packets: Backend when the node's
// NAT translated the peer, else the peer.
func (f *Flow) Served() netip.AddrPort {
	if f.Backend.IsValid() {
		return f.Backend
	}
	return f.Peer()
}

// Service is the Service address a local client addressed when another
// address served it: Dialed (a socket-level load balancer rewrote the
// destination before the packets), or the packets' peer (the node's NAT
// translated it after them, to Backend). Invalid otherwise.
func (f *Flow) Service() netip.AddrPort {
	switch {
	case f.Dialed.IsValid():
		return f.Dialed
	case f.Backend.IsValid():
		return f.Peer()
	}
	return netip.AddrPort{}
}

// HasPorts reports whether Src/Dst ports are transport ports.
func (f *Flow) HasPorts() bool { return f.Protocol == ProtoTCP || f.Protocol == ProtoUDP }

// IsICMP reports whether the ports hold ICMP type (Src) and code (Dst).
func (f *Flow) IsICMP() bool { return f.Protocol == ProtoICMP || f.Protocol == ProtoICMPv6 }

// Batch is everything one interval produced: what the kernel side drained
// and read, which the joins complete and the converters turn into signals.
type Batch struct {
	// Time is when the flow table was switched: the end of the interval.
	Time time.Time
	// Flows of the interval, one per kernel entry.
	Flows []Flow
	// Counters are the kernel side's cumulative per-reason counters.
	Counters Counters
	// TableCapacity is the capacity of the kernel flow table.
	TableCapacity uint32
	// Live are the TCP connections open at the end of the interval.
	Live []LiveConn
	// Closed are the TCP connections that closed during the interval.
	Closed []Conn
	// UDPDialed are the UDP destinations local sockets sent to lately,
	// before any socket-level load balancer rewrote them.
	UDPDialed []UDPDialed
	// Drops are what the kernel dropped during the interval.
	Drops []Drop
	// DNS are the DNS lookups of local pods that ended during the interval
	// (answered, or timed out).
	DNS []DNSLookup
}
