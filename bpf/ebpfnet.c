/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Entry file: only SEC() shims; the logic lives in the feature headers.
 *
 * The algorithm:
 * - Packets (flow.h, parse.h): a TC program on each side of every selected
 *   interface (pod veths, uplinks) parses each packet and adds it to its
 *   flow, keyed by 5-tuple, interface, direction and observer, in the active
 *   one of two per-CPU flow tables, through a per-CPU slot per program that
 *   takes consecutive packets of one flow without a hash lookup. User space
 *   switches tables every interval, waits for an RCU grace period and drains
 *   the idle one. A packet that is not a flow is counted by reason.
 * - Connections (tcp.h): inet_sock_set_state and sockops keep a state per
 *   TCP socket (by cookie) from its first state change to close, when one
 *   event with tcp_sock's counters goes to the conn_events ring; resets and
 *   retransmits add to the state as they happen.
 * - Services (svc.h): the cgroup connect/sendmsg hooks record what a client
 *   dialed before any socket-level load balancer rewrote it.
 * Every TC program returns TCX_NEXT (== TC_ACT_UNSPEC for clsact): it
 * observes and never changes the verdict of other programs. */
#include "include/vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "types.h"
#include "maps.h"
#include "common.h"
#include "flow.h"
#include "svc.h"
#include "drop.h"
#include "tcp.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Keep the enums that only appear as __u8 fields in BTF, so that bpf2go
 * generates their Go constants from this single definition. */
const enum flow_direction *unused_flow_direction __attribute__((unused));
const enum flow_observer *unused_flow_observer __attribute__((unused));
const enum conn_role *unused_conn_role __attribute__((unused));
const enum conn_result *unused_conn_result __attribute__((unused));
const struct conn_event *unused_conn_event __attribute__((unused));
const struct conn_state *unused_conn_state __attribute__((unused));
const struct drop_key *unused_drop_key __attribute__((unused));
const struct drop_counts *unused_drop_counts __attribute__((unused));
const struct drop_cache_slot *unused_drop_cache_slot __attribute__((unused));
const enum drop_kind *unused_drop_kind __attribute__((unused));
const struct dns_event *unused_dns_event __attribute__((unused));
const struct dns_query_state *unused_dns_query_state __attribute__((unused));
const enum dns_side *unused_dns_side __attribute__((unused));

/* Host side of a pod's veth: ingress carries what the pod sent. */
SEC("tc")
int endpoint_ingress(struct __sk_buff *skb)
{
	handle_packet(skb, FLOW_TRANSMIT, OBSERVER_ENDPOINT);
	return TCX_NEXT;
}

/* Host side of a pod's veth: egress carries what the pod receives. */
SEC("tc")
int endpoint_egress(struct __sk_buff *skb)
{
	handle_packet(skb, FLOW_RECEIVE, OBSERVER_ENDPOINT);
	return TCX_NEXT;
}

/* Node uplink, ingress: the node receives, unless routed on to a pod. */
SEC("tc")
int uplink_ingress(struct __sk_buff *skb)
{
	if (uplink_already_counted_ingress(skb))
		count_reason(COUNTER_DEDUP_UPLINK, skb->len);
	else
		handle_packet(skb, FLOW_RECEIVE, OBSERVER_UPLINK);
	return TCX_NEXT;
}

/* Node uplink, egress: the node transmits, unless routed from a pod. */
SEC("tc")
int uplink_egress(struct __sk_buff *skb)
{
	if (uplink_already_counted_egress(skb))
		count_reason(COUNTER_DEDUP_UPLINK, skb->len);
	else
		handle_packet(skb, FLOW_TRANSMIT, OBSERVER_UPLINK);
	return TCX_NEXT;
}

/* Never attached: user space runs it (BPF_PROG_TEST_RUN) at each drain to
 * read jiffies and the coarse clock of the same tick, which converts the
 * flows' jiffies to CLOCK_MONOTONIC. jiffies is read before and after: user
 * space retries when a tick fell between the reads. */
__u64 clock_jiffies, clock_coarse_ns, clock_jiffies_after;

SEC("tc")
int clock_sample(struct __sk_buff *skb)
{
	clock_jiffies = bpf_jiffies64();
	clock_coarse_ns = bpf_ktime_get_coarse_ns();
	clock_jiffies_after = bpf_jiffies64();
	return TCX_NEXT;
}

/* Every TCP state change on the host: connection start, establishment, close. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, const struct sock *sk, int oldstate, int newstate)
{
	return handle_set_state(sk, oldstate, newstate);
}

/* A reset received by a socket. */
SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tcp_receive_reset, const struct sock *sk)
{
	return handle_receive_reset(sk);
}

/* A segment retransmitted. The event gained an error argument in 6.17 and
 * fires for failed attempts too: count only err == 0. Kernels before 6.17
 * use tcp_retransmit_skb_v1; user space attaches the one the kernel's BTF
 * matches (the other may not even verify). */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_skb, const struct sock *sk, const struct sk_buff *skb, int err)
{
	if (err)
		return 0;
	return handle_retransmit(sk);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_skb_v1, const struct sock *sk)
{
	return handle_retransmit(sk);
}

/* A reset sent by a socket, or for a segment no socket took. The event
 * gained the reason (enum sk_rst_reason) in 6.10: user space attaches the
 * variant the kernel's BTF matches. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_send_reset, const struct sock *sk, const struct sk_buff *skb, int reason)
{
	return handle_send_reset(sk, skb, reason);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_send_reset_v1, const struct sock *sk, const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, -1);
}

/* A packet the kernel dropped, with its reason (enum skb_drop_reason). The
 * event gained rx_sk in 6.11; kfree_skb_v1 is for 5.17-6.10 (reasons, no
 * rx_sk). User space attaches the one the kernel's BTF matches. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb, const struct sk_buff *skb, void *location, int reason, const struct sock *rx_sk)
{
	return handle_drop(skb, (__u32)reason, rx_sk);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb_v1, const struct sk_buff *skb, void *location, int reason)
{
	return handle_drop(skb, (__u32)reason, NULL);
}

/* The destination each TCP client dialed, before any socket-level LB. */
SEC("cgroup/connect4")
int record_connect4(struct bpf_sock_addr *ctx)
{
	return handle_connect(ctx, false);
}

SEC("cgroup/connect6")
int record_connect6(struct bpf_sock_addr *ctx)
{
	return handle_connect(ctx, true);
}

/* The destination each UDP datagram was sent to, before any socket-level
 * LB (sendto/sendmsg with an address; connected sockets through connect4/6). */
SEC("cgroup/sendmsg4")
int record_sendmsg4(struct bpf_sock_addr *ctx)
{
	return handle_udp_dialed(ctx, false);
}

SEC("cgroup/sendmsg6")
int record_sendmsg6(struct bpf_sock_addr *ctx)
{
	return handle_udp_dialed(ctx, true);
}

/* Established sockets in the cgroup2 hierarchy: live RTT and counters. */
SEC("sockops")
int tcp_sockops(struct bpf_sock_ops *skops)
{
	return handle_sockops(skops);
}
