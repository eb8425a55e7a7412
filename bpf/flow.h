/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet parsing and in-kernel flow aggregation for the TC (tcx or clsact)
 * programs. Every packet ends in exactly one place: a flow, or one of the
 * `counters` with the reason it is not in a flow. */
#ifndef EBPFNET_FLOW_H
#define EBPFNET_FLOW_H

#include "maps.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

#define AF_INET 2
#define AF_INET6 10
#define EEXIST 17

#define IPPROTO_HOPOPTS 0
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_AH 51
#define IPPROTO_ICMPV6 58
#define IPPROTO_DSTOPTS 60

#define MAX_VLAN_DEPTH 2 /* 802.1ad outer + 802.1Q inner */
#define MAX_IPV6_EXT 6	 /* extension headers walked before giving up */
#define PULL_LEN 256	 /* bytes made linear when headers are not */

/* Returned by parse_packet when the packet is a flow; any other value is the
 * enum counter_reason that explains why it is not. */
#define PARSE_OK COUNTER_MAX

/* Branch hints for the per-packet path: clang lays out the expected way
 * (a well-formed IPv4 or IPv6 packet, IPv4 first, of the flow in its slot)
 * as the straight line and moves the rest (bad packets, pulls, misses) out
 * of it. Measured side by side with the build without them (make bench,
 * "Build variants", each repetition in both orders), the difference is a
 * few ns/run either way: with the short way for common packets, one run had
 * them 3-4 ns slower under UDP 64 B and 9 ns faster on TCP 1 stream's
 * ingress, another 1-2 ns faster under UDP. Within the host's noise; kept. */
#ifndef EBPFNET_NO_BRANCH_HINTS
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#else
#define likely(x) (x)
#define unlikely(x) (x)
#endif

struct vlan_tag {
	__be16 tci;
	__be16 encapsulated_proto;
};

