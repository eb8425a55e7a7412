/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet parsing for the TC programs: Ethernet, up to two VLAN tags, IPv4
 * (with options), IPv6 (with extension headers) and the L4 header, each read
 * with an explicit length check, so that a truncated or malformed packet is
 * counted as such and never becomes a wrong flow; and the short way for the
 * common packet (parse_common). */
#ifndef EBPFNET_PARSE_H
#define EBPFNET_PARSE_H

#include "common.h"

#define MAX_VLAN_DEPTH 2   /* 802.1ad outer + 802.1Q inner */
#define MAX_IPV6_EXT   6   /* extension headers walked before giving up */
#define PULL_LEN       256 /* bytes made linear when headers are not */

/* Returned by parse_packet when the packet is a flow; any other value is the
 * enum counter_reason that explains why it is not. */
#define PARSE_OK COUNTER_MAX

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

/* A header does not fit in the linear data: either the packet really is
 * shorter (truncated), or the rest lives in paged fragments. */
static __always_inline int short_reason(struct __sk_buff *skb, void *data, void *data_end)
{
	return (__u64)(data_end - data) < skb->len ? COUNTER_NONLINEAR : COUNTER_TRUNCATED;
}

/* Parses L4 ports (or ICMP type/code) and TCP flags at pos. */
static __always_inline int parse_l4(struct __sk_buff *skb, void *data, void *pos, void *end, struct flow_key *key,
				    __u32 *tcp_flags)
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

static __always_inline int parse_ipv4(struct __sk_buff *skb, void *data, void *pos, void *end, struct flow_key *key,
				      __u32 *tcp_flags)
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

static __always_inline int parse_ipv6(struct __sk_buff *skb, void *data, void *pos, void *end, struct flow_key *key,
				      __u32 *tcp_flags)
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
		if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING || nexthdr == IPPROTO_DSTOPTS ||
		    nexthdr == IPPROTO_AH) {
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
	/* The kernel may carry the outermost tag in the skb's metadata instead
	 * of the data (VLAN acceleration, e.g. a VLAN device on a veth): it
	 * counts against the depth. */
	__u32 in_data = skb->vlan_present ? MAX_VLAN_DEPTH - 1 : MAX_VLAN_DEPTH;

#pragma unroll
	for (int i = 0; i < MAX_VLAN_DEPTH; i++) {
		struct vlan_tag *tag = pos;

		if (likely(proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD)) || i >= in_data)
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

#endif /* EBPFNET_PARSE_H */
