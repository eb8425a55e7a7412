/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef EBPFNET_MAPS_H
#define EBPFNET_MAPS_H

#include "include/vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "types.h"

/* flows_a, flows_b — the two flow tables user space alternates between.
 * key: struct flow_key; value: struct flow_counts, one for all CPUs,
 * updated with atomic adds (flow.h add_shared). Most packets do not reach
 * it: they are added to their CPU's flow_cache slot, which only a packet of
 * another flow flushes here. A per-CPU value (plain adds) was cheaper per
 * packet on 2 CPUs but costs 32 bytes per possible CPU per entry, in kernel
 * memory and in every drain: ~570 MB at the defaults on a 64-CPU node
 * (README, "Sizing").
 * max_entries: set by user space before load (config `max_flows`).
 * Inserted by the TC programs (BPF_NOEXIST); deleted only by user space,
 * which drains the table that is *not* active with BatchLookupAndDelete.
 * Preallocated: an insert is cheaper than with BPF_F_NO_PREALLOC
 * (docs/BENCHMARKS.md, "Design measurements"). */
struct flow_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_counts);
	__uint(max_entries, 1);
} flows_a SEC(".maps"), flows_b SEC(".maps");

/* active_table — which of flows_a (0) or flows_b (1) the programs write to.
 * Written only by user space (through the mmapped .bss), read once per
 * packet. A global rather than an ARRAY_OF_MAPS lookup: the verifier inlines
 * lookups of statically known maps, not of inner maps (measured in
 * docs/BENCHMARKS.md). */
volatile __u32 active_table;

/* flow_cache — per CPU, FLOW_CACHE_WAYS struct flow_cache_slot for each of
 * the four programs (observer, direction) and each table: index
 * ((table * 2 + observer) * 2 + direction) * FLOW_CACHE_WAYS + flow_way(key),
 * a table's slots contiguous. Written by the TC programs; user space reads
 * and zeroes a table's slots when it drains that table, after the drain
 * barrier. A slot lookup is inlined by the verifier and touches this CPU's
 * memory only; the hash lookup it saves is the largest step of the program
 * under TCP load (docs/BENCHMARKS.md, where the per-run cost goes). */
#define FLOW_CACHE_WAY_BITS    4
#define FLOW_CACHE_WAYS	       (1 << FLOW_CACHE_WAY_BITS)
#define FLOW_CACHE_TABLE_SLOTS (4 * FLOW_CACHE_WAYS)
#define FLOW_CACHE_ENTRIES     (2 * FLOW_CACHE_TABLE_SLOTS)
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOW_CACHE_ENTRIES);
	__type(key, __u32);
	__type(value, struct flow_cache_slot);
} flow_cache SEC(".maps");

/* drain_barrier — never read by the programs. User space replaces its one
 * entry after flipping active_table: an update of an ARRAY_OF_MAPS returns
 * only after an RCU grace period (maybe_wait_bpf_programs), i.e. after every
 * program that could still write to the previous table has finished, so
 * that table can be drained exactly: no increment lost, none landing in a
 * slot the kernel reuses. key: 0; value: barrier_token, always (any update
 * waits, and a one-entry inner map costs nothing: a flow table as the inner
 * map made the load create, and charge, a third table as its template). */
struct barrier_token {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} barrier_token SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct barrier_token);
} drain_barrier SEC(".maps") = {
	.values = {[0] = &barrier_token},
};

