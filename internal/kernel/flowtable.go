package kernel

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// drainBatch is how many flows one BatchLookupAndDelete call returns at most.
const drainBatch = 4096

// flowTables is the flow side of the datapath: the two flow tables the
// programs alternate between, their per-CPU slots, and what a drain needs.
// Guarded by Datapath.mu.
type flowTables struct {
	maps      [2]*ebpf.Map
	active    int // index into maps of the table the programs write to
	maxFlows  uint32
	drains    int
	keys      []FlowKey
	vals      []rawCounts           // drainBatch: one value per key
	slots     []cacheSlot           // ncpu: one flow_cache entry
	zeroSlots []cacheSlot           // ncpu zero values
	pending   map[FlowKey]rawCounts // slot counts of the table being drained (takeSlots)
	entries   []entry               // Drain's buffer
	clock     jiffyClock
	ncpu      int
	batchOK   bool
}

func newFlowTables(maxFlows uint32, ncpu int) flowTables {
	return flowTables{
		maxFlows:  maxFlows,
		ncpu:      ncpu,
		keys:      make([]FlowKey, drainBatch),
		vals:      make([]rawCounts, drainBatch),
		slots:     make([]cacheSlot, ncpu),
		zeroSlots: make([]cacheSlot, ncpu),
		pending:   make(map[FlowKey]rawCounts),
		batchOK:   true,
	}
}

// entry is one drained flow table entry, with what the slots held for it.
type entry struct {
	Key    FlowKey
	Counts FlowCounts
}

// Drain makes the other flow table active, waits until no program writes to
// the previous one, and appends all of its flows to dst, leaving it empty.
// Every packet counted before the switch is in the returned flows exactly
// once; packets after it are in the next Drain.
func (d *Datapath) Drain(dst []flow.Flow) ([]flow.Flow, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	entries, err := d.drainLocked(d.tables.entries[:0])
	d.tables.entries = entries
	w := wallClock(WallClockOffset())
	for i := range entries {
		dst = append(dst, decodeFlow(&entries[i], w, d.ifaces.names[int(entries[i].Key.Ifindex)]))
	}
	d.ifaces.forget(d.tables.drains)
	return dst, err
}

// drainEntries is Drain without the decode (the kernel tests read keys).
func (d *Datapath) drainEntries(dst []entry) ([]entry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.drainLocked(dst)
}

func (d *Datapath) drainLocked(dst []entry) ([]entry, error) {
	if d.closed {
		return dst, ErrClosed
	}
	t := &d.tables
	next := 1 - t.active
	if err := d.objs.ActiveTable.Set(uint32(next)); err != nil {
		return dst, fmt.Errorf("switch active flow table: %w", err)
	}
	// The uplink FIB cache answers for an interval at most, whatever route
	// change the watch may have missed.
	if err := d.invalidateUplinkCachesLocked(); err != nil {
		return dst, err
	}
	// Replacing an ARRAY_OF_MAPS entry returns only after an RCU grace
	// period, i.e. after every program that could still have read the old
	// active_table has finished (kernel maybe_wait_bpf_programs).
	if err := d.objs.DrainBarrier.Put(uint32(0), d.objs.BarrierToken); err != nil {
		return dst, fmt.Errorf("wait for programs using the previous flow table: %w", err)
	}
	idle, idleIndex := t.maps[t.active], t.active
	t.active = next
	t.drains++
	// After the barrier: no flow of the idle table is newer than this pair.
	if err := d.sampleClock(); err != nil {
		return dst, err
	}
	if err := d.takeSlots(idleIndex); err != nil {
		// The table stays as it is, consistent with the slots not read
		// yet; its flows are drained, late but whole, two drains on.
		return t.appendPending(dst), err
	}
	dst, err := t.drainTable(idle, dst)
	return t.appendPending(dst), errors.Join(err, d.drops.drain(idleIndex, d.reasons, d.ifaces.names))
}

