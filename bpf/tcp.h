/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TCP connection lifecycle from the inet_sock_set_state tracepoint (tp_btf:
 * typed access to the socket), keyed by socket cookie. Reports each
 * connection once, at close, with the counters the kernel keeps in tcp_sock. */
#ifndef EBPFNET_TCP_H
#define EBPFNET_TCP_H

#include "common.h"
#include "drop.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define ECONNREFUSED 111
#define ETIMEDOUT    110
#define EHOSTUNREACH 113
#define ENETUNREACH  101

/* Reads the socket's addresses. A macro: the same fields exist in
 * struct conn_state and struct conn_event. CO-RE: __sk_common is read
 * through BTF (vmlinux.h has preserve_access_index), so the offsets follow
 * the running kernel. */
#define READ_CONN_ADDRS(sk, e)                                                                      \
	do {                                                                                        \
		(e)->local_port = (sk)->__sk_common.skc_num;                                        \
		(e)->remote_port = bpf_ntohs((sk)->__sk_common.skc_dport);                          \
		if ((sk)->__sk_common.skc_family == AF_INET) {                                      \
			(e)->family = 4;                                                            \
			map_ipv4((e)->local_addr, (sk)->__sk_common.skc_rcv_saddr);                 \
			map_ipv4((e)->remote_addr, (sk)->__sk_common.skc_daddr);                    \
		} else {                                                                            \
			(e)->family = 6;                                                            \
			__builtin_memcpy((e)->local_addr, &(sk)->__sk_common.skc_v6_rcv_saddr, 16); \
			__builtin_memcpy((e)->remote_addr, &(sk)->__sk_common.skc_v6_daddr, 16);    \
		}                                                                                   \
	} while (0)

static __always_inline __u8 failed_connect_result(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return RESULT_REFUSED;
	case ETIMEDOUT:
		return RESULT_TIMED_OUT;
	case EHOSTUNREACH:
	case ENETUNREACH:
		return RESULT_UNREACHABLE;
	}
	return RESULT_FAILED_OTHER;
}

/* The inode of sk's network namespace (/proc/<pid>/ns/net's), CO-RE
 * through possible_net_t. */
static __always_inline __u32 sock_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* Whether sk is in the namespace `tcp_sockets: pods` leaves out. */
static __always_inline bool untraced(const struct sock *sk)
{
	return untraced_netns && sock_netns(sk) == untraced_netns;
}

static __always_inline void conn_start(const struct sock *sk, __u64 cookie, __u8 role, __u64 now)
{
	struct conn_state st = {.start_ns = now, .role = role};

	st.netns = sock_netns(sk);
	if (untraced_netns && st.netns == untraced_netns)
		return;

	if (role == ROLE_CLIENT) {
		/* connect() runs in the caller's context: the process is known. */
		st.cgroup_id = bpf_get_current_cgroup_id();
		st.pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(st.comm, sizeof(st.comm));
	}
	if (bpf_map_update_elem(&conns, &cookie, &st, BPF_ANY))
		count_reason(COUNTER_CONN_STATE_FULL, 0);
}

/* fill: only when nothing recorded the establishment yet (sockops, after
 * the tracepoint, or instead of it when the kernel skipped the tracepoint). */
static __always_inline void conn_established(const struct sock *sk, __u64 cookie, int oldstate, __u64 now, bool fill)
{
	struct conn_state *st = bpf_map_lookup_elem(&conns, &cookie);
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);

	if (!st || !tp)
		return;
	if (fill && st->established_ns)
		return;
	st->established_ns = now;
	st->srtt_us = tp->srtt_us >> 3; /* the handshake's sample, until sockops refines it */
	READ_CONN_ADDRS(sk, st);
	/* Both ends see the same pair of initial sequence numbers, and NAT does
	 * not change them. At this transition no data has moved yet:
	 * snd_una = own ISN + 1 (our SYN was acked), rcv_nxt = peer ISN + 1. */
	if (oldstate == TCP_SYN_SENT) {
		st->client_isn = tp->snd_una - 1;
		st->server_isn = tp->rcv_nxt - 1;
	} else {
		/* The kernel creates the server socket when the client's final
		 * ACK arrives, so the server span starts there. (Back-dating it by
		 * the handshake RTT put it before the client's SYN by tens of us,
		 * from the RTT's timestamp granularity.) */
		st->client_isn = tp->rcv_nxt - 1;
		st->server_isn = tp->snd_una - 1;
	}
}

