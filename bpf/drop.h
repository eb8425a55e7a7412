/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packets the kernel drops (tp_btf/kfree_skb, with the kernel's reason) and
 * TCP resets sent for segments no full socket owned (tp_btf/tcp_send_reset),
 * counted in the drop tables by local endpoint, peer address, transport,
 * direction and reason. Reasons are compared with the bitmap user space
 * fills from the running kernel's BTF, never with numeric literals. */
#ifndef EBPFNET_DROP_H
#define EBPFNET_DROP_H

#include "common.h"
#include <bpf/bpf_core_read.h>

/* Whether a core reason is on the ignore list (normal teardown). */
static __always_inline bool drop_is_ignored(__u32 reason)
{
	__u64 word;

	/* Constant indexes: the verifier cannot bound a computed one (clang
	 * computes it from the unmasked 64-bit register). */
	switch (reason >> 6) {
	case 0:
		word = drop_ignored[0];
		break;
	case 1:
		word = drop_ignored[1];
		break;
	case 2:
		word = drop_ignored[2];
		break;
	case 3:
		word = drop_ignored[3];
		break;
	default:
		return false; /* a subsystem reason */
	}
	return (word >> (reason & 63)) & 1;
}

/* sk when it is a full socket (ours may have state for it), else NULL:
 * request and timewait sockets have no cgroup data. */
static __always_inline const struct sock *drop_full_sock(const struct sock *sk)
{
	__u8 state;

	if (!sk)
		return NULL;
	state = sk->__sk_common.skc_state;
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV)
		return NULL;
	return sk;
}

/* The addresses, transport and ports of the packet in skb, from its
 * network header, as source/destination; the IP bytes in *len. False when
 * the skb has no IP network header (the key keeps family 0). */
struct drop_pkt {
	__u8 saddr[16], daddr[16];
	__u16 sport, dport;
	__u8 protocol, family;
};

/* The ports (TCP/UDP) or ICMP type and code at the start of the L4 header. */
static __always_inline void drop_set_ports(struct drop_pkt *p, const __u8 *l4)
{
	if (p->protocol == IPPROTO_TCP || p->protocol == IPPROTO_UDP) {
		p->sport = (__u16)l4[0] << 8 | l4[1];
		p->dport = (__u16)l4[2] << 8 | l4[3];
	} else if (p->protocol == IPPROTO_ICMP || p->protocol == IPPROTO_ICMPV6) {
		p->sport = p->dport = (__u16)l4[0] << 8 | l4[1];
	}
}

/* The skb's fields are read directly (tp_btf: BTF-typed loads the verifier
 * turns into faulting loads, no helper call); the headers with one
 * bpf_probe_read_kernel each, L4 ports included when there are no IPv4
 * options. */
static __always_inline bool drop_parse(const struct sk_buff *skb, struct drop_pkt *p, __u64 *len)
{
	const unsigned char *head = skb->head, *nh;
	__u16 nh_off = skb->network_header;
	__u16 proto = skb->protocol;
	__u64 data_off = (__u64)skb->data - (__u64)head;

	*len = skb->len;
	if (nh_off == (__u16)~0U || !head)
		return false;
	nh = head + nh_off;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct {
			struct iphdr ip;
			__u8 l4[4];
		} h;

		if (bpf_probe_read_kernel(&h, sizeof(h), nh) || h.ip.version != 4 || h.ip.ihl < 5)
			return false;
		p->family = 4;
		p->protocol = h.ip.protocol;
		map_ipv4(p->saddr, h.ip.saddr);
		map_ipv4(p->daddr, h.ip.daddr);
		if (h.ip.frag_off & bpf_htons(0x1fff))
			; /* a later fragment: no L4 header */
		else if (h.ip.ihl == 5)
			drop_set_ports(p, h.l4);
		else if (!bpf_probe_read_kernel(h.l4, sizeof(h.l4), nh + h.ip.ihl * 4))
			drop_set_ports(p, h.l4);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct {
			struct ipv6hdr ip6;
			__u8 l4[4];
		} h;

		if (bpf_probe_read_kernel(&h, sizeof(h), nh) || h.ip6.version != 6)
			return false;
		p->family = 6;
		p->protocol = h.ip6.nexthdr; /* extension headers are not walked: ports stay 0 */
		__builtin_memcpy(p->saddr, &h.ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &h.ip6.daddr, 16);
		drop_set_ports(p, h.l4);
	} else {
		return false;
	}
	/* From the network header on, wherever skb->data points now. */
	*len = *len + data_off - nh_off;
	return true;
}

