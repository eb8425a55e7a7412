/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The destination a client dialed, before any socket-level load balancer
 * rewrote it: the cgroup connect4/6 and sendmsg4/6 hooks (attached first to
 * the cgroup2 root), and the UDP sender note of the TC programs for sockets
 * that connected before they had a port. User space joins these to
 * connections (by socket cookie) and UDP flows (by local port). */
#ifndef EBPFNET_SVC_H
#define EBPFNET_SVC_H

#include "common.h"
#include <bpf/bpf_core_read.h>

/* The dialed address of a sock_addr hook (the address the application
 * passed), IPv4 mapped into addr. */
static __always_inline void dialed_addr(struct bpf_sock_addr *ctx, bool v6, __u8 addr[16], __u8 *family)
{
	if (v6) {
		__u32 *a = (__u32 *)addr;

		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
		*family = 6;
	} else {
		map_ipv4(addr, ctx->user_ip4);
		*family = 4;
	}
}

/* A UDP socket sending to (or connecting to) the hook's address: remember
 * the destination with the socket's local port, without changing it. A
 * socket not bound yet (connect() before any send: the kernel picks the port
 * after this hook) is remembered by its cookie instead (udp_sock_dialed):
 * the TC programs add its port when its first packet leaves. The entry is
 * written only when new: a busy sender refreshes its time in place. */
static __always_inline int handle_udp_dialed(struct bpf_sock_addr *ctx, bool v6)
{
	struct udp_dialed_key k = {};
	struct bpf_sock *sk = ctx->sk;
	__u64 now, *last;

	if (ctx->protocol != IPPROTO_UDP || !sk)
		return 1;
	dialed_addr(ctx, v6, k.addr, &k.family);
	k.local_port = (__u16)sk->src_port;
	if (!k.local_port) {
		struct dialed d = {.port = bpf_ntohs((__u16)ctx->user_port), .family = k.family};
		__u64 cookie = bpf_get_socket_cookie(ctx);

		__builtin_memcpy(d.addr, k.addr, sizeof(d.addr));
		if (bpf_map_update_elem(&udp_sock_dialed, &cookie, &d, BPF_ANY))
			count_reason(COUNTER_DIALED_FULL, 0);
		return 1;
	}
	k.port = bpf_ntohs((__u16)ctx->user_port);
	now = bpf_ktime_get_coarse_ns();
	last = bpf_map_lookup_elem(&udp_dialed, &k);
	if (last) {
		if (*last != now)
			*last = now;
		return 1;
	}
	if (bpf_map_update_elem(&udp_dialed, &k, &now, BPF_ANY))
		count_reason(COUNTER_DIALED_FULL, 0);
	return 1;
}

/* cgroup/connect4 and connect6: remember what the application dialed, per
 * socket, without changing it (return 1: proceed). Runs before the socket
 * exists in TCP terms (before SYN_SENT), in the caller's context. Must run
 * before a socket-level load balancer that rewrites the address (cgroup
 * programs run in attach order): the receiver attaches these first. */
static __always_inline int handle_connect(struct bpf_sock_addr *ctx, bool v6)
{
	struct dialed d = {};
	__u64 cookie;

	if (ctx->type == SOCK_DGRAM)
		return handle_udp_dialed(ctx, v6);
	if (ctx->type != SOCK_STREAM)
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	dialed_addr(ctx, v6, d.addr, &d.family);
	d.port = bpf_ntohs((__u16)ctx->user_port);
	if (bpf_map_update_elem(&dialed, &cookie, &d, BPF_ANY))
		count_reason(COUNTER_DIALED_FULL, 0);
	return 1;
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

#endif /* EBPFNET_SVC_H */