/* Fills a closing connection's event from its state: times, identity, the
 * dialed address, the addresses (those recorded at ESTABLISHED: an active
 * closer's socket gave its port to the TIME_WAIT socket before CLOSE). */
static __always_inline void event_from_state(struct conn_event *e, const struct conn_state *st, const struct sock *sk,
					     __u64 cookie, int oldstate, __u64 now)
{
	__builtin_memset(e, 0, sizeof(*e));
	e->cookie = cookie;
	e->start_ns = st->start_ns;
	e->established_ns = st->established_ns;
	e->end_ns = now;
	e->cgroup_id = st->cgroup_id;
	e->client_isn = st->client_isn;
	e->server_isn = st->server_isn;
	e->pid = st->pid;
	e->role = st->role;
	e->resets_received = st->resets_received;
	e->resets_sent = st->resets_sent;
	e->bursts = st->bursts;
	__builtin_memcpy(e->burst_start_ns, st->burst_start_ns, sizeof(e->burst_start_ns));
	__builtin_memcpy(e->burst_count, st->burst_count, sizeof(e->burst_count));
	__builtin_memcpy(e->drop_reason, st->drop_reason, sizeof(e->drop_reason));
	__builtin_memcpy(e->drop_count, st->drop_count, sizeof(e->drop_count));
	e->reset_reason = st->reset_reason;
	/* An abort (close() with unread data, SO_LINGER 0, disconnect) moves
	 * the socket to CLOSE first and sends its reset after, when nothing
	 * tracks it any more: recognize it here. A reset received or an error
	 * (timeout) sets sk_err before the close; an abort leaves it 0. */
	if (!e->resets_sent && !st->resets_received && !sk->sk_err &&
	    (oldstate == TCP_ESTABLISHED || oldstate == TCP_CLOSE_WAIT || oldstate == TCP_SYN_RECV))
		e->resets_sent = 1;
	__builtin_memcpy(e->comm, st->comm, sizeof(e->comm));
	if (st->role == ROLE_CLIENT) {
		struct dialed *d = bpf_map_lookup_elem(&dialed, &cookie);

		if (d) {
			__builtin_memcpy(e->dialed_addr, d->addr, 16);
			e->dialed_port = d->port;
			e->dialed_family = d->family;
		}
	}
	e->sk_err = sk->sk_err;
	/* CO-RE read through possible_net_t; equal to /proc/<pid>/ns/net's inode. */
	e->netns = sock_netns(sk);
	if (st->established_ns) {
		e->family = st->family;
		e->local_port = st->local_port;
		e->remote_port = st->remote_port;
		__builtin_memcpy(e->local_addr, st->local_addr, 16);
		__builtin_memcpy(e->remote_addr, st->remote_addr, 16);
	} else {
		READ_CONN_ADDRS(sk, e);
	}
}

/* Adds the counters tcp_sock keeps (read through BTF at close) to the
 * event: payload bytes each way, segments, retransmits, RTT. */