/* What counted_ifaces says of ifindex: 1 an endpoint, 2 a bridge of
 * endpoints, 0 neither. */
static __always_inline __u8 counted_kind(__u32 ifindex)
{
	__u8 *kind = bpf_map_lookup_elem(&counted_ifaces, &ifindex);

	return kind ? *kind : 0;
}

/* Sets the key's attribution and direction, by the rule of the flows: a
 * packet on a pod's endpoint interface is that pod's, sent when it came
 * from the pod; one that came in through an endpoint (or a bridge of them)
 * and died on its way out was sent by that pod (behind a bridge: user space
 * finds the pod by its source address); otherwise the namespace it died in
 * (a pod's, or the node's) with its socket's cgroup, received when it came
 * in through an interface. rx: known to be received (a reset's incoming
 * segment, a receiving socket). */
static __always_inline void drop_attribute(struct drop_key *k, const struct sk_buff *skb, const struct sock *sk,
					   bool rx)
{
	const struct net_device *dev = skb->dev;
	__u32 ifindex = 0, iif = skb->skb_iif;
	__u8 kind;

	if (dev) {
		ifindex = dev->ifindex;
		k->netns = dev->nd_net.net->ns.inum;
	}
	if (sk) {
		if (!k->netns)
			k->netns = sk->__sk_common.skc_net.net->ns.inum;
		k->cgroup_id = sk->sk_cgrp_data.cgroup->kn->id;
	}
	k->direction = (rx || iif) ? FLOW_RECEIVE : FLOW_TRANSMIT;
	if (k->netns != host_netns)
		return;
	if (ifindex && counted_kind(ifindex) == 1) {
		k->ifindex = ifindex;
		k->direction = (iif == ifindex && !rx) ? FLOW_TRANSMIT : FLOW_RECEIVE;
		return;
	}
	if (!iif || rx)
		return;
	kind = counted_kind(iif);
	if (kind == 1)
		k->ifindex = iif;
	if (kind)
		k->direction = FLOW_TRANSMIT;
}

/* Adds packets and their bytes to key k's entry in table (drops_a or
 * drops_b). */
static __always_inline void drop_add_table(void *table, const struct drop_key *k, __u64 packets, __u64 bytes)
{
	struct drop_counts *c = bpf_map_lookup_elem(table, k), init = {.packets = packets, .bytes = bytes};
	int err;

	if (c) {
		__sync_fetch_and_add(&c->packets, packets);
		__sync_fetch_and_add(&c->bytes, bytes);
		return;
	}
	err = bpf_map_update_elem(table, k, &init, BPF_NOEXIST);
	if (err == -EEXIST) {
		c = bpf_map_lookup_elem(table, k); /* another CPU inserted it */
		if (c) {
			__sync_fetch_and_add(&c->packets, packets);
			__sync_fetch_and_add(&c->bytes, bytes);
			return;
		}
	}
	if (err)
		count_reasons(COUNTER_DROPS_FULL, packets, bytes);
}

_Static_assert(sizeof(struct drop_key) == 64, "same_drop compares eight words");

static __always_inline bool same_drop(const struct drop_key *a, const struct drop_key *b)
{
	const __u64 *x = (const void *)a, *y = (const void *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4]) | (x[5] ^ y[5]) |
		(x[6] ^ y[6]) | (x[7] ^ y[7])) == 0;
}

/* Which of a table's DROP_CACHE_WAYS slots a key uses: the reason and the
 * last words of the addresses and the port, folded. */
static __always_inline __u32 drop_way(const struct drop_key *k)
{
	const __u32 *w = (const void *)k;

	return ((w[3] ^ w[7] ^ k->local_port ^ k->reason) * 0x9E3779B1u) >> (32 - DROP_CACHE_WAY_BITS);
}

/* Adds one packet of len bytes to the active drop table, through this
 * CPU's slot of the key's way: consecutive drops of one key (a storm, a
 * socket's lost segments) add to the slot, in memory no other CPU touches,
 * and reach the table when another key takes the slot or user space drains
 * it. Only the kfree_skb program uses the slots: the kernel does not run a
 * program nested in itself on one CPU (it counts the run as a recursion
 * miss), so nothing interleaves on a slot. */
