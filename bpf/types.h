/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Structs shared between the BPF programs and Go. bpf2go generates the Go
 * side from these definitions (-type), so every layout lives here once. */
#ifndef EBPFNET_TYPES_H
#define EBPFNET_TYPES_H

#include "include/vmlinux.h"

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

/* Counters of one flow, updated in place by the TC programs. Times are the
 * low 32 bits of jiffies_64 (bpf_jiffies64(), which the verifier inlines to
 * one load): the kernel tick, as coarse as bpf_ktime_get_coarse_ns() but
 * without its helper call. User space converts them to CLOCK_MONOTONIC with
 * a (jiffies, coarse ns) pair it samples at each drain (clock_sample); a
 * flow's times are less than one drain interval old, far from a wrap. */
struct flow_counts {
	__u64 bytes;	  /* sum of skb->len: L2 frame bytes, as `ip -s link` counts them */
	__u64 packets;	  /* packets (one per skb handed to the interface) */
	__u32 first_seen; /* jiffies of the first packet (low 32 bits) */
	__u32 last_seen;  /* jiffies of the latest packet (low 32 bits) */
	__u32 tcp_flags;  /* OR of the TCP flags (FIN=0x01 ... CWR=0x80) of all packets */
	__u32 _pad;
};

/* A flow of one program on one CPU, for one of the two tables (map
 * flow_cache; flow_way picks the slot of a key): consecutive packets of the
 * slot's flow on that CPU (a TCP stream's segments, a GRO train) are added
 * here, in memory no other CPU touches, instead of in the flow table's hash
 * bucket. The key is always a flow of that table: it was accounted there at
 * the packet that took the slot. delta: packets of key added here since,
 * not yet in the table; the programs add it to the table when another flow
 * takes the slot, user space when it drains the table. */
struct flow_cache_slot {
	struct flow_key key; /* family 0: empty */
	__u32 _pad;
	struct flow_counts delta;
};

/* Packets that did not land in a flow, or that the programs chose not to
 * count again, by reason. Index of the `counters` per-CPU array. */
enum counter_reason {
	COUNTER_NON_IP = 0,		  /* not IPv4/IPv6 (ARP, LLDP, ...): not a flow */
	COUNTER_TRUNCATED = 1,		  /* shorter than the headers it announces */
	COUNTER_MALFORMED = 2,		  /* invalid header field (IHL < 5, TCP doff < 5, ...) */
	COUNTER_FRAGMENT = 3,		  /* non-first IP fragment: no L4 header to key on */
	COUNTER_MAP_FULL = 4,		  /* the flow map had no room for a new flow */
	COUNTER_DEDUP_UPLINK = 5,	  /* uplink packet already counted at a pod endpoint */
	COUNTER_EXT_HDR_LIMIT = 6,	  /* IPv6 extension header chain longer than we walk */
	COUNTER_NONLINEAR = 7,		  /* headers beyond the linear skb data even after a pull */
	COUNTER_CONN_STATE_FULL = 8,	  /* conn_state had no room: that connection is not reported */
	COUNTER_CONN_EVENTS_FULL = 9,	  /* conn_events ringbuf full: a closed connection was lost */
	COUNTER_DIALED_FULL = 11,	  /* the dialed map had no room: that connection has no dialed address */
	COUNTER_STATE_CHANGE_MISSED = 10, /* never set by a program: user space fills it from the
					   * TCP programs' recursion_misses (a state change the
					   * kernel did not run our program for) */
	COUNTER_DROPS_FULL = 12,	  /* the drop table had no room: a dropped packet is counted here only */
	COUNTER_DROPS_MISSED = 13,	  /* never set by a program: the kfree_skb program's recursion_misses (drops
					   * the kernel did not run it for: it was running on that CPU) */
	COUNTER_DNS_PENDING_FULL = 14,	  /* dns_pending had no room: that lookup is not reported */
	COUNTER_DNS_EVENTS_FULL = 15,	  /* dns_events ringbuf full: an answered lookup was lost */
	COUNTER_MAX = 16,
};

/* One slot of the `counters` array: packets and their L2 bytes. */
struct counter_value {
	__u64 packets;
	__u64 bytes;
};

/* Side of a TCP connection the local socket is on. */
enum conn_role {
	ROLE_CLIENT = 1, /* it called connect(): SYN_SENT */
	ROLE_SERVER = 2, /* it was accepted: SYN_RECV */
};

/* How a connection ended. */
enum conn_result {
	RESULT_CLOSED = 0,	    /* established, then closed */
	RESULT_REFUSED = 1,	    /* connect failed: RST in reply to the SYN */
	RESULT_TIMED_OUT = 2,	    /* connect failed: no answer to the SYN (retries exhausted) */
	RESULT_UNREACHABLE = 3,	    /* connect failed: host or network unreachable (ICMP) */
	RESULT_FAILED_OTHER = 4,    /* connect failed for another reason (sk_err in the event) */
	RESULT_RESET = 5,	    /* established, then ended by a reset */
	RESULT_NOT_ESTABLISHED = 6, /* a server socket that never finished the handshake */
};

