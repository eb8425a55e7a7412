/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* In-kernel flow aggregation for the TC (tcx or clsact) programs: every
 * packet ends in exactly one place, a flow (through this CPU's slot of its
 * program, or the flow table's hash), or one of the `counters` with
 * the reason it is not in a flow; and the uplink de-duplication, which skips
 * packets a pod endpoint already counted. */
#ifndef EBPFNET_FLOW_H
#define EBPFNET_FLOW_H

#include "common.h"
#include "parse.h"
#include "svc.h"
#include "dns.h"

/* Adds packets (bytes, the OR of their TCP flags, the times of the first and
 * the last) to st, a slot's counts: this CPU's own memory, plain adds. */
static __always_inline void add_counts(struct flow_counts *st, __u64 bytes, __u64 packets, __u32 tcp_flags, __u32 first,
				       __u32 last)
{
	if (!st->packets)
		st->first_seen = first;
	st->bytes += bytes;
	st->packets += packets;
	st->last_seen = last;
	st->tcp_flags |= tcp_flags;
}

/* Adds one packet seen at now to st, a slot's counts. */
static __always_inline void add_to_flow(struct flow_counts *st, __u32 len, __u32 tcp_flags, __u32 now)
{
	add_counts(st, len, 1, tcp_flags, now, now);
}

/* Adds packets to st, a flow table entry, which every CPU may update at
 * once: atomic adds (one entry for all CPUs: the tables' kernel memory does
 * not grow with the CPU count, README "Sizing"). Its
 * first_seen is the inserting packet's; a later time only moves last_seen
 * forward (a lost race moves it less, by at most a tick); flags are ORed
 * only when new ones come, so that most packets pay two atomic adds. */
static __always_inline void add_shared(struct flow_counts *st, __u64 bytes, __u64 packets, __u32 tcp_flags, __u32 last)
{
	__sync_fetch_and_add(&st->bytes, bytes);
	__sync_fetch_and_add(&st->packets, packets);
	if ((__s32)(last - st->last_seen) > 0)
		st->last_seen = last;
	if ((st->tcp_flags & tcp_flags) != tcp_flags)
		__sync_fetch_and_or(&st->tcp_flags, tcp_flags);
}

/* Adds the packet to its flow in table (flows_a or flows_b). Returns 1 when
 * the packet started the flow in this table (its first in the interval), 0
 * when the flow was there, -1 when the table had no room (counted). */
static __always_inline int account_in(void *table, struct flow_key *key, __u32 len, __u32 tcp_flags)
{
	struct flow_counts *st;
	__u32 now;
	long err;

	/* The tick is all a flow record needs. jiffies is one inlined load;
	 * bpf_ktime_get_coarse_ns() is a helper call and the precise clock
	 * costs more still (docs/BENCHMARKS.md, "Design measurements"). */
	now = bpf_jiffies64();
	st = bpf_map_lookup_elem(table, key);
	if (st) {
		add_shared(st, len, 1, tcp_flags, now);
		return 0;
	}

	struct flow_counts init = {
		.bytes = len,
		.packets = 1,
		.first_seen = now,
		.last_seen = now,
		.tcp_flags = tcp_flags,
	};
	err = bpf_map_update_elem(table, key, &init, BPF_NOEXIST);
	if (!err)
		return 1;
	if (err == -EEXIST) {
		/* Another CPU inserted the same flow between our lookup and update. */
		st = bpf_map_lookup_elem(table, key);
		if (st) {
			add_shared(st, len, 1, tcp_flags, now);
			return 0;
		}
	}
	count_reason(COUNTER_MAP_FULL, len);
	return -1;
}

/* Whether a and b are the same flow. Both 8-byte aligned (a map value, a
 * stack key declared aligned): five 64-bit words and one 32-bit word. */
static __always_inline int same_flow(const struct flow_key *a, const struct flow_key *b)
{
	const __u64 *x = (const void *)a, *y = (const void *)b;
	const __u32 *x4 = (const void *)a, *y4 = (const void *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4]) |
		(__u64)(x4[10] ^ y4[10])) == 0;
}

/* Adds what a slot holds for its flow to the flow in table. */
static __always_inline void flush_slot(void *table, struct flow_cache_slot *s)
{
	struct flow_counts *st = bpf_map_lookup_elem(table, &s->key);

	if (st) {
		add_shared(st, s->delta.bytes, s->delta.packets, s->delta.tcp_flags, s->delta.last_seen);
	} else {
		/* Not reached: the slot's flow was inserted in this table
		 * and only a drain of the idle table deletes. */
		count_reasons(COUNTER_MAP_FULL, s->delta.packets, s->delta.bytes);
	}
	__builtin_memset(&s->delta, 0, sizeof(s->delta));
}

/* A packet of a flow other than slot s's: added to table, and its flow
 * takes the slot (the previous flow's packets in the slot go to the table
 * first). Returns as account_in. */
