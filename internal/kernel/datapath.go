package kernel

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// ErrClosed is returned by a Datapath that was closed.
var ErrClosed = errors.New("datapath closed")

// drainBatch is how many flows one BatchLookupAndDelete call returns at most.
const drainBatch = 4096

// Options configure Load.
type Options struct {
	// MaxFlows is the capacity of each of the two flow tables.
	MaxFlows uint32
	// MaxConns is the capacity of the TCP connection state map (0: 65536).
	MaxConns uint32
	// RingSize is the size in bytes of the closed-connection ring buffer:
	// a power of two, at least a page (0: 4 MiB).
	RingSize uint32
	// CgroupPath is the cgroup2 directory the sockops program is attached
	// to (every socket created in it or below). Empty: the root of the
	// first cgroup2 mount in /proc/self/mountinfo. In a container, mount
	// the host's cgroup2 hierarchy and name it here.
	CgroupPath string
}

// Defaults of Options.
const (
	DefaultMaxConns = 65536
	DefaultRingSize = 4 << 20
)

// Datapath is the loaded kernel pipeline: programs, flow tables, counters.
// Drain, Counters, Attach and Detach may be called from different
// goroutines.
type Datapath struct {
	retransmit *ebpf.Program // the tcp_retransmit_skb program for this kernel
	cgroup     string        // Options.CgroupPath
	mu         sync.Mutex
	objs       ebpfnetObjects
	tables     [2]*ebpf.Map
	active     int // index into tables of the table the programs write to
	maxFlows   uint32
	keys       []FlowKey
	vals       []cpuCounts           // drainBatch * ncpu: one value per CPU per key
	slots      []cacheSlot           // ncpu: one flow_cache entry
	zeroSlots  []cacheSlot           // ncpu zero values
	pending    map[FlowKey]cpuCounts // slot counts of the table being drained (takeSlots)
	udpKeys    []UDPDialedKey        // batch reads of udp_dialed (allocated at first use)
	udpVals    []uint64
	clock      jiffyClock
	ncpu       int
	batchOK    bool
	links      map[int]*attachment
	masters    map[int]int // bridge ifindex -> number of attached endpoint ports
	names      map[int]string
	gone       map[int]int // detached ifindex -> value of drains at detach
	drains     int
	mode       AttachMode
	tcpLinks   []link.Link // TCP lifecycle tracepoints
	connKeys   []uint64
	connVals   []ConnState
	closed     bool
}

// Load checks privileges, loads the BPF objects into the kernel and returns
// the Datapath. Nothing is attached yet.
func Load(opts Options) (*Datapath, error) {
	if opts.MaxFlows == 0 {
		return nil, errors.New("max flows must be positive")
	}
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; a no-op after.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock rlimit for BPF maps: %w", err)
	}
	spec, err := loadEbpfnet()
	if err != nil {
		return nil, fmt.Errorf("parse embedded BPF object: %w", err)
	}
	for _, name := range []string{ebpfnetMapFlowsA, ebpfnetMapFlowsB} {
		spec.Maps[name].MaxEntries = opts.MaxFlows
	}
	spec.Maps[ebpfnetMapDrainBarrier].InnerMap.MaxEntries = opts.MaxFlows
	if opts.MaxConns == 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.RingSize == 0 {
		opts.RingSize = DefaultRingSize
	}
	spec.Maps[ebpfnetMapConns].MaxEntries = opts.MaxConns
	spec.Maps[ebpfnetMapDialed].MaxEntries = opts.MaxConns
	spec.Maps[ebpfnetMapUdpDialed].MaxEntries = opts.MaxConns
	spec.Maps[ebpfnetMapUdpSockDialed].MaxEntries = opts.MaxConns
	spec.Maps[ebpfnetMapConnEvents].MaxEntries = opts.RingSize
	// Wake the reader only when a quarter of the ring is in use; it also
	// reads every connReadPeriod (ReadConns).
	if err := spec.Variables[ebpfnetVarRingWakeupBytes].Set(uint64(opts.RingSize / 4)); err != nil {
		return nil, fmt.Errorf("set ring_wakeup_bytes: %w", err)
	}

	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count possible CPUs: %w", err)
	}
	d := &Datapath{
		maxFlows:  opts.MaxFlows,
		cgroup:    opts.CgroupPath,
		ncpu:      ncpu,
		keys:      make([]FlowKey, drainBatch),
		vals:      make([]cpuCounts, drainBatch*ncpu),
		slots:     make([]cacheSlot, ncpu),
		zeroSlots: make([]cacheSlot, ncpu),
		pending:   make(map[FlowKey]cpuCounts),
		batchOK:   true,
		links:     make(map[int]*attachment),
		masters:   make(map[int]int),
		names:     make(map[int]string),
		connKeys:  make([]uint64, drainBatch),
		connVals:  make([]ConnState, drainBatch),
		gone:      make(map[int]int),
	}
	// tcp_retransmit_skb gained an argument in 6.17: keep the program that
	// matches the running kernel, stub the other (it may not verify).
	withErr, err := retransmitHasErr()
	if err != nil {
		return nil, err
	}
	stub := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	if withErr {
		spec.Programs["tcp_retransmit_skb_v1"].Instructions = stub
	} else {
		spec.Programs["tcp_retransmit_skb"].Instructions = stub
	}
	if err := spec.LoadAndAssign(&d.objs, nil); err != nil {
		return nil, explainLoadError(err)
	}
	d.retransmit = d.objs.TcpRetransmitSkbV1
	if withErr {
		d.retransmit = d.objs.TcpRetransmitSkb
	}
	d.tables = [2]*ebpf.Map{d.objs.FlowsA, d.objs.FlowsB}
	d.active = 0 // active_table starts at 0: flows_a
	if err := d.sampleClock(); err != nil {
		_ = d.objs.Close()
		return nil, err
	}
	return d, nil
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
			d.clock.observe(clockPair{jiffies: j, ns: ns})
			return nil
		}
	}
}