// takeSlots reads the idle table's flow_cache slots and empties them: what
// they hold goes to d.pending by flow, for the drain to add to the flows it
// reads from the table, where the programs put each slot's flow when it took
// the slot. A constant number of syscalls (two per slot index, one for a slot
// index empty on every CPU) whatever the number of CPUs: an update of a flow
// per slot and CPU would be O(CPUs²) bytes copied per drain.
func (d *Datapath) takeSlots(table int) error {
	t := &d.tables
	clear(t.pending)
	// Each table has half of the entries (FLOW_CACHE_TABLE_SLOTS), contiguous.
	n := d.objs.FlowCache.MaxEntries() / 2
	for i := uint32(table) * n; i < uint32(table+1)*n; i++ {
		if err := d.objs.FlowCache.Lookup(i, t.slots); err != nil {
			return fmt.Errorf("read flow cache slot %d: %w", i, err)
		}
		used := false
		for cpu := range t.slots {
			used = used || t.slots[cpu] != cacheSlot{}
		}
		if !used {
			continue
		}
		// Zeroed before the counts move: a failure can lose a slot's
		// packets but never count them twice. Zeroing the keys too keeps
		// a slot from taking packets for a flow the drain removes.
		if err := d.objs.FlowCache.Put(i, t.zeroSlots); err != nil {
			return fmt.Errorf("empty flow cache slot %d: %w", i, err)
		}
		for cpu := range t.slots {
			s := &t.slots[cpu]
			if s.Delta.Packets == 0 {
				continue
			}
			p := t.pending[s.Key]
			t.clock.add(&p, &s.Delta)
			t.pending[s.Key] = p
		}
	}
	return nil
}

// withPending adds what the slots held for the flow key to vals, its
// counts from the table.
func (d *flowTables) withPending(key *FlowKey, vals []rawCounts) []rawCounts {
	if len(d.pending) == 0 {
		return vals
	}
	if p, ok := d.pending[*key]; ok {
		d.clock.add(&vals[0], &p)
		delete(d.pending, *key)
	}
	return vals
}

// appendPending appends the slot counts no drained flow took as flows of
// their own: not reached when the table was drained (each slot's flow is in
// it), a guard against losing them otherwise.
func (d *flowTables) appendPending(dst []entry) []entry {
	for key, p := range d.pending {
		dst = append(dst, entry{Key: key, Counts: d.clock.merge([]rawCounts{p})})
	}
	clear(d.pending)
	return dst
}

func (d *flowTables) drainTable(m *ebpf.Map, dst []entry) ([]entry, error) {
	err := drainMap(m, "flow table", d.keys, d.vals, &d.batchOK, func(k *FlowKey, v *rawCounts) {
		dst = append(dst, entry{Key: *k, Counts: d.clock.merge(d.withPending(k, unsafe.Slice(v, 1)))})
	})
	return dst, err
}

