package kernel

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
)

// ErrMemory is returned by Load when the kernel cannot allocate the maps:
// they are charged to the collector's memory cgroup (the pod's limit).
var ErrMemory = errors.New("not enough memory for the BPF maps")

// MapMemory is the kernel memory of one map, as the kernel charges it
// (the memlock of its fdinfo, which is what the memory cgroup is charged).
type MapMemory struct {
	Name    string
	Entries uint32
	Bytes   uint64
}

// Memory is the kernel memory of a datapath's maps.
type Memory struct {
	CPUs  int
	Maps  []MapMemory        // largest first
	costs map[string]mapCost // a plan's model of each map (PlanMemory)
}

// Total is the sum over the maps.
func (m Memory) Total() uint64 {
	var n uint64
	for _, mm := range m.Maps {
		n += mm.Bytes
	}
	return n
}

// Bytes of the named map (0: none).
func (m Memory) Bytes(name string) uint64 {
	for _, mm := range m.Maps {
		if mm.Name == name {
			return mm.Bytes
		}
	}
	return 0
}

// Memory returns the kernel memory of every map, from the kernel's own
// accounting.
func (d *Datapath) Memory() (Memory, error) {
	out := Memory{CPUs: d.tables.ncpu}
	for name, m := range namedMaps(&d.objs.ebpfnetMaps) {
		info, err := m.Info()
		if err != nil {
			return out, fmt.Errorf("map %s info: %w", name, err)
		}
		b, _ := info.Memlock()
		out.Maps = append(out.Maps, MapMemory{Name: name, Entries: m.MaxEntries(), Bytes: b})
	}
	sortMaps(out.Maps)
	return out, nil
}

// namedMaps lists bpf2go's maps by their names in the object (its tags).
func namedMaps(maps *ebpfnetMaps) map[string]*ebpf.Map {
	out := make(map[string]*ebpf.Map)
	v, t := reflect.ValueOf(maps).Elem(), reflect.TypeOf(maps).Elem()
	for i := range t.NumField() {
		if m, ok := v.Field(i).Interface().(*ebpf.Map); ok && m != nil {
			out[t.Field(i).Tag.Get("ebpf")] = m
		}
	}
	return out
}

func sortMaps(m []MapMemory) {
	sort.Slice(m, func(i, j int) bool {
		if m[i].Bytes != m[j].Bytes {
			return m[i].Bytes > m[j].Bytes
		}
		return m[i].Name < m[j].Name
	})
}

// PlanMemory predicts the kernel memory of every map at opts' sizes, on
// this kernel and CPU count, without allocating it: each map whose size
// opts set is created at two small sizes, and the kernel's accounting of
// those is extrapolated (it is linear in the entries, with a per-CPU part
// for per-CPU maps); the other maps are created as they are.
func PlanMemory(opts Options) (Memory, error) {
	opts = opts.withDefaults()
	spec, err := loadEbpfnet()
	if err != nil {
		return Memory{}, fmt.Errorf("parse embedded BPF object: %w", err)
	}
	if err := opts.size(spec); err != nil {
		return Memory{}, err
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return Memory{}, fmt.Errorf("count possible CPUs: %w", err)
	}
	out := Memory{CPUs: ncpu, costs: make(map[string]mapCost)}
	for name, ms := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue // .bss, .rodata: a page each
		}
		c, err := planMap(ms)
		if err != nil {
			return out, fmt.Errorf("map %s: %w", name, err)
		}
		out.costs[name] = c
		out.Maps = append(out.Maps, MapMemory{Name: name, Entries: ms.MaxEntries, Bytes: c.bytes(ms.MaxEntries)})
	}
	sortMaps(out.Maps)
	return out, nil
}

// probes are the sizes a map is created at to plan: two powers of two (the
// hash maps' buckets and the ring's pages are) and one between (hash maps:
// an element per entry, a bucket per power of two). Small, because they are
// made in a memory cgroup that has just refused the maps; the ring's pages
// set its smallest sizes.
type probes struct{ lo, mid, hi uint32 }

var (
	mapProbes  = probes{1024, 1536, 2048}
	ringProbes = probes{4096, 0, 8192}
)

// mapCost is the kernel's accounting of one map as a function of its
// entries: fixed for a map opts do not size; else linear from the lo probe,
// per entry, plus (hash maps) per bucket, a power of two of the entries.
type mapCost struct {
	fixed        uint64
	sized        bool
	base, lo     float64
	elem, bucket float64
}

func (c mapCost) bytes(n uint32) uint64 {
	if !c.sized {
		return c.fixed
	}
	b := c.base + c.elem*(float64(n)-c.lo)
	if c.bucket != 0 {
		b += c.bucket * (float64(roundPow2(n)) - c.lo)
	}
	return uint64(b)
}

// planMap models the kernel's accounting of a map from two sizes (a hash
// map: three).
func planMap(ms *ebpf.MapSpec) (mapCost, error) {
	p := mapProbes
	if ms.Type == ebpf.RingBuf {
		p = ringProbes
	}
	if ms.MaxEntries <= p.hi {
		b, err := mapMemlock(ms, ms.MaxEntries)
		return mapCost{fixed: b}, err
	}
	a, err := mapMemlock(ms, p.lo)
	if err != nil {
		return mapCost{}, err
	}
	b, err := mapMemlock(ms, p.hi)
	if err != nil {
		return mapCost{}, err
	}
	lo, hi := float64(p.lo), float64(p.hi)
	c := mapCost{sized: true, base: float64(a), lo: lo, elem: float64(b-a) / (hi - lo)}
	if !isHash(ms.Type) {
		return c, nil
	}
	m, err := mapMemlock(ms, p.mid)
	if err != nil {
		return mapCost{}, err
	}
	c.elem = float64(b-m) / (hi - float64(p.mid))
	c.bucket = (float64(b-a) - c.elem*(hi-lo)) / (hi - lo)
	return c, nil
}

