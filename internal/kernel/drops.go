package kernel

import (
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
	batchOK bool
}

func newDropTables(ncpu int) dropTables {
	return dropTables{keys: make([]DropKey, drainBatch), vals: make([]ebpfnetDropCounts, drainBatch),
		slots: make([]ebpfnetDropCacheSlot, ncpu), zero: make([]ebpfnetDropCacheSlot, ncpu), pending: map[DropKey]ebpfnetDropCounts{},
		batchOK: true}
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
	err := drainMap(m, "drop table", t.keys, t.vals, &t.batchOK, func(k *DropKey, v *ebpfnetDropCounts) {
		c := *v
		if p, ok := t.pending[*k]; ok {
			c.Packets += p.Packets
			c.Bytes += p.Bytes
			delete(t.pending, *k)
		}
		t.drained = append(t.drained, decodeDrop(k, &c, r, names[int(k.Ifindex)]))
	}, nil)
	// The slots' drops of keys the table did not hold.
	for k, v := range t.pending {
		t.drained = append(t.drained, decodeDrop(&k, &v, r, names[int(k.Ifindex)]))
	}
	clear(t.pending)
	return err
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
	if d.Kind == flow.DropResetNoSocket {
		d.Reason = r.Reset(k.Reason)
	} else {
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
		out = append(out, flow.SocketDrop{Reason: r.Drop(reasons[i]), Packets: uint64(counts[i])})
	}
	return out
}
