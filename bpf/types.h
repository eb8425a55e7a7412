/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Structs shared between the BPF programs and Go. bpf2go generates the Go
 * side from these definitions (-type), so every layout lives here once. */
#ifndef EBPFNET_TYPES_H
#define EBPFNET_TYPES_H

/* Direction of a packet from the point of view of the local endpoint that
 * owns the flow: the pod behind an endpoint interface, or the node itself on
 * an uplink. */
enum flow_direction {
	FLOW_TRANSMIT = 0, /* the local endpoint sent the packet */
	FLOW_RECEIVE = 1,  /* the local endpoint received the packet */
};

/* Where a flow was observed, set by which program saw the packet. */
enum flow_observer {
	OBSERVER_ENDPOINT = 0, /* host side of a pod veth: the pod is local */
	OBSERVER_UPLINK = 1,   /* node uplink: the node itself is local */
};

/* Key of one aggregated flow. Addresses are in network byte order; IPv4 is
 * stored as an IPv4-mapped IPv6 address (::ffff:a.b.c.d). */
struct flow_key {
	__u8 src_addr[16]; /* source address of the packet */
	__u8 dst_addr[16]; /* destination address of the packet */
	__u16 src_port;	   /* TCP/UDP source port (host order); ICMP type */
	__u16 dst_port;	   /* TCP/UDP destination port (host order); ICMP code */
	__u32 ifindex;	   /* interface the packet was seen on */
	__u8 protocol;	   /* IP protocol number (IPPROTO_*) */
	__u8 family;	   /* 4 or 6 */
	__u8 direction;	   /* enum flow_direction */
	__u8 observer;	   /* enum flow_observer */
};

/* Counters of one flow, updated in place by the TC programs. */
struct flow_counts {
	__u64 bytes;	     /* sum of skb->len: L2 frame bytes, as `ip -s link` counts them */
	__u64 packets;	     /* packets (one per skb handed to the interface) */
	__u64 first_seen_ns; /* bpf_ktime_get_ns() of the first packet (CLOCK_MONOTONIC) */
	__u64 last_seen_ns;  /* bpf_ktime_get_ns() of the latest packet */
	__u32 tcp_flags;     /* OR of the TCP flags (FIN=0x01 ... CWR=0x80) of all packets */
	__u32 _pad;
};

/* Packets that did not land in a flow, or that the programs chose not to
 * count again, by reason. Index of the `counters` per-CPU array. */
enum counter_reason {
	COUNTER_NON_IP = 0,	     /* not IPv4/IPv6 (ARP, LLDP, ...): not a flow */
	COUNTER_TRUNCATED = 1,	     /* shorter than the headers it announces */
	COUNTER_MALFORMED = 2,	     /* invalid header field (IHL < 5, TCP doff < 5, ...) */
	COUNTER_FRAGMENT = 3,	     /* non-first IP fragment: no L4 header to key on */
	COUNTER_MAP_FULL = 4,	     /* the flow map had no room for a new flow */
	COUNTER_DEDUP_UPLINK = 5,    /* uplink packet already counted at a pod endpoint */
	COUNTER_EXT_HDR_LIMIT = 6,   /* IPv6 extension header chain longer than we walk */
	COUNTER_NONLINEAR = 7,	     /* headers beyond the linear skb data even after a pull */
	COUNTER_MAX = 8,
};

/* One slot of the `counters` array: packets and their L2 bytes. */
struct counter_value {
	__u64 packets;
	__u64 bytes;
};

#endif /* EBPFNET_TYPES_H */
