/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Shared by the benchmark programs of bpf/bench (not loaded by the receiver). */
#ifndef EBPFNET_BENCH_PARSE_H
#define EBPFNET_BENCH_PARSE_H

#include "../flow.h"

/* Parses as the receiver's handle_packet does, into key and tcp_flags;
 * returns 0 when the packet is a flow, else counts its reason. */
static __always_inline int bench_parse(struct __sk_buff *skb, struct flow_key *key, __u32 *tcp_flags)
{
	int ret = parse_skb(skb, key, tcp_flags);

	if (ret != PARSE_OK) {
		count_reason(ret, skb->len);
		return -1;
	}
	key->ifindex = skb->ifindex;
	key->direction = FLOW_RECEIVE;
	key->observer = OBSERVER_ENDPOINT;
	return 0;
}

#endif /* EBPFNET_BENCH_PARSE_H */