static __always_inline void drop_count(const struct drop_key *k, __u64 len)
{
	__u32 t = active_table, idx;
	void *table = t ? (void *)&drops_b : (void *)&drops_a;
	struct drop_cache_slot *s;

	idx = (t & 1) * DROP_CACHE_WAYS + drop_way(k);
	s = bpf_map_lookup_elem(&drop_cache, &idx);
	if (!s) {
		drop_add_table(table, k, 1, len);
		return;
	}
	if (likely(s->delta.packets && same_drop(&s->key, k))) {
		s->delta.packets++;
		s->delta.bytes += len;
		return;
	}
	if (s->delta.packets)
		drop_add_table(table, &s->key, s->delta.packets, s->delta.bytes);
	__builtin_memcpy(&s->key, k, sizeof(*k));
	s->delta.packets = 1;
	s->delta.bytes = len;
}

/* The key of skb's packet: its endpoints from the local endpoint's side. */
static __always_inline __u64 drop_key_of(struct drop_key *k, const struct sk_buff *skb, const struct sock *sk, bool rx)
{
	struct drop_pkt p = {};
	__u64 len;

	drop_attribute(k, skb, sk, rx);
	if (!drop_parse(skb, &p, &len))
		return len;
	k->family = p.family;
	k->protocol = p.protocol;
	if (k->direction == FLOW_RECEIVE) {
		__builtin_memcpy(k->local_addr, p.daddr, 16);
		__builtin_memcpy(k->peer_addr, p.saddr, 16);
		k->local_port = p.dport;
	} else {
		__builtin_memcpy(k->local_addr, p.saddr, 16);
		__builtin_memcpy(k->peer_addr, p.daddr, 16);
		k->local_port = p.sport;
	}
	return len;
}

/* Adds a drop to the socket's connection state, when we track it. Two CPUs
 * that see a socket's first drop of two reasons at once may take one slot:
 * one of the two counts then goes to the other's reason. */
static __always_inline void drop_to_conn(const struct sock *sk, __u32 reason)
{
	/* The socket's cookie as the kernel stored it: set by the first
	 * bpf_get_socket_cookie, which our TCP programs made for every socket
	 * they track (0: not one of ours). The helper itself does not take a
	 * pointer read from the skb. */
	__u64 cookie = sk->__sk_common.skc_cookie.counter;
	struct conn_state *st;

	if (!cookie)
		return;
	st = bpf_map_lookup_elem(&conns, &cookie);
	if (!st)
		return;
	for (int i = 0; i < MAX_SOCK_DROPS; i++) {
		if (st->drop_count[i] && st->drop_reason[i] != reason)
			continue;
		st->drop_reason[i] = reason;
		__sync_fetch_and_add(&st->drop_count[i], 1);
		return;
	}
}

/* A packet the kernel dropped. rx_sk: the receiving socket (6.11+), else
 * NULL and the skb's own socket is used. */
static __always_inline int handle_drop(const struct sk_buff *skb, __u32 reason, const struct sock *rx_sk)
{
	struct drop_key k = {.reason = reason, .kind = DROP_PACKET};
	const struct sock *sk;
	__u64 len;

	if (drop_is_ignored(reason))
		return 0;
	sk = drop_full_sock(rx_sk ? rx_sk : skb->sk); /* a BTF pointer, not a probe read: helpers take it */
	len = drop_key_of(&k, skb, sk, rx_sk != NULL);
	drop_count(&k, len);
	if (sk && k.protocol == IPPROTO_TCP && sk->sk_protocol == IPPROTO_TCP)
		drop_to_conn(sk, reason);
	return 0;
}

/* A reset sent in reply to segment skb that no full socket owned (a closed
 * port, a timewait or request socket): counted by the segment's endpoints. */
static __always_inline void reset_nosock(const struct sk_buff *skb, __u32 reason)
{
	struct drop_key k = {.reason = reason, .kind = DROP_RESET_NOSOCK};

	if (!skb)
		return;
	drop_key_of(&k, skb, NULL, true);
	/* Not through the slots: this program may run nested in kfree_skb's
	 * on one CPU (a softirq), and the slots are kfree_skb's alone. */
	drop_add_table(active_table ? (void *)&drops_b : (void *)&drops_a, &k, 1, 0);
}

#endif /* EBPFNET_DROP_H */