static __always_inline int account_miss(void *table, struct flow_cache_slot *s, struct flow_key *key, __u32 len,
					__u32 tcp_flags)
{
	int ret;

	ret = account_in(table, key, len, tcp_flags);
	if (s->delta.packets)
		flush_slot(table, s);
	if (ret < 0)
		s->key.family = 0; /* not in the table: no packet may wait for it here */
	else
		__builtin_memcpy(&s->key, key, sizeof(*key));
	return ret;
}

/* account_in behind this CPU's slot s of table: a packet of the slot's flow
 * is added to the slot, any other as account_miss. Returns as account_in. */
static __always_inline int account_cached(void *table, struct flow_cache_slot *s, struct flow_key *key, __u32 len,
					  __u32 tcp_flags)
{
	if (likely(same_flow(&s->key, key))) {
		add_to_flow(&s->delta, len, tcp_flags, bpf_jiffies64());
		return 0;
	}
	return account_miss(table, s, key, len, tcp_flags);
}

/* Which of a program's FLOW_CACHE_WAYS slots a flow uses: a multiplicative
 * (Fibonacci) hash of the fold of the ports, the last 32 bits of each
 * address and the interface; its top bits spread consecutive source ports
 * and tell the two directions of a connection apart. */
static __always_inline __u32 way_of(__u32 addr_lo_src, __u32 addr_lo_dst, __u32 ports, __u32 ifindex)
{
	return ((addr_lo_src ^ addr_lo_dst ^ ports ^ ifindex) * 0x9E3779B1u) >> (32 - FLOW_CACHE_WAY_BITS);
}

/* way_of a key: its words 3 and 7 (the last 32 bits of the addresses) and 8
 * (the ports). */
static __always_inline __u32 flow_way(const struct flow_key *key)
{
	const __u32 *w = (const void *)key;

	return way_of(w[3], w[7], w[8], key->ifindex);
}

/* This CPU's slot for a flow (its way) in the program (observer, direction)
 * and table. */
static __always_inline struct flow_cache_slot *cache_slot(__u32 table, __u8 direction, __u8 observer, __u32 way)
{
	__u32 slot = ((table * 2 + observer) * 2 + direction) * FLOW_CACHE_WAYS + way;

	return bpf_map_lookup_elem(&flow_cache, &slot);
}

/* Whether slot s holds the flow of common packet p seen on ifindex by the
 * program (observer, direction). Compares the words in which two IPv4 keys
 * can differ (the first 12 bytes of each address are ::ffff: in all of
 * them) with p's registers; only the slot is read from memory. */
static __always_inline int slot_holds(const struct flow_cache_slot *s, const struct common_pkt *p, __u32 ifindex,
				      __u8 direction, __u8 observer)
{
	const __u32 *w = (const void *)&s->key;
	/* protocol, family, direction, observer: word 10 (bpfel) */
	__u32 tail = p->protocol | 4 << 8 | (__u32)direction << 16 | (__u32)observer << 24;

	return ((w[3] ^ p->saddr) | (w[7] ^ p->daddr) | (w[8] ^ p->ports) | (w[9] ^ ifindex) | (w[10] ^ tail)) == 0;
}

/* The flow key of common packet p, as parse_packet and handle_packet make
 * it. */
static __always_inline void common_key(struct flow_key *key, const struct common_pkt *p, __u32 ifindex, __u8 direction,
				       __u8 observer)
{
	map_ipv4(key->src_addr, p->saddr);
	map_ipv4(key->dst_addr, p->daddr);
	key->src_port = p->ports;
	key->dst_port = p->ports >> 16;
	key->ifindex = ifindex;
	key->protocol = p->protocol;
	key->family = 4;
	key->direction = direction;
	key->observer = observer;
}

/* Adds the packet to its flow in the active table, through this CPU's slot
 * for the flow in this program (observer, direction); 1 when it started the
 * flow. Two call sites, each with its map known to the verifier, so that it
 * inlines the hash lookups. direction and observer are also in key: passed
 * as each program's constants, they fold into the slot index at compile
 * time instead of being loaded from the key. */
static __always_inline int account(struct flow_key *key, __u32 len, __u32 tcp_flags, __u8 direction, __u8 observer)
{
	__u32 table = active_table;
	struct flow_cache_slot *s = cache_slot(table, direction, observer, flow_way(key));

	if (unlikely(!s)) /* not reached: slot < FLOW_CACHE_ENTRIES */
		return 0;
	if (table)
		return account_cached(&flows_b, s, key, len, tcp_flags) == 1;
	return account_cached(&flows_a, s, key, len, tcp_flags) == 1;
}

/* Counts one packet as seen by `observer` in `direction`. A common packet
 * (parse_common) of the flow in its slot is added to the slot without
 * building the flow key; any other packet is parsed into its key and
 * accounted as such. */
