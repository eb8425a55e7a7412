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
	entries   []entry               // streamEntries' part
	flows     []flow.Flow           // DrainFlows' part
	started   bool                  // StartDrain switched the tables; DrainFlows not run yet
	draining  *ebpf.Map             // the table DrainFlows empties (nil: only the slots' counts)
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

// StartDrain makes the other flow table active, waits until no program
// writes to the previous one, and reads the interval's drops (Drops) and
// what the CPUs' slots held; DrainFlows then empties the previous table.
// Every packet counted before the switch is in the flows of that
// DrainFlows exactly once; packets after it are in the next drain's.
func (d *Datapath) StartDrain() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	t := &d.tables
	if t.started {
		return errors.New("start a flow drain: the last one was not read (DrainFlows)")
	}
	next := 1 - t.active
	if err := d.objs.ActiveTable.Set(uint32(next)); err != nil {
		return fmt.Errorf("switch active flow table: %w", err)
	}
	// The uplink FIB cache answers for an interval at most, whatever route
	// change the watch may have missed.
	if err := d.invalidateUplinkCachesLocked(); err != nil {
		return err
	}
	// Replacing an ARRAY_OF_MAPS entry returns only after an RCU grace
	// period, i.e. after every program that could still have read the old
	// active_table has finished (kernel maybe_wait_bpf_programs).
	if err := d.objs.DrainBarrier.Put(uint32(0), d.objs.BarrierToken); err != nil {
		return fmt.Errorf("wait for programs using the previous flow table: %w", err)
	}
	idle, idleIndex := t.maps[t.active], t.active
	t.active = next
	t.drains++
	// After the barrier: no flow of the idle table is newer than this pair.
	if err := d.sampleClock(); err != nil {
		return err
	}
	t.started = true
	if err := d.takeSlots(idleIndex); err != nil {
		// The table stays as it is, consistent with the slots not read
		// yet; its flows are drained, late but whole, two drains on.
		// DrainFlows hands over what the slots held.
		return err
	}
	t.draining = idle
	return d.drops.drain(idleIndex, d.reasons, d.ifaces.names)
}

// DrainFlows empties the table StartDrain made idle, handing its flows to fn
// a part at a time (at most drainBatch flows, the whole table on a kernel
// without batch operations; valid during the call), so
// that an interval's flows are never all in memory; nothing when no drain
// was started. A pod interface attached during the interval (a new pod, or
// the first interval) is learnt before fn sees the first flow: learn (nil:
// none) sees the flows' addresses, interface and direction, and reports
// whether the flow's interface is known now (Endpoints.Learn); when the
// first part leaves a new interface unknown, the rest of the table is read
// for it (lookup only) until none is. Other intervals need no more than
// what earlier intervals and their own part teach. fn runs without the
// datapath's lock (the interface watch attaches meanwhile); ErrClosed when
// the datapath was closed during it.
func (d *Datapath) DrainFlows(learn func(*flow.Flow) bool, fn func([]flow.Flow)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.tables.started {
		if d.closed {
			return ErrClosed
		}
		return nil
	}
	w := wallClock(WallClockOffset())
	var learnKey func(*FlowKey) bool
	if unknown := d.newEndpoints(); learn != nil && len(unknown) > 0 {
		learnKey = func(k *FlowKey) bool {
			if !unknown[k.Ifindex] {
				return len(unknown) == 0
			}
			f := decodeFlow(&entry{Key: *k}, w, "")
			if learn(&f) {
				delete(unknown, k.Ifindex)
			}
			return len(unknown) == 0
		}
	}
	flows := d.tables.flows[:0]
	err := d.streamEntries(learnKey, func(part []entry) error {
		flows = flows[:0]
		for i := range part {
			flows = append(flows, decodeFlow(&part[i], w, d.ifaces.names[int(part[i].Key.Ifindex)]))
		}
		if len(flows) == 0 {
			return nil
		}
		d.mu.Unlock()
		func() {
			defer d.mu.Lock()
			fn(flows)
		}()
		if d.closed {
			return ErrClosed
		}
		return nil
	})
	clear(flows) // no interface names or drops kept alive
	d.tables.flows = flows[:0]
	d.ifaces.forget(d.tables.drains)
	return err
}

// newEndpoints are the pod interfaces attached since the drain before the
// last: their flows are in the table being drained, and nothing was learnt
// of them before.
func (d *Datapath) newEndpoints() map[uint32]bool {
	var out map[uint32]bool
	for ifindex, a := range d.ifaces.links {
		if a.role == RoleEndpoint && a.at >= d.tables.drains-1 {
			if out == nil {
				out = make(map[uint32]bool)
			}
			out[uint32(ifindex)] = true
		}
	}
	return out
}

