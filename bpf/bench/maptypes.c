/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The map-type study of `make bench` (bench/maptypes_test.go), not loaded by
 * the receiver. Each program parses the packet with the receiver's own
 * parser (flow.h) into the receiver's flow key, then accounts the packet in
 * one kind of structure, so that the programs differ only by the structure:
 *
 *   parse_only       no structure: the cost of parsing (and of this harness)
 *   percpu_array     PERCPU_ARRAY slot chosen by a hash of the key, plain adds
 *   array            ARRAY slot chosen the same way, atomic adds
 *   percpu_hash      PERCPU_HASH: lookup, add in place, insert on a miss
 *                    (what the receiver does)
 *   hash             HASH shared by the CPUs: lookup, atomic adds, insert on a miss
 *   hash_update      HASH: lookup, then bpf_map_update_elem(BPF_EXIST) on
 *                    every packet (the published study's hash programs)
 *   lru_percpu_hash  LRU_PERCPU_HASH: as percpu_hash
 *   ringbuf          one 64-byte record per packet to a ring buffer
 *
 * Arrays cannot key a flow: slots are shared by whatever hashes to them, so
 * they count aggregates, not flows. They are here because the published
 * comparison has them.
 *
 * spread_flows: when non-zero, the ports of the key are offset by a
 * per-packet sequence modulo spread_flows, so that one repeated test packet
 * walks that many distinct flows (many-flow runs of BPF_PROG_TEST_RUN). */
#include "../include/vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../types.h"
#include "../maps.h"
#include "../flow.h"
#include "parse.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define STUDY_ENTRIES (1 << 20)
#define ARRAY_SLOTS   (1 << 16)

volatile __u32 spread_flows;
__u32 seq;

/* One map per structure under study, all with the receiver's value. */
#define STUDY_MAP(name, map_type, entries, key_type) \
	struct {                                     \
		__uint(type, map_type);              \
		__uint(max_entries, entries);        \
		__type(key, key_type);               \
		__type(value, struct flow_counts);   \
	} name SEC(".maps")

STUDY_MAP(study_percpu_array, BPF_MAP_TYPE_PERCPU_ARRAY, ARRAY_SLOTS, __u32);
STUDY_MAP(study_array, BPF_MAP_TYPE_ARRAY, ARRAY_SLOTS, __u32);
STUDY_MAP(study_percpu_hash, BPF_MAP_TYPE_PERCPU_HASH, STUDY_ENTRIES, struct flow_key);
STUDY_MAP(study_hash, BPF_MAP_TYPE_HASH, STUDY_ENTRIES, struct flow_key);
STUDY_MAP(study_hash_update, BPF_MAP_TYPE_HASH, STUDY_ENTRIES, struct flow_key);
STUDY_MAP(study_lru_percpu_hash, BPF_MAP_TYPE_LRU_PERCPU_HASH, STUDY_ENTRIES, struct flow_key);

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);
} study_ring SEC(".maps");

struct ring_record {
	struct flow_key key;
	__u32 len;
	__u32 tcp_flags;
	__u64 ts;
	__u64 _pad;
};

/* Parses into key; returns 0 when the packet is a flow. */
static __always_inline int study_parse(struct __sk_buff *skb, struct flow_key *key, __u32 *tcp_flags)
{
	if (bench_parse(skb, key, tcp_flags))
		return -1;
	if (spread_flows) {
		__u32 s = seq++ % spread_flows;

		key->src_port += s;
		key->dst_port += s >> 16;
	}
	return 0;
}

static __always_inline __u32 slot_of(const struct flow_key *key)
{
	const __u32 *w = (const __u32 *)key;
	__u32 h = 0;

#pragma unroll
	for (int i = 0; i < sizeof(*key) / 4; i++)
		h = (h ^ w[i]) * 0x9E3779B1;
	return (h >> 16) & (ARRAY_SLOTS - 1);
}

SEC("tc")
int parse_only(struct __sk_buff *skb)
{
	struct flow_key key = {};
	__u32 flags = 0;

	if (study_parse(skb, &key, &flags) == 0)
		count_reason(COUNTER_NON_IP, slot_of(&key)); /* keeps the key live */
	return TCX_NEXT;
}

/* The array slot of the packet's flow (NULL: not a flow). */
static __always_inline struct flow_counts *array_slot(struct __sk_buff *skb, void *map, __u32 *flags)
{
	struct flow_key key = {};
	__u32 slot;

	if (study_parse(skb, &key, flags))
		return NULL;
	slot = slot_of(&key);
	return bpf_map_lookup_elem(map, &slot);
}