static __always_inline void event_counters(struct conn_event *e, const struct conn_state *st, const struct sock *sk,
					   int oldstate)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);

	if (!tp)
		return;
	/* bytes_acked and bytes_received count sequence space (RFC 4898):
	 * the SYN and the FIN take one each. Report payload bytes. */
	__u64 acked = tp->bytes_acked, rcvd = tp->bytes_received;
	/* Our FIN was queued only if the socket went through a state
	 * after sending it (close() sets SEND_SHUTDOWN also when it
	 * aborts with a RST); it is acknowledged when snd_una reached
	 * write_seq, which counts it. */
	bool fin_sent = oldstate == TCP_FIN_WAIT1 || oldstate == TCP_FIN_WAIT2 || oldstate == TCP_CLOSING ||
			oldstate == TCP_LAST_ACK || oldstate == TCP_TIME_WAIT;

	/* The client's SYN is acknowledged through tcp_ack (in
	 * bytes_acked); the server's SYN-ACK is not: its child socket starts
	 * with snd_una past it (tcp_create_openreq_child). */
	if (st->established_ns && st->role == ROLE_CLIENT && acked)
		acked--; /* our SYN */
	if (fin_sent && tp->snd_una == tp->write_seq && acked)
		acked--; /* our FIN, acknowledged */
	/* The peer's FIN: SOCK_DONE is set when it arrives (tcp_fin), while
	 * RCV_SHUTDOWN is also set by close(); an active closer reaches
	 * CLOSE from FIN_WAIT2 before the peer's FIN when the kernel hands
	 * the connection to a timewait socket early. */
	if ((sk->__sk_common.skc_flags & (1UL << SOCK_DONE)) && rcvd)
		rcvd--;
	e->bytes_acked = acked;
	e->bytes_received = rcvd;
	e->segs_in = tp->segs_in;
	e->segs_out = tp->segs_out;
	e->total_retrans = tp->total_retrans;
	/* Retransmissions no traced one followed join the last burst. */
	if (st->bursts && tp->total_retrans > st->burst_retrans)
		e->burst_count[(st->bursts - 1) & (MAX_BURSTS - 1)] += tp->total_retrans - st->burst_retrans;
	e->srtt_us = tp->srtt_us >> 3;
	e->min_rtt_us = tp->rtt_min.s[0].v;
	/* A connect that never got its SYN acked: snd_una is still the ISN. */
	if (!st->established_ns && st->role == ROLE_CLIENT)
		e->client_isn = tp->snd_una;
}

/* How the connection ended. */
static __always_inline __u8 event_result(const struct conn_event *e, const struct conn_state *st)
{
	if (!st->established_ns)
		return st->role == ROLE_CLIENT ? failed_connect_result(e->sk_err) : RESULT_NOT_ESTABLISHED;
	if (st->resets_received || e->resets_sent)
		return RESULT_RESET;
	return RESULT_CLOSED;
}

/* A tracked socket reached CLOSE: one event to the ring, then its state
 * and dialed address are forgotten. A full ring is counted. */
static __always_inline void conn_close(const struct sock *sk, __u64 cookie, int oldstate, __u64 now)
{
	struct conn_state *st = bpf_map_lookup_elem(&conns, &cookie);
	struct conn_event *e;

	if (!st) {
		bpf_map_delete_elem(&dialed, &cookie);
		return; /* opened before we attached, or state map was full */
	}
	e = bpf_ringbuf_reserve(&conn_events, sizeof(*e), 0);
	if (!e) {
		count_reason(COUNTER_CONN_EVENTS_FULL, 0);
		bpf_map_delete_elem(&conns, &cookie);
		bpf_map_delete_elem(&dialed, &cookie);
		return;
	}
	event_from_state(e, st, sk, cookie, oldstate, now);
	event_counters(e, st, sk, oldstate);
	e->result = event_result(e, st);
	bpf_map_delete_elem(&dialed, &cookie);
	bpf_ringbuf_submit(e, bpf_ringbuf_query(&conn_events, BPF_RB_AVAIL_DATA) >= ring_wakeup_bytes
				      ? BPF_RB_FORCE_WAKEUP
				      : BPF_RB_NO_WAKEUP);
	bpf_map_delete_elem(&conns, &cookie);
}