/* Per-socket state from the first state change to close.
 * Lives in conn_state keyed by socket cookie. */
#define MAX_BURSTS	     4
#define MAX_SOCK_DROPS	     4
#define RETRANS_BURST_GAP_NS 1000000000ULL /* 1 s */

struct conn_state {
	__u64 start_ns;	      /* bpf_ktime_get_ns() of SYN_SENT / SYN_RECV */
	__u64 established_ns; /* of ESTABLISHED, 0 if never */
	__u64 cgroup_id;      /* cgroup v2 id of the process (client side only) */
	__u32 client_isn;     /* initial sequence numbers, set at ESTABLISHED */
	__u32 server_isn;
	__u32 pid;	      /* thread group id of the process (client side only) */
	__u8 role;	      /* enum conn_role */
	__u8 resets_received; /* tcp_receive_reset seen for this socket */
	__u8 family;	      /* 4 or 6, set at ESTABLISHED with the addresses */
	__u8 resets_sent;     /* tcp_send_reset for this socket */
	char comm[16];	      /* process name (client side only) */
	/* Set at ESTABLISHED: an active closer's socket gives its port to the
	 * TIME_WAIT socket before it reaches CLOSE. */
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u16 local_port;
	__u16 remote_port;
	/* Kept current by the sockops RTT callback (each RTT sample), so that
	 * user space can report connections that stay open. */
	__u32 srtt_us;	      /* smoothed RTT in us (tcp_sock srtt_us >> 3) */
	__u64 bytes_acked;    /* sequence space acked (SYN included) */
	__u64 bytes_received; /* sequence space received */
	__u32 total_retrans;
	__u32 netns; /* inode of the socket's network namespace */
	/* Retransmit bursts (tcp_retransmit_skb): a retransmission more than
	 * RETRANS_BURST_GAP_NS after the previous one starts a new burst; past
	 * MAX_BURSTS the last one grows. */
	__u64 last_retrans_ns;
	__u64 burst_start_ns[MAX_BURSTS];
	__u32 burst_count[MAX_BURSTS];
	__u32 bursts;
	__u32 burst_retrans; /* tcp_sock total_retrans when the bursts were last updated */
	/* Packets of this socket the kernel dropped (kfree_skb), by reason:
	 * the first MAX_SOCK_DROPS reasons seen; later reasons are counted in
	 * the drop tables only. */
	__u32 drop_reason[MAX_SOCK_DROPS];
	__u32 drop_count[MAX_SOCK_DROPS];
	__u8 reset_reason; /* enum sk_rst_reason of the last reset sent, +1 (0: none or unknown) */
	__u8 _pad2[7];
};

/* One closed connection, sent to user space through the conn_events ringbuf.
 * Addresses in network byte order, IPv4 mapped into IPv6; local/remote are
 * as the socket sees them (a DNATed client sees the address it dialed). */
struct conn_event {
	__u64 cookie;	      /* socket cookie: the join key with other hooks */
	__u64 start_ns;	      /* CLOCK_MONOTONIC, see conn_state */
	__u64 established_ns; /* 0 if never established */
	__u64 end_ns;	      /* close */
	__u64 cgroup_id;
	__u64 bytes_acked;    /* bytes sent and acknowledged */
	__u64 bytes_received; /* bytes received */
	__u32 segs_in;
	__u32 segs_out;
	__u32 total_retrans; /* segments retransmitted */
	__u32 srtt_us;	     /* smoothed RTT (tcp_sock srtt_us >> 3) */
	__u32 min_rtt_us;    /* minimum RTT seen */
	__u32 client_isn;
	__u32 server_isn;
	__u32 pid;
	__s32 sk_err; /* socket error at close (failed connects) */
	__u32 netns;  /* inode of the socket's network namespace */
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u16 local_port;  /* host order */
	__u16 remote_port; /* host order */
	__u8 family;	   /* 4 or 6 */
	__u8 role;	   /* enum conn_role */
	__u8 result;	   /* enum conn_result */
	__u8 resets_received;
	char comm[16];
	/* The address the application passed to connect() (cgroup/connect4/6),
	 * before any socket-level load balancer rewrote it; dialed_family 0:
	 * not recorded (the connection predates the receiver, or not a client). */
	__u8 dialed_addr[16];
	__u16 dialed_port;  /* host order */
	__u8 dialed_family; /* 4 or 6 */
	__u8 resets_sent;
	__u32 bursts; /* retransmit bursts recorded (at most MAX_BURSTS) */
	__u64 burst_start_ns[MAX_BURSTS];
	__u32 burst_count[MAX_BURSTS];
	__u32 drop_reason[MAX_SOCK_DROPS]; /* see conn_state */
	__u32 drop_count[MAX_SOCK_DROPS];
	__u8 reset_reason;
	__u8 _pad2[7];
};

/* The destination an application dialed, by socket cookie (map dialed). */
struct dialed {
	__u8 addr[16];
	__u16 port; /* host order */
	__u8 family;
	__u8 _pad;
};

