/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Where the per-packet cost of the receiver's tc program goes, for `make
 * bench` (bench/breakdown_test.go); not loaded by the receiver. Each program
 * adds one step to the one before, all with the receiver's own parser:
 *
 *   parse            parse into the flow key, nothing stored
 *   account_jiffies  parse, then the receiver's account_in on one per-CPU
 *                    hash (lookup, add in place, insert on a miss; jiffies
 *                    timestamps): the receiver's program without the choice
 *                    of the active table
 *   account_coarse   the same with the previous design's value: 40 bytes
 *                    with 64-bit bpf_ktime_get_coarse_ns() timestamps
 *   account_slot     account_jiffies behind the receiver's per-CPU slots
 *                    (account_cached)
 *   account_common   account_slot with the receiver's short way in front:
 *                    a common packet (untagged IPv4 without options, TCP
 *                    or UDP) of the flow in its slot is added to it without
 *                    building the key. The receiver's program without the
 *                    choice of the active table
 *
 * The receiver's own endpoint programs are measured next to them. */
#include "../include/vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../types.h"
#include "../maps.h"
#include "../flow.h"
#include "parse.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define BREAKDOWN_ENTRIES 131072

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, BREAKDOWN_ENTRIES);
	__type(key, struct flow_key);
	__type(value, struct flow_counts);
} breakdown_flows SEC(".maps");

/* The previous value layout. */
struct coarse_counts {
	__u64 bytes;
	__u64 packets;
	__u64 first_seen_ns;
	__u64 last_seen_ns;
	__u32 tcp_flags;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, BREAKDOWN_ENTRIES);
	__type(key, struct flow_key);
	__type(value, struct coarse_counts);
} breakdown_coarse SEC(".maps");

SEC("tc")
int parse(struct __sk_buff *skb)
{
	struct flow_key key = {};
	__u32 flags = 0;

	/* The verdict depends on the key, so that the parse is not optimized out;
	 * both values are TCX_NEXT. */
	if (bench_parse(skb, &key, &flags) == 0 && (key.src_port ^ key.dst_port ^ key.src_addr[15]))
		return TCX_NEXT;
	return TCX_NEXT;
}

SEC("tc")
int account_jiffies(struct __sk_buff *skb)
{
	struct flow_key key = {};
	__u32 flags = 0;

	if (bench_parse(skb, &key, &flags) == 0)
		account_in(&breakdown_flows, &key, skb->len, flags);
	return TCX_NEXT;
}

SEC("tc")
int account_coarse(struct __sk_buff *skb)
{
	struct flow_key key = {};
	struct coarse_counts *st;
	__u32 flags = 0, len = skb->len;
	__u64 now;

	if (bench_parse(skb, &key, &flags))
		return TCX_NEXT;
	now = bpf_ktime_get_coarse_ns();
	st = bpf_map_lookup_elem(&breakdown_coarse, &key);
	if (st) {
		st->bytes += len;
		st->packets++;
		if (!st->first_seen_ns)
			st->first_seen_ns = now;
		st->last_seen_ns = now;
		st->tcp_flags |= flags;
		return TCX_NEXT;
	}
	struct coarse_counts init = {
		.bytes = len,
		.packets = 1,
		.first_seen_ns = now,
		.last_seen_ns = now,
		.tcp_flags = flags,
	};
	if (bpf_map_update_elem(&breakdown_coarse, &key, &init, BPF_NOEXIST))
		count_reason(COUNTER_MAP_FULL, len);
	return TCX_NEXT;
}

/* The slots of account_slot. Not shared between the ingress and egress
 * instances (the test loads each with its own), as the receiver's ingress
 * and egress programs have a slot each. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOW_CACHE_WAYS);
	__type(key, __u32);
	__type(value, struct flow_cache_slot);
} breakdown_slot SEC(".maps");

/* account_slot's work, key zeroed, for account_common's other packets too. */
static __always_inline int slot_step(struct __sk_buff *skb, struct flow_key *key)
{
	struct flow_cache_slot *s;
	__u32 flags = 0, way;

	if (bench_parse(skb, key, &flags))
		return TCX_NEXT;
	way = flow_way(key);
	s = bpf_map_lookup_elem(&breakdown_slot, &way);
	if (s)
		account_cached(&breakdown_flows, s, key, skb->len, flags);
	return TCX_NEXT;
}

SEC("tc")
int account_slot(struct __sk_buff *skb)
{
	struct flow_key key __attribute__((aligned(8))) = {};

	return slot_step(skb, &key);
}

/* account_slot with the receiver's short way for common packets in front
 * (parse_common, slot_holds): the receiver's handle_packet without the
 * choice of the active table. */
SEC("tc")
int account_common(struct __sk_buff *skb)
{
	struct flow_key key __attribute__((aligned(8)));
	struct flow_cache_slot *s;
	struct common_pkt p;
	__u32 way, ifindex, len = skb->len;

	if (parse_common(skb, &p)) {
		ifindex = skb->ifindex;
		way = way_of(p.saddr, p.daddr, p.ports, ifindex);
		s = bpf_map_lookup_elem(&breakdown_slot, &way);
		if (!s)
			return TCX_NEXT;
		if (slot_holds(s, &p, ifindex, FLOW_RECEIVE, OBSERVER_ENDPOINT)) {
			add_to_flow(&s->delta, len, p.tcp_flags, bpf_jiffies64());
			return TCX_NEXT;
		}
		common_key(&key, &p, ifindex, FLOW_RECEIVE, OBSERVER_ENDPOINT);
		account_miss(&breakdown_flows, s, &key, len, p.tcp_flags);
		return TCX_NEXT;
	}
	__builtin_memset(&key, 0, sizeof(key));
	return slot_step(skb, &key);
}
