package flow

// Reason says why the kernel side did not fold a packet into a flow, or
// could not report a TCP connection whole. The values are those of enum
// counter_reason (bpf/types.h); internal/kernel holds them equal to
// bpf2go's constants.
type Reason uint8

const (
	ReasonNonIP             Reason = 0  // not IPv4/IPv6 (ARP, LLDP, ...)
	ReasonTruncated         Reason = 1  // shorter than the headers it announces
	ReasonMalformed         Reason = 2  // an invalid header field
	ReasonFragment          Reason = 3  // a non-first IP fragment: no ports to key on
	ReasonMapFull           Reason = 4  // the flow table had no room
	ReasonDedupUplink       Reason = 5  // already counted at a pod endpoint
	ReasonExtHdrLimit       Reason = 6  // more IPv6 extension headers than are walked
	ReasonNonlinear         Reason = 7  // headers beyond the linear data even after a pull
	ReasonConnStateFull     Reason = 8  // the connection state map had no room
	ReasonConnEventsFull    Reason = 9  // the closed-connection ring was full
	ReasonStateChangeMissed Reason = 10 // the kernel skipped a TCP program (recursion)
	ReasonDialedFull        Reason = 11 // the dialed-address map had no room
	ReasonDropsFull         Reason = 12 // the drop table had no room: a dropped packet counted here only
	ReasonDropsMissed       Reason = 13 // the kernel did not run the drop program for a drop (recursion)
	ReasonDNSPendingFull    Reason = 14 // the DNS query map had no room: that lookup is not reported
	ReasonDNSEventsFull     Reason = 15 // the DNS ring was full: an answered lookup was lost
	NumReasons                     = 16
)

// Count is a number of packets (or connections, or state changes) and,
// for packets, their L2 bytes.
type Count struct {
	Packets uint64
	Bytes   uint64
}

// Counters are the kernel side's cumulative counts, by Reason.
type Counters [NumReasons]Count