struct ipv6_ext {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

static __always_inline void count_reasons(__u32 reason, __u64 packets, __u64 bytes)
{
	struct counter_value *c = bpf_map_lookup_elem(&counters, &reason);

	/* Per-CPU slot: no other CPU writes it, so no atomics are needed. */
	if (c) {
		c->packets += packets;
		c->bytes += bytes;
	}
}

static __always_inline void count_reason(__u32 reason, __u32 len)
{
	count_reasons(reason, 1, len);
}

/* A header does not fit in the linear data: either the packet really is
 * shorter (truncated), or the rest lives in paged fragments. */
static __always_inline int short_reason(struct __sk_buff *skb, void *data, void *data_end)
{
	return (__u64)(data_end - data) < skb->len ? COUNTER_NONLINEAR : COUNTER_TRUNCATED;
}

static __always_inline void map_ipv4(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

/* Parses L4 ports (or ICMP type/code) and TCP flags at pos. */
static __always_inline int parse_l4(struct __sk_buff *skb, void *data, void *pos, void *end,
				    struct flow_key *key, __u32 *tcp_flags)
{
	if (key->protocol == IPPROTO_TCP) {
		struct tcphdr *th = pos;

		if (unlikely((void *)(th + 1) > end))
			return short_reason(skb, data, end);
		if (unlikely(th->doff < 5))
			return COUNTER_MALFORMED;
		key->src_port = bpf_ntohs(th->source);
		key->dst_port = bpf_ntohs(th->dest);
		*tcp_flags = ((__u8 *)th)[13];
	} else if (key->protocol == IPPROTO_UDP) {
		struct udphdr *uh = pos;

		if (unlikely((void *)(uh + 1) > end))
			return short_reason(skb, data, end);
		key->src_port = bpf_ntohs(uh->source);
		key->dst_port = bpf_ntohs(uh->dest);
	} else if (key->protocol == IPPROTO_ICMP || key->protocol == IPPROTO_ICMPV6) {
		__u8 *icmp = pos;

		/* type, code, checksum */
		if ((void *)(icmp + 4) > end)
			return short_reason(skb, data, end);
		key->src_port = icmp[0];
		key->dst_port = icmp[1];
	}
	return PARSE_OK;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, void *data, void *pos, void *end,
				      struct flow_key *key, __u32 *tcp_flags)
{
	struct iphdr *ip = pos;
	__u32 hdr_len, tot_len;

	if (unlikely((void *)(ip + 1) > end))
		return short_reason(skb, data, end);
	if (unlikely(ip->version != 4 || ip->ihl < 5))
		return COUNTER_MALFORMED;
	hdr_len = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	if (unlikely(tot_len < hdr_len))
		return COUNTER_MALFORMED;
	/* The datagram must fit in what the skb holds after the L2 header.
	 * (GSO super-packets carry their full length in tot_len too.) */
	if (unlikely(tot_len > skb->len - (pos - data)))
		return COUNTER_TRUNCATED;
	if (unlikely(pos + hdr_len > end))
		return short_reason(skb, data, end);

	key->family = 4;
	key->protocol = ip->protocol;
	map_ipv4(key->src_addr, ip->saddr);
	map_ipv4(key->dst_addr, ip->daddr);
	/* A non-first fragment has no L4 header: keying it on ports read from
	 * its payload would put it in a wrong flow. */
	if (unlikely(bpf_ntohs(ip->frag_off) & 0x1fff))
		return COUNTER_FRAGMENT;
	return parse_l4(skb, data, pos + hdr_len, end, key, tcp_flags);
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, void *data, void *pos, void *end,
				      struct flow_key *key, __u32 *tcp_flags)
{
	struct ipv6hdr *ip6 = pos;
	__u32 payload_len;
	__u8 nexthdr;

	if ((void *)(ip6 + 1) > end)
		return short_reason(skb, data, end);
	if (ip6->version != 6)
		return COUNTER_MALFORMED;
	payload_len = bpf_ntohs(ip6->payload_len);
	/* payload_len 0 is a jumbogram / BIG TCP packet: length unknown here. */
	if (payload_len && payload_len + sizeof(*ip6) > skb->len - (pos - data))
		return COUNTER_TRUNCATED;

	key->family = 6;
	__builtin_memcpy(key->src_addr, &ip6->saddr, 16);
	__builtin_memcpy(key->dst_addr, &ip6->daddr, 16);
	nexthdr = ip6->nexthdr;
	pos = ip6 + 1;

#pragma unroll
	for (int i = 0; i < MAX_IPV6_EXT; i++) {
		if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
		    nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_AH) {
			struct ipv6_ext *ext = pos;
			__u32 len;

			if ((void *)(ext + 1) > end)
				return short_reason(skb, data, end);
			/* RFC 8200: length in 8-octet units, not counting the
			 * first 8; AH (RFC 4302) counts 4-octet units minus 2. */
			if (nexthdr == IPPROTO_AH)
				len = ((__u32)ext->hdrlen + 2) * 4;
			else
				len = ((__u32)ext->hdrlen + 1) * 8;
			nexthdr = ext->nexthdr;
			if (pos + len > end)
				return short_reason(skb, data, end);
			pos += len;
		} else if (nexthdr == IPPROTO_FRAGMENT) {
			struct ipv6_frag *frag = pos;

			if ((void *)(frag + 1) > end)
				return short_reason(skb, data, end);
			if (bpf_ntohs(frag->frag_off) & 0xfff8) {
				key->protocol = frag->nexthdr;
				return COUNTER_FRAGMENT;
			}
			nexthdr = frag->nexthdr;
			pos = frag + 1;
		} else {
			break;
		}
	}
	if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING || nexthdr == IPPROTO_DSTOPTS ||
	    nexthdr == IPPROTO_AH || nexthdr == IPPROTO_FRAGMENT)
		return COUNTER_EXT_HDR_LIMIT;
	key->protocol = nexthdr;
	return parse_l4(skb, data, pos, end, key, tcp_flags);
}

/* Parses Ethernet, up to two VLAN tags, IPv4/IPv6 and the L4 header into key
 * and tcp_flags. Returns PARSE_OK or the counter_reason of the packet. */
static __always_inline int parse_packet(struct __sk_buff *skb, struct flow_key *key, __u32 *tcp_flags)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	void *pos;
	__be16 proto;

	if (unlikely((void *)(eth + 1) > end))
		return short_reason(skb, data, end);
	proto = eth->h_proto;
	pos = eth + 1;