// Drain is StartDrain and DrainFlows, the flows appended to dst.
func (d *Datapath) Drain(dst []flow.Flow) ([]flow.Flow, error) {
	err := d.StartDrain()
	if errors.Is(err, ErrClosed) {
		return dst, err
	}
	return dst, errors.Join(err, d.DrainFlows(nil, func(part []flow.Flow) { dst = append(dst, part...) }))
}

// drainEntries is Drain without the decode (the kernel tests read keys).
func (d *Datapath) drainEntries(dst []entry) ([]entry, error) {
	err := d.StartDrain()
	if errors.Is(err, ErrClosed) {
		return dst, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ferr := d.streamEntries(nil, func(part []entry) error {
		dst = append(dst, part...)
		return nil
	})
	return dst, errors.Join(err, ferr)
}

// streamEntries empties the table being drained into parts (drainMap's
// batches: at most drainBatch entries, one part on a kernel without batch
// operations), the slots' counts added, then hands over the slots' counts
// no entry took. With learn, keys are learnt before the first part until
// learn reports that it knows enough: the slots' keys, the first part's,
// then, when the table has more than one part, a lookup-only pass over the
// rest.
func (d *Datapath) streamEntries(learn func(*FlowKey) bool, each func([]entry) error) error {
	t := &d.tables
	m := t.draining
	t.started, t.draining = false, nil
	part := t.entries[:0]
	defer func() { t.entries = part[:0] }()
	enough := learn == nil
	for k := range t.pending {
		if enough {
			break
		}
		enough = learn(&k)
	}
	var err, learnErr error
	if m != nil {
		err = drainMap(m, "flow table", t.keys, t.vals, &t.batchOK, func(k *FlowKey, v *rawCounts) {
			part = append(part, entry{Key: *k, Counts: t.clock.merge(t.withPending(k, unsafe.Slice(v, 1)))})
		}, func(last bool) error {
			if !enough {
				// Learnt now, or never: a failed lookup costs the new
				// pod's flows their learning, not their counts.
				enough, learnErr = true, t.learnAll(m, part, last, learn)
			}
			err := each(part)
			part = part[:0]
			return err
		})
	}
	if errors.Is(err, ErrClosed) {
		return err
	}
	return errors.Join(err, learnErr, each(t.appendPending(part[:0])))
}

// learnAll learns the keys of the first part and, unless it was the whole
// table, of the entries still in it (a lookup that does not delete), until
// learn knows enough.
func (d *flowTables) learnAll(m *ebpf.Map, first []entry, last bool, learn func(*FlowKey) bool) error {
	for i := range first {
		if learn(&first[i].Key) {
			return nil
		}
	}
	if last {
		return nil
	}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, d.keys, d.vals, nil)
		for i := range n {
			if learn(&d.keys[i]) {
				return nil
			}
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil
		case err != nil:
			return fmt.Errorf("read flow table keys: %w", err)
		}
	}
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

// drainMap empties an idle map (no program writes it), calling fn for each
// entry and then, when batch is not nil, batch: after each
// BatchLookupAndDelete of at most len(keys) entries, last true for the
// final one. On a kernel without batch operations (before 5.6; *batchOK is
// then false for good) it iterates, deletes what was read, and calls batch
// once. An error of batch stops the drain; entries read before an error of
// the map are still handed to batch.
func drainMap[K comparable, V any](m *ebpf.Map, name string, keys []K, vals []V, batchOK *bool, fn func(*K, *V), batch func(last bool) error) error {
	if batch == nil {
		batch = func(bool) error { return nil }
	}
	if *batchOK {
		var cursor ebpf.MapBatchCursor
		for {
			n, err := m.BatchLookupAndDelete(&cursor, keys, vals, nil)
			if errors.Is(err, ebpf.ErrNotSupported) {
				*batchOK = false
				break
			}
			for i := range n {
				fn(&keys[i], &vals[i])
			}
			if berr := batch(err != nil); berr != nil {
				return berr
			}
			switch {
			case errors.Is(err, ebpf.ErrKeyNotExist):
				return nil
			case err != nil:
				return fmt.Errorf("drain %s: %w", name, err)
			}
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
		return errors.Join(fmt.Errorf("iterate %s: %w", name, err), batch(true))
	}
	for i := range read {
		if err := m.Delete(&read[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return errors.Join(fmt.Errorf("delete drained %s entry: %w", name, err), batch(true))
		}
	}
	return batch(true)
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