/* A UDP destination a socket sent to (sendmsg with an address, or connect
 * of a bound socket), before any socket-level load balancer rewrote it, with
 * the socket's local port: user space joins it to the UDP flows of that port
 * whose peer is a backend of the dialed Service (map udp_dialed). */
struct udp_dialed_key {
	__u8 addr[16];	  /* IPv4: mapped */
	__u16 port;	  /* host order */
	__u16 local_port; /* host order */
	__u8 family;	  /* 4 or 6 */
	__u8 _pad[3];
};

/* What a drop table entry counts. */
enum drop_kind {
	DROP_PACKET = 0,       /* a packet the kernel dropped (kfree_skb) */
	DROP_RESET_NOSOCK = 1, /* a TCP reset sent for a segment no full socket owned (tcp_send_reset) */
};

/* Key of the drop tables: the dropped packets of one local endpoint and
 * peer address, by reason. The peer's port is not kept: a flood of new
 * 5-tuples (a SYN scan, spoofed sources) lands in one entry per peer address
 * instead of one insert per packet. Addresses as in flow_key; family 0: not
 * an IP packet (addresses and ports 0). */
struct drop_key {
	__u8 local_addr[16];
	__u8 peer_addr[16];
	__u16 local_port; /* TCP/UDP (host order); ICMP: type << 8 | code */
	__u16 _pad;
	__u32 reason;	 /* enum skb_drop_reason (DROP_PACKET) or sk_rst_reason (DROP_RESET_NOSOCK) */
	__u32 ifindex;	 /* the pod endpoint interface (host namespace) the packet belongs to; 0: none */
	__u32 netns;	 /* inode of the namespace it was dropped in (its device's, else its socket's) */
	__u64 cgroup_id; /* cgroup v2 id of its full socket; 0: none */
	__u8 protocol;
	__u8 family;	/* 4, 6, 0 */
	__u8 direction; /* enum flow_direction, from the local endpoint */
	__u8 kind;	/* enum drop_kind */
	__u32 _pad2;
};

struct drop_counts {
	__u64 packets;
	__u64 bytes; /* from the network header on, as iptables counts them */
};

/* Where the FIB sent a destination arriving on an uplink (map fib_cache):
 * the destination (IPv4 in dst[0], the rest 0), the uplink, and whether the
 * FIB's egress interface counts the packet (counted_ifaces). Valid while
 * gen is uplink_gen; family 0: empty. */
struct fib_cache_slot {
	__u32 dst[4];
	__u32 ifindex;
	__u32 gen;
	__u8 family;
	__u8 counted;
	__u8 pad[2];
};

/* Whether packets from an interface were counted at a pod endpoint (map
 * iif_cache); valid while gen is uplink_gen; ifindex 0: empty. */
struct iif_cache_slot {
	__u32 ifindex;
	__u32 gen;
	__u32 counted;
};

/* A drop key of one CPU and its drops not yet in the table (map
 * drop_cache); delta.packets 0: empty. */
struct drop_cache_slot {
	struct drop_key key;
	struct drop_counts delta;
};

/* DNS (dns.h): the side of a transaction the local pod is on. */
enum dns_side {
	DNS_SIDE_CLIENT = 0, /* the pod asked: its query left, its answer arrived */
	DNS_SIDE_SERVER = 1, /* the pod answered (a resolver pod) */
};

#define DNS_MAX_PORTS 4
#define DNS_QMAX      256 /* bytes of a question section kept: a 255-byte name, its type and class fit but for 4 */

/* One DNS transaction at one interface (map dns_pending). Addresses as in
 * flow_key. */
struct dns_key {
	__u8 client[16];
	__u8 server[16];
	__u16 client_port; /* host order */
	__u16 server_port;
	__u16 id;      /* transaction ID */
	__u8 protocol; /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 side;     /* enum dns_side */
	__u32 ifindex; /* the pod endpoint's interface */
	__u32 _pad;
};

/* A query waiting for its response. */
struct dns_query_state {
	__u64 query_ns; /* bpf_ktime_get_ns() of its first send */
	__u16 flags;	/* the query's header flags (opcode, RD) */
	__u8 sends;	/* sends of this query (retransmissions with the same ID + 1) */
	__u8 _pad;
	__u16 qlen; /* bytes of question held (0: none could be read) */
	__u16 _pad2;
	__u8 question[DNS_QMAX]; /* the query's question section, from offset 12 */
};

/* One answered transaction, to user space (ringbuf dns_events). */
struct dns_event {
	struct dns_key key;
	__u64 query_ns;
	__u64 response_ns;
	__u16 query_flags;
	__u16 flags; /* the response's: QR, opcode, AA, TC, RD, RA, rcode */
	__u16 ancount;
	__u8 sends;
	__u8 _pad;
	__u16 qlen;
	__u16 _pad2[3];
	__u8 question[DNS_QMAX];
};

#endif /* EBPFNET_TYPES_H */