#pragma unroll
	for (int i = 0; i < MAX_VLAN_DEPTH; i++) {
		struct vlan_tag *tag = pos;

		if (likely(proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD)))
			break;
		if ((void *)(tag + 1) > end)
			return short_reason(skb, data, end);
		proto = tag->encapsulated_proto;
		pos = tag + 1;
	}
	if (likely(proto == bpf_htons(ETH_P_IP)))
		return parse_ipv4(skb, data, pos, end, key, tcp_flags);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(skb, data, pos, end, key, tcp_flags);
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return COUNTER_MALFORMED; /* more tags than any real network stacks */
	return COUNTER_NON_IP;
}

/* Parses, and makes the headers linear once if they were not. */
static __always_inline int parse_skb(struct __sk_buff *skb, struct flow_key *key, __u32 *tcp_flags)
{
	int ret = parse_packet(skb, key, tcp_flags);

	if (likely(ret != COUNTER_NONLINEAR))
		return ret;
	/* Pulling copies at most PULL_LEN bytes into the linear area; it does
	 * not change the packet. Only done when the headers need it. */
	if (bpf_skb_pull_data(skb, skb->len < PULL_LEN ? skb->len : PULL_LEN))
		return COUNTER_NONLINEAR;
	__builtin_memset(key, 0, sizeof(*key));
	*tcp_flags = 0;
	return parse_packet(skb, key, tcp_flags);
}

/* The packet most flows are made of: untagged Ethernet, IPv4 without
 * options, not a non-first fragment, TCP or UDP with its header in the
 * linear data. Read by parse_common straight into registers, it skips the
 * flow key on a packet of the flow in its slot (slot_holds). */
struct common_pkt {
	__u32 saddr;	 /* network order: word 3 of an IPv4 key */
	__u32 daddr;	 /* word 7 */
	__u32 ports;	 /* src_port | dst_port << 16, host order: word 8 (bpfel) */
	__u32 tcp_flags; /* as parse_l4 */
	__u8 protocol;
};

/* Reads a common packet into p: 1 when the packet is one, with what
 * parse_packet would put in the key; 0 for any other packet, including
 * those parse_packet counts as malformed or truncated, which take the full
 * parser. */
static __always_inline int parse_common(struct __sk_buff *skb, struct common_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *uh = (void *)(ip + 1);
	__u32 tot_len;

	if (unlikely((void *)(uh + 1) > end))
		return 0;
	/* Version 4 with a 20-byte header. */
	if (unlikely(eth->h_proto != bpf_htons(ETH_P_IP) || *(__u8 *)ip != 0x45))
		return 0;
	tot_len = bpf_ntohs(ip->tot_len);
	if (unlikely(tot_len < sizeof(*ip) || tot_len > skb->len - sizeof(*eth)))
		return 0;
	if (unlikely(ip->frag_off & bpf_htons(0x1fff)))
		return 0;
	p->protocol = ip->protocol;
	if (p->protocol == IPPROTO_TCP) {
		struct tcphdr *th = (void *)uh;

		if (unlikely((void *)(th + 1) > end || th->doff < 5))
			return 0;
		p->tcp_flags = ((__u8 *)th)[13];
	} else if (likely(p->protocol == IPPROTO_UDP)) {
		p->tcp_flags = 0;
	} else {
		return 0;
	}
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	/* The TCP and UDP ports are at the same offsets. */
	p->ports = (__u32)bpf_ntohs(uh->source) | (__u32)bpf_ntohs(uh->dest) << 16;
	return 1;
}

/* Adds packets (bytes, the OR of their TCP flags, the times of the first and
 * the last) to st, this CPU's copy of a flow's counters: no other CPU writes
 * it. */
static __always_inline void add_counts(struct flow_counts *st, __u64 bytes, __u64 packets, __u32 tcp_flags,
				       __u32 first, __u32 last)
{
	/* No packets yet when another CPU created the flow: this copy starts now. */
	if (!st->packets)
		st->first_seen = first;
	st->bytes += bytes;
	st->packets += packets;
	st->last_seen = last;
	st->tcp_flags |= tcp_flags;
}

/* Adds one packet seen at now to st. */
static __always_inline void add_to_flow(struct flow_counts *st, __u32 len, __u32 tcp_flags, __u32 now)
{
	add_counts(st, len, 1, tcp_flags, now, now);
}

