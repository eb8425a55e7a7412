package kernel

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// DropKey is a drop table key (struct drop_key in bpf/types.h).
type DropKey = ebpfnetDropKey

// dropTables is the drop side of the datapath: two tables the programs
// alternate between with the flow tables (one active_table, one barrier),
// drained at each Drain. Guarded by Datapath.mu.
type dropTables struct {
	maps    [2]*ebpf.Map
	cache   *ebpf.Map // drop_cache: per-CPU slots of both tables
	keys    []DropKey
	vals    []ebpfnetDropCounts
	slots   []ebpfnetDropCacheSlot // ncpu: one drop_cache entry
	zero    []ebpfnetDropCacheSlot
	pending map[DropKey]ebpfnetDropCounts // the idle table's slots, by key
	drained []flow.Drop                   // the last Drain's, for Drops
}

func newDropTables(ncpu int) dropTables {
	return dropTables{keys: make([]DropKey, drainBatch), vals: make([]ebpfnetDropCounts, drainBatch),
		slots: make([]ebpfnetDropCacheSlot, ncpu), zero: make([]ebpfnetDropCacheSlot, ncpu), pending: map[DropKey]ebpfnetDropCounts{}}
}

// takeSlots moves the idle table's per-CPU slots (drop_cache) to pending
// and empties them: after the drain barrier no program writes them.
func (t *dropTables) takeSlots(idle int) error {
	clear(t.pending)
	if t.cache == nil {
		return nil
	}
	ways := t.cache.MaxEntries() / 2
	for i := uint32(idle) * ways; i < uint32(idle+1)*ways; i++ {
		if err := t.cache.Lookup(i, t.slots); err != nil {
			return fmt.Errorf("read drop cache slot %d: %w", i, err)
		}
		used := false
		for cpu := range t.slots {
			if s := &t.slots[cpu]; s.Delta.Packets > 0 {
				used = true
				p := t.pending[s.Key]
				p.Packets += s.Delta.Packets
				p.Bytes += s.Delta.Bytes
				t.pending[s.Key] = p
			}
		}
		if used {
			if err := t.cache.Put(i, t.zero); err != nil {
				return fmt.Errorf("empty drop cache slot %d: %w", i, err)
			}
		}
	}
	return nil
}

// drain empties the idle table (index idle) and its slots into t.drained,
// decoded.
func (t *dropTables) drain(idle int, r *Reasons, names map[int]string) error {
	t.drained = t.drained[:0]
	m := t.maps[idle]
	if m == nil {
		return nil
	}
	if err := t.takeSlots(idle); err != nil {
		return err
	}
	defer t.appendPending(r, names)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookupAndDelete(&cursor, t.keys, t.vals, nil)
		for i := range n {
			v := t.vals[i]
			if p, ok := t.pending[t.keys[i]]; ok {
				v.Packets += p.Packets
				v.Bytes += p.Bytes
				delete(t.pending, t.keys[i])
			}
			t.drained = append(t.drained, decodeDrop(&t.keys[i], &v, r, names[int(t.keys[i].Ifindex)]))
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return t.drainIterate(m, r, names)
		}
		if err != nil {
			return fmt.Errorf("drain drop table: %w", err)
		}
	}
}

// appendPending adds the slots' drops of keys the table did not hold.
func (t *dropTables) appendPending(r *Reasons, names map[int]string) {
	for k, v := range t.pending {
		t.drained = append(t.drained, decodeDrop(&k, &v, r, names[int(k.Ifindex)]))
	}
	clear(t.pending)
}

// drainIterate is the fallback without batch operations (the table is idle).
func (t *dropTables) drainIterate(m *ebpf.Map, r *Reasons, names map[int]string) error {
	var keys []DropKey
	var k DropKey
	var v ebpfnetDropCounts
	it := m.Iterate()
	for it.Next(&k, &v) {
		if p, ok := t.pending[k]; ok {
			v.Packets += p.Packets
			v.Bytes += p.Bytes
			delete(t.pending, k)
		}
		t.drained = append(t.drained, decodeDrop(&k, &v, r, names[int(k.Ifindex)]))
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate drop table: %w", err)
	}
	for i := range keys {
		if err := m.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete drained drop: %w", err)
		}
	}
	return nil
}

// decodeDrop makes the model's drop of a drained entry.
func decodeDrop(k *DropKey, v *ebpfnetDropCounts, r *Reasons, iface string) flow.Drop {
	d := flow.Drop{
		Kind: flow.DropKind(k.Kind), Protocol: k.Protocol, Direction: flow.Direction(k.Direction),
		Ifindex: k.Ifindex, Interface: iface, Netns: k.Netns, CgroupID: k.CgroupId,
		Packets: v.Packets, Bytes: v.Bytes,
	}
	if k.Family != 0 {
		d.Local = netip.AddrPortFrom(addr(k.LocalAddr, k.Family), k.LocalPort)
		d.Peer = addr(k.PeerAddr, k.Family)
	}
	switch {
	case r == nil:
		d.Reason = fmt.Sprintf("UNKNOWN_%d", k.Reason)
	case d.Kind == flow.DropResetNoSocket:
		d.Reason = r.Reset(k.Reason)
	default:
		d.Reason = r.Drop(k.Reason)
	}
	return d
}

// Drops appends what the kernel dropped in the interval the last Drain
// ended (read by it, in the same switch of tables).
func (d *Datapath) Drops(dst []flow.Drop) []flow.Drop {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append(dst, d.drops.drained...)
}

// DropsEnabled reports whether the drop program is loaded (a kernel with
// drop reasons, drops not turned off).
func (d *Datapath) DropsEnabled() bool { return d.kfreeSkb != nil }

// UnknownDropReasons are the ignored reasons this kernel does not name.
func (d *Datapath) UnknownDropReasons() []string { return d.unknown }

// Reasons are the kernel's reason names (nil on a kernel without them).
func (d *Datapath) Reasons() *Reasons { return d.reasons }

// HostNetns is the inode of the node's network namespace.
func (d *Datapath) HostNetns() uint32 { return d.hostNetns }

// sockDrops decodes a closed connection's per-socket drops.
func sockDrops(reasons, counts [4]uint32, r *Reasons) []flow.SocketDrop {
	var out []flow.SocketDrop
	for i := range counts {
		if counts[i] == 0 {
			continue
		}
		name := fmt.Sprintf("UNKNOWN_%d", reasons[i])
		if r != nil {
			name = r.Drop(reasons[i])
		}
		out = append(out, flow.SocketDrop{Reason: name, Packets: uint64(counts[i])})
	}
	return out
}