/* Every TCP state change of every socket on the host (all namespaces). */
static __always_inline int handle_set_state(const struct sock *sk, int oldstate, int newstate)
{
	/* Most transitions (FIN_WAIT*, CLOSE_WAIT, LAST_ACK, TIME_WAIT, ...)
	 * need nothing: leave before any helper call. A short program also
	 * shortens the window in which a softirq on the same CPU finds it
	 * running and the kernel skips it (recursion_misses, reported as
	 * state_change_missed). */
	if (newstate != TCP_SYN_SENT && newstate != TCP_SYN_RECV && newstate != TCP_ESTABLISHED &&
	    newstate != TCP_CLOSE)
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	/* Span times need the precise clock; state changes are few per
	 * connection, unlike packets. */
	__u64 cookie = bpf_get_socket_cookie((void *)sk), now = bpf_ktime_get_ns();

	switch (newstate) {
	case TCP_SYN_SENT:
		conn_start(sk, cookie, ROLE_CLIENT, now);
		break;
	case TCP_SYN_RECV:
		conn_start(sk, cookie, ROLE_SERVER, now);
		break;
	case TCP_ESTABLISHED:
		conn_established(sk, cookie, oldstate, now, false);
		break;
	case TCP_CLOSE:
		conn_close(sk, cookie, oldstate, now);
		break;
	}
	return 0;
}

/* sockops on the cgroup2 root: ask for RTT callbacks on every connection
 * that becomes established, and on each new RTT sample refresh the RTT and
 * counters user space reads for connections that stay open. The RTT
 * callback fires right after the kernel updates srtt (tcp_probe fires
 * before it processes the segment, so its srtt is one sample late). */
static __always_inline struct sock *sockops_sk(struct bpf_sock_ops *skops)
{
	struct bpf_sock *bsk = skops->sk;

	if (!bsk)
		return 0;
	return (struct sock *)bpf_skc_to_tcp_sock(bsk);
}

/* A connection sockops saw start (connect, or a passive open) that the
 * tracepoint did not record: the kernel skipped the tracepoint program. */
static __always_inline void sockops_start(struct sock *sk, __u64 cookie, __u8 role, __u64 now)
{
	struct conn_state st = {.start_ns = now, .role = role};

	if (bpf_map_lookup_elem(&conns, &cookie))
		return; /* the usual case: the tracepoint recorded it */
	st.netns = sock_netns(sk);
	if (untraced_netns && st.netns == untraced_netns)
		return;
	/* Not counted when the map is full: the tracepoint counted this socket
	 * already (COUNTER_CONN_STATE_FULL), or the kernel skipped it, which
	 * state_changes.missed counts. Counting here too counted each lost
	 * socket twice. */
	bpf_map_update_elem(&conns, &cookie, &st, BPF_NOEXIST);
}

/* The tracepoint program is skipped when it is already running on that
 * CPU (a softirq interrupting it in process context: recursion_misses);
 * cgroup programs are not. So for every socket sockops sees (all sockets
 * created after the attach, in any cgroup), sockops records the start if
 * the tracepoint missed it, the establishment likewise, and the close
 * always (its STATE_CB runs before the tracepoint, which then finds nothing
 * left to report). The tracepoint covers sockets sockops never saw. */