/* counters — packets not folded into a flow, by enum counter_reason.
 * key: reason; value: struct counter_value; per-CPU, COUNTER_MAX entries.
 * Incremented by the TC programs; never deleted: user space sums the CPUs
 * and reports cumulative values. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, enum counter_reason);
	__type(value, struct counter_value);
} counters SEC(".maps");

/* counted_ifaces — interfaces whose packets are already counted at a pod
 * endpoint: the endpoint interfaces themselves and the bridges they are
 * enslaved to (a packet routed from a bridge came from one of its ports).
 * key: ifindex; value: 1 endpoint, 2 bridge. max 4096 interfaces.
 * Inserted/deleted by user space as it attaches/detaches interfaces; read by
 * the uplink programs so that they do not count a packet a second time. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} counted_ifaces SEC(".maps");

/* fib_cache — per CPU, where the FIB last sent a destination arriving on an
 * uplink: FIB_CACHE_SLOTS direct-mapped struct fib_cache_slot, indexed by a
 * hash of the destination and the interface. A slot answers only while its
 * generation is uplink_gen: user space bumps uplink_gen whenever counted_ifaces
 * changes, a route changes and every interval, so an answer is never older
 * than the node's routes and interfaces. Saves uplink_ingress the FIB
 * lookup (its cost is in docs/BENCHMARKS.md, "The uplink path"). */
#define FIB_CACHE_BITS	8
#define FIB_CACHE_SLOTS (1 << FIB_CACHE_BITS)
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FIB_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct fib_cache_slot);
} fib_cache SEC(".maps");

/* iif_cache — per CPU, whether packets that entered the node on an interface
 * (uplink egress: skb->ingress_ifindex) were counted there: IIF_CACHE_SLOTS
 * direct-mapped struct iif_cache_slot by ifindex, valid while their
 * generation is uplink_gen (which every counted_ifaces change advances). Saves
 * uplink_egress a hash lookup per packet. */
#define IIF_CACHE_SLOTS 64
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IIF_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct iif_cache_slot);
} iif_cache SEC(".maps");

/* uplink_gen — the generation fib_cache and iif_cache answer for. Written only by user space
 * (the mmapped .bss). */
volatile __u32 uplink_gen;

/* conns — TCP sockets between their first state change and close.
 * key: socket cookie; value: struct conn_state. max_entries set by user space
 * (config `max_connections`). Inserted by the inet_sock_set_state program at
 * SYN_SENT / SYN_RECV, deleted by it at close; a full map is counted
 * (COUNTER_CONN_STATE_FULL). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn_state);
} conns SEC(".maps");

/* conn_events — one struct conn_event per closed connection, to user space.
 * Size set by user space (config `ring_buffer_size`). A full ring is counted
 * (COUNTER_CONN_EVENTS_FULL), never silent. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} conn_events SEC(".maps");

/* dialed — the destination each TCP client socket passed to connect(), by
 * socket cookie, recorded by the cgroup/connect4 and connect6 programs and
 * deleted at the socket's close. LRU: a connect() that fails before
 * SYN_SENT (no route) never reaches our close, and its entry must not stay
 * forever. The update dominates the program's cost; the LRU hash was the
 * cheapest of the maps tried (preallocated hash, socket local storage:
 * docs/BENCHMARKS.md, "Design measurements"). A failed update is counted
 * (COUNTER_DIALED_FULL). max_entries set by user space (`max_connections`). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct dialed);
} dialed SEC(".maps");

/* udp_dialed — UDP destinations sent to, by (local port, destination), each
 * with the CLOCK_MONOTONIC time of its last send (refreshed in place; user
 * space reads the map every interval and deletes entries idle for long).
 * Written by the sendmsg4/6 and connect4/6 programs for bound sockets, and
 * by the TC programs for sockets of udp_sock_dialed.
 * LRU: a full map forgets the entry idle longest. max_entries set by user
 * space (`max_connections`). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct udp_dialed_key);
	__type(value, __u64);
} udp_dialed SEC(".maps");

/* udp_sock_dialed — the destination a UDP socket connect()ed to before it
 * had a local port (the kernel picks it after the connect hook: glibc's
 * resolver, Go's net.Dial), by socket cookie. key: socket cookie; value:
 * struct dialed. Written by the connect4/6 programs; read by the TC programs
 * when such a socket's first packet of an interval starts a flow, which
 * gives the local port: they then write udp_dialed. LRU: UDP sockets have no
 * close event here; a full map forgets the least recently used socket.
 * max_entries set by user space (`max_connections`). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct dialed);
} udp_sock_dialed SEC(".maps");

/* ring_wakeup_bytes — a closed connection is submitted without waking the
 * reader (BPF_RB_NO_WAKEUP) until this many bytes wait in conn_events; user
 * space also reads on a short deadline. A wake-up per event costs an
 * irq_work (a self-IPI, a VM exit under virtualization) in the program and a
 * thread wake-up in user space. Set by user space at load (a fraction of the
 * ring's size). */
