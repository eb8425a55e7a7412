package flow

import (
	"net/netip"
	"time"

	"github.com/ebpfnet/ebpfnet/internal/kernel"
)

// Direction of a flow from the local endpoint's point of view.
type Direction uint8

const (
	Transmit Direction = Direction(kernel.DirectionTransmit)
	Receive  Direction = Direction(kernel.DirectionReceive)
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

// FromKernel builds a Flow from a drained kernel entry. offset converts
// CLOCK_MONOTONIC to wall time (kernel.WallClockOffset); name resolves the
// interface name.
func FromKernel(k *kernel.Flow, offset time.Duration, name func(uint32) string) Flow {
	addr := func(b [16]byte, family uint8) netip.Addr {
		a := netip.AddrFrom16(b)
		if family == 4 {
			return a.Unmap()
		}
		return a
	}
	f := Flow{
		Src:       netip.AddrPortFrom(addr(k.Key.SrcAddr, k.Key.Family), k.Key.SrcPort),
		Dst:       netip.AddrPortFrom(addr(k.Key.DstAddr, k.Key.Family), k.Key.DstPort),
		Protocol:  k.Key.Protocol,
		Direction: Direction(k.Key.Direction),
		OnNode:    k.Key.Observer == kernel.ObserverUplink,
		Ifindex:   k.Key.Ifindex,
		Bytes:     k.Counts.Bytes,
		Packets:   k.Counts.Packets,
		Start:     time.Unix(0, int64(k.Counts.FirstSeenNs)+int64(offset)),
		End:       time.Unix(0, int64(k.Counts.LastSeenNs)+int64(offset)),
		TCPFlags:  uint8(k.Counts.TcpFlags),
	}
	if name != nil {
		f.Interface = name(k.Key.Ifindex)
	}
	return f
}

// Batch is everything one drain produced.
type Batch struct {
	// Time is when the flow table was switched: the end of the interval.
	Time time.Time
	// Flows of the interval, one per kernel entry.
	Flows []Flow
	// Counters are the kernel's cumulative per-reason counters.
	Counters kernel.Counters
	// TableCapacity is the capacity of the kernel flow table.
	TableCapacity uint32
}