/* Adds the packet to its flow in table (flows_a or flows_b). Returns 1 when
 * the packet started the flow in this table (its first in the interval), 0
 * when the flow was there, -1 when the table had no room (counted). */
static __always_inline int account_in(void *table, struct flow_key *key, __u32 len, __u32 tcp_flags)
{
	struct flow_counts *st;
	__u32 now;
	long err;

	/* The tick (4 ms at HZ=250) is all a flow record needs. jiffies is one
	 * inlined load; bpf_ktime_get_coarse_ns() is a helper call, ~8 ns more
	 * per packet under load, and the precise clock ~250 ns on a VM's
	 * kvm-clock (docs/BENCHMARKS.md). */
	now = bpf_jiffies64();
	st = bpf_map_lookup_elem(table, key);
	if (st) {
		add_to_flow(st, len, tcp_flags, now);
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
			add_to_flow(st, len, tcp_flags, now);
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
		add_counts(st, s->delta.bytes, s->delta.packets, s->delta.tcp_flags, s->delta.first_seen,
			   s->delta.last_seen);
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
static __always_inline int account_cached(void *table, struct flow_cache_slot *s, struct flow_key *key,
					  __u32 len, __u32 tcp_flags)
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
static __always_inline void common_key(struct flow_key *key, const struct common_pkt *p, __u32 ifindex,
				       __u8 direction, __u8 observer)
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
static __always_inline int account(struct flow_key *key, __u32 len, __u32 tcp_flags, __u8 direction,
				   __u8 observer)
{
	__u32 table = active_table;
	struct flow_cache_slot *s = cache_slot(table, direction, observer, flow_way(key));

	if (unlikely(!s)) /* not reached: slot < FLOW_CACHE_ENTRIES */
		return 0;
	if (table)
		return account_cached(&flows_b, s, key, len, tcp_flags) == 1;
	return account_cached(&flows_a, s, key, len, tcp_flags) == 1;
}

/* A UDP flow a local socket started sending: if that socket connect()ed
 * before it had a port (udp_sock_dialed), the packet's source port is its
 * port now, and the destination it dialed goes to udp_dialed, as the
 * sendmsg/connect programs record bound sockets. Once per flow and
 * interval, which also keeps the entry from going idle while it sends. */
static __attribute__((noinline)) int note_udp_sender(struct __sk_buff *skb, __u16 src_port)
{
	__u64 cookie = bpf_get_socket_cookie(skb), now;
	struct udp_dialed_key k = {};
	struct dialed *d;

	if (!cookie)
		return 0;
	d = bpf_map_lookup_elem(&udp_sock_dialed, &cookie);
	if (!d)
		return 0;
	__builtin_memcpy(k.addr, d->addr, sizeof(k.addr));
	k.port = d->port;
	k.family = d->family;
	k.local_port = src_port;
	now = bpf_ktime_get_coarse_ns();
	if (bpf_map_update_elem(&udp_dialed, &k, &now, BPF_ANY))
		count_reason(COUNTER_DIALED_FULL, 0);
	return 0;
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
		started = account(&key, len, tcp_flags, direction, observer);
	}
	if (started && key.protocol == IPPROTO_UDP && direction == FLOW_TRANSMIT)
		note_udp_sender(skb, key.src_port);
}

/* Uplink egress: a packet routed from a pod endpoint (or the bridge of pod
 * endpoints) was already counted there as the pod's transmit. */
static __always_inline int uplink_already_counted_egress(struct __sk_buff *skb)
{
	__u32 iif = skb->ingress_ifindex;

	return iif && bpf_map_lookup_elem(&counted_ifaces, &iif);
}

/* Uplink ingress: a packet the node will forward to a pod endpoint is counted
 * there as the pod's receive. Asks the kernel FIB where it goes. Packets the
 * FIB cannot place (local, unroutable, forwarding off) are the node's. */
static __always_inline int uplink_already_counted_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth = data;
	long rc;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end)
			return 0;
		fib.family = AF_INET;
		fib.ipv4_src = ip->saddr;
		fib.ipv4_dst = ip->daddr;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return 0;
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
	} else {
		return 0;
	}
	fib.ifindex = skb->ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	return bpf_map_lookup_elem(&counted_ifaces, &fib.ifindex) != 0;
}

#endif /* EBPFNET_FLOW_H */
