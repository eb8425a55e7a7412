package kernel

// The types below are generated from bpf/types.h by bpf2go; these aliases are
// the package's exported names for them.

// FlowKey identifies one aggregated flow (see struct flow_key in bpf/types.h).
type FlowKey = ebpfnetFlowKey

// cpuCounts is one CPU's copy of a flow's counters in a flow table
// (struct flow_counts), its times in jiffies.
type cpuCounts = ebpfnetFlowCounts

// cacheSlot is one CPU's slot of flow_cache (struct flow_cache_slot).
type cacheSlot = ebpfnetFlowCacheSlot

// FlowCounts are the counters of one drained flow, merged over the CPUs.
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

// CounterReason says why a packet is not part of any flow (enum counter_reason).
type CounterReason = ebpfnetCounterReason

// Reasons a packet is not part of a flow.
const (
	ReasonNonIP       = ebpfnetCounterReasonCOUNTER_NON_IP
	ReasonTruncated   = ebpfnetCounterReasonCOUNTER_TRUNCATED
	ReasonMalformed   = ebpfnetCounterReasonCOUNTER_MALFORMED
	ReasonFragment    = ebpfnetCounterReasonCOUNTER_FRAGMENT
	ReasonMapFull     = ebpfnetCounterReasonCOUNTER_MAP_FULL
	ReasonDedupUplink = ebpfnetCounterReasonCOUNTER_DEDUP_UPLINK
	ReasonExtHdrLimit = ebpfnetCounterReasonCOUNTER_EXT_HDR_LIMIT
	ReasonNonlinear   = ebpfnetCounterReasonCOUNTER_NONLINEAR
	NumReasons        = int(ebpfnetCounterReasonCOUNTER_MAX)
	// NumPacketReasons: the reasons below it are about packets; the ones
	// from it on are about TCP connections that could not be reported.
	NumPacketReasons = int(ebpfnetCounterReasonCOUNTER_CONN_STATE_FULL)
)

// Direction values of FlowKey.Direction, from the local endpoint's view.
const (
	DirectionTransmit = uint8(ebpfnetFlowDirectionFLOW_TRANSMIT)
	DirectionReceive  = uint8(ebpfnetFlowDirectionFLOW_RECEIVE)
)

// Observer values of FlowKey.Observer: which kind of interface saw the flow.
const (
	ObserverEndpoint = uint8(ebpfnetFlowObserverOBSERVER_ENDPOINT)
	ObserverUplink   = uint8(ebpfnetFlowObserverOBSERVER_UPLINK)
)

// Flow is one drained flow table entry.
type Flow struct {
	Key    FlowKey
	Counts FlowCounts
}

// Counters are the cumulative per-reason counters, summed over CPUs.
type Counters [NumReasons]CounterValue

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