// ProgramIDs returns the kernel IDs of the loaded programs.
func (d *Datapath) ProgramIDs() ([]uint32, error) {
	var ids []uint32
	for _, p := range []*ebpf.Program{d.objs.EndpointIngress, d.objs.EndpointEgress, d.objs.UplinkIngress, d.objs.UplinkEgress} {
		info, err := p.Info()
		if err != nil {
			return nil, err
		}
		id, _ := info.ID()
		ids = append(ids, uint32(id))
	}
	return ids, nil
}

// MaxFlows is the capacity of one flow table.
func (d *Datapath) MaxFlows() uint32 { return d.maxFlows }

// Drain makes the other flow table active, waits until no program writes to
// the previous one, and appends all of its flows to dst, leaving it empty.
// Every packet counted before the switch is in the returned flows exactly
// once; packets after it are in the next Drain.
func (d *Datapath) Drain(dst []Flow) ([]Flow, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return dst, ErrClosed
	}
	next := 1 - d.active
	if err := d.objs.ActiveTable.Set(uint32(next)); err != nil {
		return dst, fmt.Errorf("switch active flow table: %w", err)
	}
	// Replacing an ARRAY_OF_MAPS entry returns only after an RCU grace
	// period, i.e. after every program that could still have read the old
	// active_table has finished (kernel maybe_wait_bpf_programs).
	if err := d.objs.DrainBarrier.Put(uint32(0), d.tables[next]); err != nil {
		return dst, fmt.Errorf("wait for programs using the previous flow table: %w", err)
	}
	idle, idleIndex := d.tables[d.active], d.active
	d.active = next
	d.drains++
	// After the barrier: no flow of the idle table is newer than this pair.
	if err := d.sampleClock(); err != nil {
		return dst, err
	}
	// Forget names of interfaces detached before the previous drain: their
	// last flows were reported by it.
	for ifindex, at := range d.gone {
		if d.drains-at > 2 {
			delete(d.gone, ifindex)
			delete(d.names, ifindex)
		}
	}
	if err := d.takeSlots(idleIndex); err != nil {
		// The table stays as it is, consistent with the slots not read
		// yet; its flows are drained, late but whole, two drains on.
		return d.appendPending(dst), err
	}
	dst, err := d.drainTable(idle, dst)
	return d.appendPending(dst), err
}

// takeSlots reads the idle table's flow_cache slots and empties them: what
// they hold goes to d.pending by flow, for the drain to add to the flows it
// reads from the table, where the programs put each slot's flow when it took
// the slot. A constant number of syscalls (two per slot index, one for a slot
// index empty on every CPU) whatever the number of CPUs: an update of a flow
// per slot and CPU would be O(CPUs²) bytes copied per drain.
func (d *Datapath) takeSlots(table int) error {
	clear(d.pending)
	// Each table has half of the entries (FLOW_CACHE_TABLE_SLOTS), contiguous.
	n := d.objs.FlowCache.MaxEntries() / 2
	for i := uint32(table) * n; i < uint32(table+1)*n; i++ {
		if err := d.objs.FlowCache.Lookup(i, d.slots); err != nil {
			return fmt.Errorf("read flow cache slot %d: %w", i, err)
		}
		used := false
		for cpu := range d.slots {
			used = used || d.slots[cpu] != cacheSlot{}
		}
		if !used {
			continue
		}
		// Zeroed before the counts move: a failure can lose a slot's
		// packets but never count them twice. Zeroing the keys too keeps
		// a slot from taking packets for a flow the drain removes.
		if err := d.objs.FlowCache.Put(i, d.zeroSlots); err != nil {
			return fmt.Errorf("empty flow cache slot %d: %w", i, err)
		}
		for cpu := range d.slots {
			s := &d.slots[cpu]
			if s.Delta.Packets == 0 {
				continue
			}
			p := d.pending[s.Key]
			d.clock.add(&p, &s.Delta)
			d.pending[s.Key] = p
		}
	}
	return nil
}

