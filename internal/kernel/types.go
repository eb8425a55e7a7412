package kernel

// The types below are generated from bpf/types.h by bpf2go; these aliases are
// the package's exported names for them.

// FlowKey identifies one aggregated flow (see struct flow_key in bpf/types.h).
type FlowKey = ebpfnetFlowKey

// rawCounts are a flow's counters as the kernel keeps them (struct
// flow_counts: a flow table entry, or what a CPU's slot holds), its times in
// jiffies.
type rawCounts = ebpfnetFlowCounts

// cacheSlot is one CPU's slot of flow_cache (struct flow_cache_slot).
type cacheSlot = ebpfnetFlowCacheSlot

// FlowCounts are the counters of one drained flow, with what the CPUs'
// slots held for it.
type FlowCounts struct {
	Bytes   uint64 // L2 frame bytes
	Packets uint64
	// CLOCK_MONOTONIC ns of the first and the latest packet, at the
	// resolution of a kernel tick.
	FirstSeenNs, LastSeenNs uint64
	TcpFlags                uint32 // OR of the TCP flags of all packets
}

// CounterValue is one slot of the per-reason counters (struct counter_value).
type CounterValue = ebpfnetCounterValue

// Role is the role of an interface the programs attach to.
type Role int

const (
	// RoleEndpoint is the host side of a pod's veth: the pod is the local
	// endpoint; ingress is its transmit, egress its receive.
	RoleEndpoint Role = iota
	// RoleUplink is a node uplink: the node is the local endpoint for
	// packets that are not routed from or to a pod endpoint.
	RoleUplink
)

func (r Role) String() string {
	if r == RoleUplink {
		return "uplink"
	}
	return "endpoint"
}