static __always_inline void handle_packet(struct __sk_buff *skb, __u8 direction, __u8 observer)
{
	struct flow_key key __attribute__((aligned(8))); /* same_flow */
	struct common_pkt p;
	__u32 tcp_flags = 0, len = skb->len;
	int ret, started;

	if (likely(parse_common(skb, &p))) {
		__u32 ifindex = skb->ifindex, table = active_table;
		struct flow_cache_slot *s =
			cache_slot(table, direction, observer, way_of(p.saddr, p.daddr, p.ports, ifindex));

		if (unlikely(observer == OBSERVER_ENDPOINT && dns_port(p.ports, p.ports >> 16)))
			dns_observe(skb, direction);

		if (unlikely(!s)) /* not reached: the index is < FLOW_CACHE_ENTRIES */
			return;
		if (likely(slot_holds(s, &p, ifindex, direction, observer))) {
			add_to_flow(&s->delta, len, p.tcp_flags, bpf_jiffies64());
			return;
		}
		common_key(&key, &p, ifindex, direction, observer);
		if (table)
			started = account_miss(&flows_b, s, &key, len, p.tcp_flags) == 1;
		else
			started = account_miss(&flows_a, s, &key, len, p.tcp_flags) == 1;
	} else {
		__builtin_memset(&key, 0, sizeof(key));
		ret = parse_skb(skb, &key, &tcp_flags);
		if (unlikely(ret != PARSE_OK)) {
			count_reason(ret, len);
			return;
		}
		key.ifindex = skb->ifindex;
		key.direction = direction;
		key.observer = observer;
		if (unlikely(observer == OBSERVER_ENDPOINT &&
			     (key.protocol == IPPROTO_UDP || key.protocol == IPPROTO_TCP) &&
			     dns_port(key.src_port, key.dst_port)))
			dns_observe(skb, direction);
		started = account(&key, len, tcp_flags, direction, observer);
	}
	if (started && key.protocol == IPPROTO_UDP && direction == FLOW_TRANSMIT)
		note_udp_sender(skb, key.src_port);
}

/* Uplink egress: a packet routed from a pod endpoint (or the bridge of pod
 * endpoints) was already counted there as the pod's transmit. Asks
 * counted_ifaces through this CPU's iif_cache slot of the interface. */
static __always_inline int uplink_already_counted_egress(struct __sk_buff *skb)
{
	__u32 iif = skb->ingress_ifindex, gen = uplink_gen, slot;
	struct iif_cache_slot *s;

	if (!iif)
		return 0; /* the node's own */
	slot = iif % IIF_CACHE_SLOTS;
	s = bpf_map_lookup_elem(&iif_cache, &slot);
	if (unlikely(!s))
		return bpf_map_lookup_elem(&counted_ifaces, &iif) != 0;
	if (likely(s->ifindex == iif && s->gen == gen))
		return s->counted;
	s->counted = bpf_map_lookup_elem(&counted_ifaces, &iif) != 0;
	s->ifindex = iif;
	s->gen = gen;
	return s->counted;
}

/* The FIB's answer for dst arriving on ifindex: whether the node routes it
 * out of an interface that counts it (counted_ifaces). Packets the FIB
 * cannot place (local, unroutable, forwarding off) are the node's. */
static __noinline int fib_counts(struct __sk_buff *skb, __u8 family, const __u32 *src, const __u32 *dst)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	fib.family = family;
	fib.ifindex = skb->ifindex;
	if (family == AF_INET) {
		fib.ipv4_src = src[0];
		fib.ipv4_dst = dst[0];
	} else {
		__builtin_memcpy(fib.ipv6_src, src, 16);
		__builtin_memcpy(fib.ipv6_dst, dst, 16);
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	return bpf_map_lookup_elem(&counted_ifaces, &fib.ifindex) != 0;
}

/* Uplink ingress: a packet the node will forward to a pod endpoint is counted
 * there as the pod's receive. Asks the kernel FIB where it goes, through this
 * CPU's fib_cache slot of the destination (valid for the current uplink_gen). A
 * function of its own: inlined, clang shares the offsets of skb->data and
 * data_end with the parser's loads as registers, which the verifier rejects
 * (a ctx pointer plus a register). */
static __noinline int uplink_already_counted_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 src[4] = {}, dst[4] = {};
	struct fib_cache_slot *s;
	__u32 gen = uplink_gen, slot;
	__u8 family;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end)
			return 0;
		family = AF_INET;
		src[0] = ip->saddr;
		dst[0] = ip->daddr;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return 0;
		family = AF_INET6;
		__builtin_memcpy(src, &ip6->saddr, 16);
		__builtin_memcpy(dst, &ip6->daddr, 16);
	} else {
		return 0;
	}
	slot = ((dst[0] ^ dst[3] ^ skb->ifindex) * 0x9E3779B1u) >> (32 - FIB_CACHE_BITS);
	s = bpf_map_lookup_elem(&fib_cache, &slot);
	if (unlikely(!s))
		return fib_counts(skb, family, src, dst);
	if (likely(s->gen == gen && s->family == family && s->ifindex == skb->ifindex && s->dst[0] == dst[0] &&
		   s->dst[1] == dst[1] && s->dst[2] == dst[2] && s->dst[3] == dst[3]))
		return s->counted;
	s->counted = fib_counts(skb, family, src, dst);
	s->gen = gen;
	s->family = family;
	s->ifindex = skb->ifindex;
	__builtin_memcpy(s->dst, dst, 16);
	return s->counted;
}

#endif /* EBPFNET_FLOW_H */