static __always_inline int handle_sockops(struct bpf_sock_ops *skops)
{
	__u64 cookie;
	struct conn_state *st;
	struct sock *sk;
	int op = skops->op;

	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		sk = sockops_sk(skops);
		if (!sk || untraced(sk))
			break;
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_RTT_CB_FLAG |
							 BPF_SOCK_OPS_STATE_CB_FLAG);
		cookie = bpf_get_socket_cookie(skops);
		if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
			sockops_start(sk, cookie, ROLE_CLIENT, bpf_ktime_get_ns());
		} else if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
			conn_established(sk, cookie, TCP_SYN_SENT, bpf_ktime_get_ns(), true);
		} else {
			__u64 now = bpf_ktime_get_ns();

			sockops_start(sk, cookie, ROLE_SERVER, now);
			conn_established(sk, cookie, TCP_SYN_RECV, now, true);
		}
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			break;
		sk = sockops_sk(skops);
		if (sk)
			conn_close(sk, bpf_get_socket_cookie(skops), skops->args[0], bpf_ktime_get_ns());
		break;
	case BPF_SOCK_OPS_RTT_CB:
		cookie = bpf_get_socket_cookie(skops);
		st = bpf_map_lookup_elem(&conns, &cookie);
		if (st) {
			st->srtt_us = skops->srtt_us >> 3;
			st->bytes_acked = skops->bytes_acked;
			st->bytes_received = skops->bytes_received;
			st->total_retrans = skops->total_retrans;
		}
		break;
	}
	return 1; /* sockops: 1 = continue */
}

/* A reset received for an established socket (tcp_receive_reset). */
static __always_inline int handle_receive_reset(const struct sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie((void *)sk);
	struct conn_state *st = bpf_map_lookup_elem(&conns, &cookie);

	if (st && st->resets_received < 255)
		st->resets_received++;
	return 0;
}

/* A retransmission by a tracked socket: grows the current burst, or starts
 * one after a quiet gap. */
static __always_inline int handle_retransmit(const struct sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie((void *)sk), now;
	struct conn_state *st = bpf_map_lookup_elem(&conns, &cookie);
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	__u32 i, total, delta;

	if (!st || !tp)
		return 0;
	/* Count segments as total_retrans does (nstat TcpRetransSegs): it also
	 * grows without this tracepoint (tail loss probes retransmit through
	 * __tcp_retransmit_skb directly); those join the burst of the next
	 * traced retransmission, or the last burst at close. */
	total = tp->total_retrans;
	delta = total - st->burst_retrans;
	if (!delta)
		return 0;
	st->burst_retrans = total;
	now = bpf_ktime_get_ns();
	i = st->bursts;
	if (i == 0 || now - st->last_retrans_ns > RETRANS_BURST_GAP_NS) {
		if (i < MAX_BURSTS) {
			st->burst_start_ns[i & (MAX_BURSTS - 1)] = now;
			st->bursts = ++i;
		}
	}
	st->burst_count[(i - 1) & (MAX_BURSTS - 1)] += delta;
	st->last_retrans_ns = now;
	return 0;
}

/* A reset sent for a socket (tcp_send_reset: an abort, or a segment the
 * socket could not accept). sk may be NULL (no socket matched the segment)
 * or not a full socket (a request or timewait socket): then it is no
 * connection we track, and the reset is counted by the segment's endpoints
 * (skb: the segment it answers). Typed tp_btf arguments: the event gained
 * a reason argument in 6.10 (reason < 0: a kernel without it); the leading
 * ones did not move. */
static __always_inline int handle_send_reset(const struct sock *sk, const struct sk_buff *skb, int reason)
{
	__u64 cookie;
	struct conn_state *st;

	if (!sk || !bpf_skc_to_tcp_sock((void *)sk)) {
		if (reason >= 0)
			reset_nosock(skb, reason);
		return 0;
	}
	cookie = bpf_get_socket_cookie((void *)sk);
	st = bpf_map_lookup_elem(&conns, &cookie);
	if (!st) {
		/* Closed already (an abort), or never tracked: user space looks
		 * the reason up when the close event says a reset was sent. */
		if (reason >= 0)
			bpf_map_update_elem(&reset_reasons, &cookie, &reason, BPF_ANY);
		return 0;
	}
	if (st->resets_sent < 255)
		st->resets_sent++;
	if (reason >= 0 && reason < 254)
		st->reset_reason = reason + 1;
	return 0;
}

#endif /* EBPFNET_TCP_H */
