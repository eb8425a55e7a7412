/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* DNS in the TC programs of pod endpoints: a query and its response matched
 * by (client, server, transaction ID, transport, side, interface) in
 * dns_pending, the latency taken on the interface that saw both (the client
 * pod's veth for its lookups; a resolver pod's veth for the queries it
 * serves), and one dns_events record per answered transaction with the
 * query's question section for user space to decode. Unanswered queries are
 * user space's to expire (timeouts). Any other packet pays a port compare
 * (dns_port). */
#ifndef EBPFNET_DNS_H
#define EBPFNET_DNS_H

#include "common.h"

/* dns_ports — the ports DNS is parsed on (0: unused), set by user space at
 * load (config dns.ports). Read-only data: the verifier knows the values
 * and removes the compares of unused ones. */
volatile const __u16 dns_ports[DNS_MAX_PORTS] = {53};

static __always_inline bool dns_port(__u16 sport, __u16 dport)
{
	for (int i = 0; i < DNS_MAX_PORTS; i++) {
		__u16 p = dns_ports[i];

		if (p && (sport == p || dport == p))
			return true;
	}
	return false;
}

struct dns_header {
	__be16 id;
	__be16 flags;
	__be16 qdcount;
	__be16 ancount;
	__be16 nscount;
	__be16 arcount;
};

#define DNS_QR	      0x8000
#define DNS_HDR_LEN   12
#define DNS_MIN_QUERY (DNS_HDR_LEN + 5) /* the root name, a type and a class */

/* Where the packet's DNS message starts, its length, and the key's
 * endpoints as the packet has them (source, destination). */
struct dns_pkt {
	__u8 saddr[16], daddr[16];
	__u16 sport, dport;
	__u32 off, len;
	__u32 mlen; /* TCP: the message's length from its prefix; UDP: 0 */
	__u8 protocol;
};

static __always_inline int dns_l4(struct __sk_buff *skb, struct dns_pkt *p, __u32 l4)
{
	__u16 ports[2];

	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)))
		return -1;
	p->sport = bpf_ntohs(ports[0]);
	p->dport = bpf_ntohs(ports[1]);
	if (p->protocol == IPPROTO_UDP) {
		p->off = l4 + 8;
	} else {
		/* TCP: the message starts in this segment, after its 2-byte
		 * length (RFC 1035 4.2.2). */
		__u8 doff;
		__be16 mlen;

		if (bpf_skb_load_bytes(skb, l4 + 12, &doff, 1))
			return -1;
		p->off = l4 + (doff >> 4) * 4;
		if (bpf_skb_load_bytes(skb, p->off, &mlen, 2))
			return -1;
		p->off += 2;
		p->mlen = bpf_ntohs(mlen);
		if (p->mlen < DNS_HDR_LEN)
			return -1;
	}
	if (p->off >= skb->len)
		return -1;
	p->len = skb->len - p->off;
	return 0;
}

/* Parses the headers before the DNS message (untagged Ethernet, IPv4 or
 * IPv6 without extension headers, UDP or TCP). */
static __always_inline int dns_parse(struct __sk_buff *skb, struct dns_pkt *p)
{
	__be16 proto;

	if (bpf_skb_load_bytes(skb, 12, &proto, 2))
		return -1;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) || ip.ihl < 5 ||
		    (ip.frag_off & bpf_htons(0x3fff)))
			return -1;
		p->protocol = ip.protocol;
		map_ipv4(p->saddr, ip.saddr);
		map_ipv4(p->daddr, ip.daddr);
		return dns_l4(skb, p, ETH_HLEN + ip.ihl * 4);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
			return -1;
		p->protocol = ip6.nexthdr;
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		if (p->protocol != IPPROTO_UDP && p->protocol != IPPROTO_TCP)
			return -1;
		return dns_l4(skb, p, ETH_HLEN + sizeof(ip6));
	}
	return -1;
}

/* A query: remembered in dns_pending with its question section, unless a
 * retransmission of one already pending (same key: its first send stays
 * the start). */