// drainMap empties an idle map (no program writes it), calling fn for each
// entry: BatchLookupAndDelete in batches of len(keys), or, on a kernel
// without batch operations (before 5.6; *batchOK is then false for good),
// by iterating and then deleting what was read.
func drainMap[K comparable, V any](m *ebpf.Map, name string, keys []K, vals []V, batchOK *bool, fn func(*K, *V)) error {
	if *batchOK {
		var cursor ebpf.MapBatchCursor
		for {
			n, err := m.BatchLookupAndDelete(&cursor, keys, vals, nil)
			for i := range n {
				fn(&keys[i], &vals[i])
			}
			switch {
			case errors.Is(err, ebpf.ErrKeyNotExist):
				return nil
			case errors.Is(err, ebpf.ErrNotSupported):
				*batchOK = false
			case err != nil:
				return fmt.Errorf("drain %s: %w", name, err)
			default:
				continue
			}
			break
		}
	}
	var read []K
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		fn(&k, &v)
		read = append(read, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate %s: %w", name, err)
	}
	for i := range read {
		if err := m.Delete(&read[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete drained %s entry: %w", name, err)
		}
	}
	return nil
}

// add adds delta to v, both counts of one flow; times compared by age
// (before the latest pair), which a wrap of the 32 bits does not disturb.
func (c *jiffyClock) add(v, delta *rawCounts) {
	if v.Packets == 0 || c.age(delta.FirstSeen) > c.age(v.FirstSeen) {
		v.FirstSeen = delta.FirstSeen
	}
	if v.Packets == 0 || c.age(delta.LastSeen) < c.age(v.LastSeen) {
		v.LastSeen = delta.LastSeen
	}
	v.Bytes += delta.Bytes
	v.Packets += delta.Packets
	v.TcpFlags |= delta.TcpFlags
}

// merge folds counts of one flow (the table's, the slots'), its times
// converted to CLOCK_MONOTONIC.
func (c *jiffyClock) merge(vals []rawCounts) FlowCounts {
	var sum rawCounts
	for i := range vals {
		if vals[i].Packets > 0 {
			c.add(&sum, &vals[i])
		}
	}
	out := FlowCounts{Bytes: sum.Bytes, Packets: sum.Packets, TcpFlags: sum.TcpFlags}
	if sum.Packets > 0 {
		out.FirstSeenNs, out.LastSeenNs = c.ns(sum.FirstSeen), c.ns(sum.LastSeen)
	}
	return out
}

// sampleClock runs clock_sample for a (jiffies, coarse ns) pair of one tick
// and gives it to the clock that converts flow times.
func (d *Datapath) sampleClock() error {
	frame := make([]byte, 14) // test runs of a tc program need an Ethernet header
	for try := 0; ; try++ {
		if _, err := d.objs.ClockSample.Run(&ebpf.RunOptions{Data: frame}); err != nil {
			return fmt.Errorf("sample the kernel clock (BPF_PROG_TEST_RUN of clock_sample): %w", err)
		}
		var j, ns, after uint64
		if err := errors.Join(d.objs.ClockJiffies.Get(&j), d.objs.ClockCoarseNs.Get(&ns), d.objs.ClockJiffiesAfter.Get(&after)); err != nil {
			return fmt.Errorf("read the kernel clock sample: %w", err)
		}
		// A tick between the reads: the pair may not be of one tick.
		if j == after || try == 2 {
			d.tables.clock.observe(clockPair{jiffies: j, ns: ns})
			return nil
		}
	}
}

// missedBy are the programs whose recursion misses a reason counts (nil:
// a map counter).
func (d *Datapath) missedBy(r flow.Reason) []*ebpf.Program {
	switch r {
	case flow.ReasonStateChangeMissed:
		return []*ebpf.Program{d.objs.InetSockSetState, d.objs.TcpReceiveReset, d.sendReset, d.retransmit}
	case flow.ReasonDropsMissed:
		if d.kfreeSkb == nil {
			return []*ebpf.Program{}
		}
		return []*ebpf.Program{d.kfreeSkb}
	}
	return nil
}

// Counters returns the cumulative per-reason counters summed over CPUs.
func (d *Datapath) Counters() (flow.Counters, error) {
	var out flow.Counters
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return out, ErrClosed
	}
	var perCPU []CounterValue
	for i := range flow.NumReasons {
		if progs := d.missedBy(flow.Reason(i)); progs != nil {
			// Not a map counter: the kernel counts the runs it skipped.
			for _, p := range progs {
				s, err := p.Stats()
				if err != nil {
					return out, fmt.Errorf("read recursion misses: %w", err)
				}
				out[i].Packets += s.RecursionMisses
			}
			continue
		}
		if err := d.objs.Counters.Lookup(uint32(i), &perCPU); err != nil {
			return out, fmt.Errorf("read counter %d: %w", i, err)
		}
		for _, v := range perCPU {
			out[i].Packets += v.Packets
			out[i].Bytes += v.Bytes
		}
	}
	return out, nil
}
