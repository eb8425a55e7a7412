/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Helpers and constants every feature header uses: protocol numbers, branch
 * hints, the loss counters, the IPv4-mapped address form of the keys. */
#ifndef EBPFNET_COMMON_H
#define EBPFNET_COMMON_H

#include "include/vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "types.h"
#include "maps.h"

#define ETH_P_IP     0x0800
#define ETH_P_IPV6   0x86DD
#define ETH_P_8021Q  0x8100
#define ETH_P_8021AD 0x88A8

#define AF_INET	 2
#define AF_INET6 10
#define EEXIST	 17
#define ETH_HLEN 14

#define IPPROTO_HOPOPTS	 0
#define IPPROTO_ROUTING	 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_AH	 51
#define IPPROTO_ICMPV6	 58
#define IPPROTO_DSTOPTS	 60

/* Branch hints for the per-packet path: clang lays out the expected way
 * (a well-formed IPv4 or IPv6 packet, IPv4 first, of the flow in its slot)
 * as the straight line and moves the rest (bad packets, pulls, misses) out
 * of it. make bench compares the build without them ("Build variants" in
 * docs/BENCHMARKS.md); EBPFNET_NO_BRANCH_HINTS builds that variant. */
#ifndef EBPFNET_NO_BRANCH_HINTS
#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#else
#define likely(x)   (x)
#define unlikely(x) (x)
#endif

/* Adds packets (or, for connections, events) and their bytes to the
 * counter of a reason: nothing the programs see is lost without a count. */
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

/* Stores an IPv4 address as the keys hold it: IPv4-mapped IPv6. */
static __always_inline void map_ipv4(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

#endif /* EBPFNET_COMMON_H */