SEC("tc")
int percpu_array(struct __sk_buff *skb)
{
	__u32 flags = 0;
	struct flow_counts *st = array_slot(skb, &study_percpu_array, &flags);

	if (st)
		add_to_flow(st, skb->len, flags, bpf_jiffies64());
	return TCX_NEXT;
}

SEC("tc")
int array(struct __sk_buff *skb)
{
	__u32 flags = 0;
	struct flow_counts *st = array_slot(skb, &study_array, &flags);

	if (st)
		add_shared(st, skb->len, 1, flags, bpf_jiffies64()); /* flow.h: the receiver's */
	return TCX_NEXT;
}

/* The receiver's per-packet path (account_in) on a per-CPU map. */
#define PERCPU_PROGRAM(name, map)                                \
	SEC("tc")                                                \
	int name(struct __sk_buff *skb)                          \
	{                                                        \
		struct flow_key key = {};                        \
		__u32 flags = 0;                                 \
		if (study_parse(skb, &key, &flags) == 0)         \
			account_in(&map, &key, skb->len, flags); \
		return TCX_NEXT;                                 \
	}

PERCPU_PROGRAM(percpu_hash, study_percpu_hash)
PERCPU_PROGRAM(lru_percpu_hash, study_lru_percpu_hash)

SEC("tc")
int hash(struct __sk_buff *skb)
{
	struct flow_key key = {};
	struct flow_counts *st;
	__u32 flags = 0;
	__u32 now;

	if (study_parse(skb, &key, &flags))
		return TCX_NEXT;
	now = bpf_jiffies64();
	st = bpf_map_lookup_elem(&study_hash, &key);
	if (st) {
		add_shared(st, skb->len, 1, flags, now);
		return TCX_NEXT;
	}
	struct flow_counts init = {
		.bytes = skb->len,
		.packets = 1,
		.first_seen = now,
		.last_seen = now,
		.tcp_flags = flags,
	};
	if (bpf_map_update_elem(&study_hash, &key, &init, BPF_NOEXIST))
		count_reason(COUNTER_MAP_FULL, skb->len);
	return TCX_NEXT;
}

SEC("tc")
int hash_update(struct __sk_buff *skb)
{
	struct flow_key key = {};
	struct flow_counts *st, v = {};
	__u32 flags = 0;
	__u32 now;

	if (study_parse(skb, &key, &flags))
		return TCX_NEXT;
	now = bpf_jiffies64();
	st = bpf_map_lookup_elem(&study_hash_update, &key);
	if (st) {
		v = *st;
		v.bytes += skb->len;
		v.packets++;
		v.last_seen = now;
		v.tcp_flags |= flags;
		bpf_map_update_elem(&study_hash_update, &key, &v, BPF_EXIST);
		return TCX_NEXT;
	}
	v.bytes = skb->len;
	v.packets = 1;
	v.first_seen = v.last_seen = now;
	v.tcp_flags = flags;
	if (bpf_map_update_elem(&study_hash_update, &key, &v, BPF_NOEXIST))
		count_reason(COUNTER_MAP_FULL, skb->len);
	return TCX_NEXT;
}

SEC("tc")
int ringbuf(struct __sk_buff *skb)
{
	struct flow_key key = {};
	struct ring_record *r;
	__u32 flags = 0;

	if (study_parse(skb, &key, &flags))
		return TCX_NEXT;
	r = bpf_ringbuf_reserve(&study_ring, sizeof(*r), 0);
	if (!r) {
		count_reason(COUNTER_CONN_EVENTS_FULL, skb->len);
		return TCX_NEXT;
	}
	r->key = key;
	r->len = skb->len;
	r->tcp_flags = flags;
	r->ts = bpf_jiffies64();
	bpf_ringbuf_submit(r, 0);
	return TCX_NEXT;
}

/* The traffic generator of the veth runs: run with BPF_PROG_TEST_RUN in
 * live-frames mode in the sending namespace, it gives every frame of the
 * test packet (Ethernet/IPv4/UDP, 20-byte IP header) the next of gen_flows
 * (source port, destination port) pairs and redirects it out of gen_ifindex,
 * as xdp-trafficgen does. */
volatile __u32 gen_ifindex;
volatile __u32 gen_flows = 1;
__u32 gen_seq;

SEC("xdp")
int generate(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct udphdr *uh = data + sizeof(struct ethhdr) + sizeof(struct iphdr);

	if ((void *)(uh + 1) > end)
		return XDP_ABORTED;
	__u32 s = gen_seq++ % gen_flows;

	uh->source = bpf_htons(1024 + s % 50000);
	uh->dest = bpf_htons(9 + s / 50000);
	return bpf_redirect(gen_ifindex, 0);
}