volatile const __u64 ring_wakeup_bytes = 1;

/* untraced_netns — the network namespace (inode) whose TCP sockets get no
 * connection state: no span, no connection metric, no RTT callbacks. Set by
 * user space at load to its own namespace (the node's, for an agent on the
 * host network) with `tcp_sockets: pods`; 0 traces every socket. */
volatile const __u32 untraced_netns = 0;

/* drops_a, drops_b — packets the kernel dropped, by struct drop_key,
 * written by the kfree_skb and tcp_send_reset programs into the table
 * active_table names, drained by user space with the flow tables (same
 * flip and barrier). Preallocated; max_entries set by user space
 * (`drops.max_entries`); a failed insert is counted (COUNTER_DROPS_FULL).
 * Values are shared and updated with atomic adds. */
struct drop_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct drop_key);
	__type(value, struct drop_counts);
	__uint(max_entries, 1);
} drops_a SEC(".maps"), drops_b SEC(".maps");

/* drop_cache — per CPU, DROP_CACHE_WAYS struct drop_cache_slot for each of
 * the two drop tables (index table * DROP_CACHE_WAYS + drop_way(key)):
 * drops of the slot's key added without a hash lookup (drop.h drop_count).
 * User space reads and zeroes a table's slots when it drains that table,
 * after the drain barrier. */
#define DROP_CACHE_WAY_BITS 2
#define DROP_CACHE_WAYS	    (1 << DROP_CACHE_WAY_BITS)
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * DROP_CACHE_WAYS);
	__type(key, __u32);
	__type(value, struct drop_cache_slot);
} drop_cache SEC(".maps");

/* reset_reasons — the reason (enum sk_rst_reason) of a reset a socket sent
 * after its close was reported (an abort: tcp_disconnect moves the socket
 * to CLOSE, then sends the reset), by socket cookie. Written by the
 * tcp_send_reset program; read and deleted by user space when it decodes
 * that connection's close. LRU: an entry nobody reads is forgotten. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} reset_reasons SEC(".maps");

/* dns_pending — DNS queries waiting for their response, by struct dns_key
 * (dns.h). Inserted by the TC programs at a query, deleted at its
 * response; user space deletes the ones older than the timeout (config
 * dns.timeout) and reports them as timeouts. Preallocated; max_entries set
 * by user space (dns.max_pending); a full map is counted
 * (COUNTER_DNS_PENDING_FULL). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct dns_key);
	__type(value, struct dns_query_state);
} dns_pending SEC(".maps");

/* dns_scratch — one struct dns_query_state per CPU where a query is built
 * before it is inserted (too large for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dns_query_state);
} dns_scratch SEC(".maps");

/* dns_events — one struct dns_event per answered DNS transaction, to user
 * space. A full ring is counted (COUNTER_DNS_EVENTS_FULL). The reader is
 * woken past a quarter of it, as for conn_events. */
#define DNS_EVENTS_SIZE (1 << 20)
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, DNS_EVENTS_SIZE);
} dns_events SEC(".maps");

/* drop_ignored — the core skb_drop_reason values not reported (normal
 * teardown), a bit per value below 256, set by user space at load from the
 * names in the running kernel's BTF. Subsystem reasons (high 16 bits set)
 * are always reported. */
volatile const __u64 drop_ignored[4] = {};

/* host_netns — inode of the node's network namespace (the agent's), set at
 * load: a drop there on a pod's endpoint interface belongs to that pod. */
volatile const __u32 host_netns = 0;

#endif /* EBPFNET_MAPS_H */