static __always_inline void dns_query(struct __sk_buff *skb, const struct dns_key *k, const struct dns_pkt *p,
				      __u16 flags)
{
	__u32 zero = 0, qlen;
	struct dns_query_state *q;

	q = bpf_map_lookup_elem(&dns_pending, k);
	if (q) {
		if (q->sends < 255)
			q->sends++;
		return;
	}
	q = bpf_map_lookup_elem(&dns_scratch, &zero);
	if (!q)
		return;
	q->query_ns = bpf_ktime_get_ns();
	q->flags = flags;
	q->sends = 1;
	qlen = p->len - DNS_HDR_LEN;
	if (qlen > DNS_QMAX)
		qlen = DNS_QMAX;
	q->qlen = 0;
	if (qlen >= 5 && !bpf_skb_load_bytes(skb, p->off + DNS_HDR_LEN, q->question, qlen))
		q->qlen = qlen;
	if (bpf_map_update_elem(&dns_pending, k, q, BPF_NOEXIST))
		count_reason(COUNTER_DNS_PENDING_FULL, 0);
}

/* A response: the transaction is done, its record goes to user space. */
static __always_inline void dns_response(const struct dns_key *k, const struct dns_header *h)
{
	struct dns_query_state *q = bpf_map_lookup_elem(&dns_pending, k);
	struct dns_event *e;

	if (!q)
		return; /* its query came before the receiver, or expired */
	e = bpf_ringbuf_reserve(&dns_events, sizeof(*e), 0);
	if (!e) {
		count_reason(COUNTER_DNS_EVENTS_FULL, 0);
	} else {
		__builtin_memcpy(&e->key, k, sizeof(*k));
		e->query_ns = q->query_ns;
		e->response_ns = bpf_ktime_get_ns();
		e->query_flags = q->flags;
		e->flags = bpf_ntohs(h->flags);
		e->ancount = bpf_ntohs(h->ancount);
		e->sends = q->sends;
		e->qlen = q->qlen;
		__builtin_memcpy(e->question, q->question, sizeof(e->question));
		/* Wake the reader only past a quarter of the ring: it reads on
		 * a short deadline anyway (as conn_events). */
		bpf_ringbuf_submit(e, bpf_ringbuf_query(&dns_events, BPF_RB_AVAIL_DATA) >= DNS_EVENTS_SIZE / 4
					      ? 0
					      : BPF_RB_NO_WAKEUP);
	}
	bpf_map_delete_elem(&dns_pending, k);
}

/* A packet to or from a DNS port on a pod endpoint, seen in direction. */
static __attribute__((noinline)) int dns_observe(struct __sk_buff *skb, __u32 direction)
{
	struct dns_pkt p = {};
	struct dns_header h;
	struct dns_key k = {};
	bool response;

	if (dns_parse(skb, &p) || p.len < DNS_HDR_LEN || bpf_skb_load_bytes(skb, p.off, &h, sizeof(h)))
		return 0;
	/* One question, a query opcode: a DNS message, not a stray packet. */
	if (h.qdcount != bpf_htons(1) || ((bpf_ntohs(h.flags) >> 11) & 0xf) > 6)
		return 0;
	response = bpf_ntohs(h.flags) & DNS_QR;
	/* A query goes to a DNS port, has no answers and fits in its TCP
	 * segment; a response comes from a DNS port. So the later segments of
	 * a long TCP answer (from the server's port, and not a message start)
	 * are never taken for a query; as responses, they match no pending
	 * query. */
	if (response ? !dns_port(p.sport, 0) : !dns_port(0, p.dport))
		return 0;
	if (!response && (p.len < DNS_MIN_QUERY || h.ancount || h.nscount || p.mlen > p.len))
		return 0;
	if (response) {
		__builtin_memcpy(k.client, p.daddr, 16);
		__builtin_memcpy(k.server, p.saddr, 16);
		k.client_port = p.dport;
		k.server_port = p.sport;
	} else {
		__builtin_memcpy(k.client, p.saddr, 16);
		__builtin_memcpy(k.server, p.daddr, 16);
		k.client_port = p.sport;
		k.server_port = p.dport;
	}
	k.id = bpf_ntohs(h.id);
	k.protocol = p.protocol;
	/* The pod asked (its query leaves, its answer arrives) or answered. */
	k.side = (response == (direction == FLOW_RECEIVE)) ? DNS_SIDE_CLIENT : DNS_SIDE_SERVER;
	k.ifindex = skb->ifindex;
	if (response)
		dns_response(&k, &h);
	else
		dns_query(skb, &k, &p, bpf_ntohs(h.flags));
	return 0;
}

#endif /* EBPFNET_DNS_H */