func isHash(t ebpf.MapType) bool {
	switch t {
	case ebpf.Hash, ebpf.PerCPUHash, ebpf.LRUHash, ebpf.LRUCPUHash:
		return true
	}
	return false
}

func roundPow2(n uint32) uint32 {
	p := uint32(1)
	for p < n {
		p <<= 1
	}
	return p
}

// mapMemlock creates ms with n entries and returns what the kernel charges.
func mapMemlock(ms *ebpf.MapSpec, n uint32) (uint64, error) {
	s := ms.Copy()
	s.MaxEntries = n
	s.Contents = nil
	s.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(s)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		return 0, err
	}
	b, ok := info.Memlock()
	if !ok {
		return 0, errors.New("the kernel reports no memlock for maps")
	}
	return b, nil
}

// checkMemory refuses, before any map is created, a load whose maps do not
// fit in what the memory cgroup (the pod's limit) has left: a load that
// reaches the limit is not always refused with ENOMEM. While a large map's
// allocation holds the cgroup at its limit, any other allocation of the
// process (a page fault of another thread) invokes the cgroup's OOM killer,
// and the agent dies without a word. Without a readable limit, nothing is
// planned.
func checkMemory(opts Options) error {
	limit, usage, limited := memoryCgroupLimit()
	if !limited {
		return nil
	}
	plan, err := PlanMemory(opts)
	if err != nil {
		return nil // the load itself says what failed (explainMemory)
	}
	if int64(plan.Total())+minLoadHeadroom <= int64(limit)-int64(usage) {
		return nil
	}
	return memoryError(plan, opts, limit, usage, true, nil)
}

// explainMemory turns a map allocation failure into an error that says how
// much the maps need, by setting, and, when the memory cgroup's limit is
// readable, which max_flows fits in what it has left. It runs only after a
// failed load: once the cgroup's usage has settled (the kernel frees the
// failed load's maps a little later), the plan's small probe maps fit.
func explainMemory(err error, opts Options) error {
	limit, usage, limited := settledMemoryCgroup()
	plan, perr := PlanMemory(opts)
	if perr != nil {
		return fmt.Errorf("%w (the collector's memory cgroup, the pod's limit, is charged for the BPF maps; planning them failed too: %w): %w",
			ErrMemory, perr, err)
	}
	return memoryError(plan, opts, limit, usage, limited, err)
}

// memoryError says what plan needs, by setting, and which max_flows fits
// with loadHeadroom to spare in a cgroup of limit with usage.
func memoryError(plan Memory, opts Options, limit, usage uint64, limited bool, cause error) error {
	flows := plan.Bytes(ebpfnetMapFlowsA) + plan.Bytes(ebpfnetMapFlowsB)
	conns := plan.Bytes(ebpfnetMapConns) + plan.Bytes(ebpfnetMapDialed) + plan.Bytes(ebpfnetMapUdpDialed) + plan.Bytes(ebpfnetMapUdpSockDialed)
	msg := fmt.Sprintf("the BPF maps need %s of kernel memory on this %d-CPU node, charged to the collector's memory cgroup "+
		"(the pod's limit): the two flow tables %s (max_flows %d), the connection maps %s (max_connections %d), the ring %s (ring_buffer_size)",
		mib(plan.Total()), plan.CPUs, mib(flows), opts.MaxFlows, mib(conns), opts.MaxConns, mib(plan.Bytes(ebpfnetMapConnEvents)))
	if limited {
		msg += fmt.Sprintf("; the cgroup's limit is %s, %s in use", mib(limit), mib(usage))
		free := int64(limit) - int64(usage) - loadHeadroom
		switch n := plan.flowsFitting(free); {
		case n >= opts.MaxFlows:
			msg += ", room for the maps by this plan: something else took the memory meanwhile"
		case n >= 1024:
			msg += fmt.Sprintf(": max_flows %d would fit (lower it by %d)", n, opts.MaxFlows-n)
		default:
			msg += ": not even a small flow table fits: lower max_connections or ring_buffer_size"
		}
	}
	msg = fmt.Sprintf("%s; or raise the memory limit (README, \"Sizing\")", msg)
	if cause == nil {
		return fmt.Errorf("%w: %s", ErrMemory, msg)
	}
	return fmt.Errorf("%w: %s: %w", ErrMemory, msg, cause)
}

// flowsFitting is the largest max_flows, a multiple of 1024, whose maps
// take at most free bytes by the plan's model (0: none).
func (m Memory) flowsFitting(free int64) uint32 {
	total := func(n uint32) int64 {
		t := int64(m.Total())
		for _, name := range []string{ebpfnetMapFlowsA, ebpfnetMapFlowsB} {
			t += int64(m.costs[name].bytes(n)) - int64(m.Bytes(name))
		}
		return t
	}
	lo, hi := uint32(0), uint32(1<<31)/1024 // in units of 1024 entries
	for lo < hi {
		if mid := lo + (hi-lo+1)/2; total(mid*1024) <= free {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo * 1024
}

// loadHeadroom is left free for the rest of a load by memoryError's
// suggestion: the programs and the verifier's state, and the Go heap of the
// load (a load took ~15 MiB more than its maps in a memory cgroup here).
// checkMemory refuses below minLoadHeadroom, so that a suggestion still
// passes in a process whose usage is a few MiB higher.
const (
	loadHeadroom    = 32 << 20
	minLoadHeadroom = 24 << 20
)

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