// withPending adds what the slots held for the flow key to vals, its
// per-CPU counts from the table.
func (d *Datapath) withPending(key *FlowKey, vals []cpuCounts) []cpuCounts {
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
func (d *Datapath) appendPending(dst []Flow) []Flow {
	for key, p := range d.pending {
		dst = append(dst, Flow{Key: key, Counts: d.clock.merge([]cpuCounts{p})})
	}
	clear(d.pending)
	return dst
}

func (d *Datapath) drainTable(m *ebpf.Map, dst []Flow) ([]Flow, error) {
	if d.batchOK {
		out, err := d.drainBatch(m, dst)
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return out, err
		}
		// Kernels before 5.6 have no batch operations.
		d.batchOK = false
		dst = out
	}
	return d.drainIterate(m, dst)
}

func (d *Datapath) drainBatch(m *ebpf.Map, dst []Flow) ([]Flow, error) {
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookupAndDelete(&cursor, d.keys, d.vals, nil)
		for i := 0; i < n; i++ {
			dst = append(dst, Flow{Key: d.keys[i], Counts: d.clock.merge(d.withPending(&d.keys[i], d.vals[i*d.ncpu:(i+1)*d.ncpu]))})
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return dst, nil
		}
		if err != nil {
			return dst, fmt.Errorf("drain flow table: %w", err)
		}
	}
}

// drainIterate is the fallback without batch operations. The table is idle
// (no program writes to it), so iterating and then deleting is safe.
func (d *Datapath) drainIterate(m *ebpf.Map, dst []Flow) ([]Flow, error) {
	start := len(dst)
	var key FlowKey
	perCPU := make([]cpuCounts, d.ncpu)
	it := m.Iterate()
	for it.Next(&key, &perCPU) {
		dst = append(dst, Flow{Key: key, Counts: d.clock.merge(d.withPending(&key, perCPU))})
	}
	if err := it.Err(); err != nil {
		return dst, fmt.Errorf("iterate flow table: %w", err)
	}
	for i := start; i < len(dst); i++ {
		if err := m.Delete(&dst[i].Key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return dst, fmt.Errorf("delete drained flow: %w", err)
		}
	}
	return dst, nil
}

// add adds delta to v, both counts of one flow; times compared by age
// (before the latest pair), which a wrap of the 32 bits does not disturb.
func (c *jiffyClock) add(v, delta *cpuCounts) {
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

// merge folds the per-CPU copies of one flow's counters, its times converted
// to CLOCK_MONOTONIC.
func (c *jiffyClock) merge(vals []cpuCounts) FlowCounts {
	var sum cpuCounts
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

// Counters returns the cumulative per-reason counters summed over CPUs.
func (d *Datapath) Counters() (Counters, error) {
	var out Counters
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return out, ErrClosed
	}
	var perCPU []CounterValue
	for i := 0; i < NumReasons; i++ {
		if i == int(ReasonStateChangeMissed) {
			// Not a map counter: the kernel counts the runs it skipped.
			for _, p := range []*ebpf.Program{d.objs.InetSockSetState, d.objs.TcpReceiveReset, d.objs.TcpSendReset, d.retransmit} {
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

// DetachAll detaches the programs from every interface. The flow tables stay
// readable: a Drain after DetachAll returns everything counted until then.
func (d *Datapath) DetachAll() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.detachAllLocked()
}

// detachAllLocked detaches the interface programs and the TCP links.
func (d *Datapath) detachAllLocked() error {
	var errs []error
	for ifindex := range d.links {
		errs = append(errs, d.detachLocked(ifindex))
	}
	for _, l := range d.tcpLinks {
		errs = append(errs, l.Close())
	}
	d.tcpLinks = nil
	return errors.Join(errs...)
}

// Close detaches every program and releases all kernel objects.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return errors.Join(d.detachAllLocked(), d.objs.Close())
}

// retransmitHasErr tells whether the kernel's tcp_retransmit_skb tracepoint
// has the error argument added in 6.17 (from its BTF: btf_trace_* is a
// pointer to a function whose first parameter is the context).
func retransmitHasErr() (bool, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return false, fmt.Errorf("kernel BTF: %w", err)
	}
	typ, err := spec.AnyTypeByName("btf_trace_tcp_retransmit_skb")
	if err != nil {
		return false, fmt.Errorf("tcp_retransmit_skb tracepoint in the kernel BTF: %w", err)
	}
	if td, ok := typ.(*btf.Typedef); ok {
		typ = td.Type
	}
	if ptr, ok := typ.(*btf.Pointer); ok {
		typ = ptr.Target
	}
	proto, ok := typ.(*btf.FuncProto)
	if !ok {
		return false, fmt.Errorf("btf_trace_tcp_retransmit_skb is a %T, not a function prototype", typ)
	}
	return len(proto.Params) >= 4, nil // ctx, sk, skb, err
}
