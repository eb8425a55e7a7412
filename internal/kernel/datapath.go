package kernel

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// ErrClosed is returned by a Datapath that was closed.
var ErrClosed = errors.New("datapath closed")

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
	// MaxDrops is the capacity of each of the two drop tables (0: 16384).
	MaxDrops uint32
	// IgnoreDrops are the drop reasons not reported, by the kernel's names
	// (NOT_SPECIFIED, TCP_CLOSE, ...): normal teardown. Names this kernel
	// does not have are ignored (Datapath.UnknownDropReasons).
	IgnoreDrops []string
	// NoDrops leaves the drop program out.
	NoDrops bool
	// DNSPorts are the ports DNS is parsed on, at most DNSMaxPorts (nil:
	// 53; empty, non-nil: no DNS).
	DNSPorts []uint16
	// MaxDNSPending is the capacity of the DNS query map (0: 8192).
	MaxDNSPending uint32
	// PodSocketsOnly leaves out the TCP sockets of this process's network
	// namespace (the node's, for an agent on the host network): spans and
	// connection metrics cover the sockets of pods with their own network.
	PodSocketsOnly bool
}

// Defaults of Options.
const (
	DefaultMaxConns = 65536
	DefaultRingSize = 4 << 20
	DefaultMaxDrops = 16384
	DefaultMaxDNS   = 8192
	// DNSMaxPorts is how many DNS ports the programs compare.
	DNSMaxPorts = 4
)

// Datapath is the loaded kernel pipeline. Its state is split by concern:
// the flow tables (flowtable.go), the interface attachments (attach.go) and
// the TCP connections (conns.go), all guarded by mu. Its methods may be
// called from different goroutines.
type Datapath struct {
	mu         sync.Mutex
	closed     bool
	objs       ebpfnetObjects
	retransmit *ebpf.Program // the tcp_retransmit_skb program for this kernel
	sendReset  *ebpf.Program // the tcp_send_reset program for this kernel
	kfreeSkb   *ebpf.Program // the kfree_skb program for this kernel; nil: no drops
	variants   variants
	reasons    *Reasons
	unknown    []string // IgnoreDrops names this kernel does not have
	hostNetns  uint32   // inode of this process's network namespace
	tables     flowTables
	drops      dropTables
	ifaces     attachments
	conns      connections
}

// Load checks privileges, loads the BPF objects into the kernel and returns
// the Datapath. Nothing is attached yet.
func Load(opts Options) (_ *Datapath, err error) {
	if opts.MaxFlows == 0 {
		return nil, errors.New("max flows must be positive")
	}
	opts = opts.withDefaults()
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; a no-op after.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock rlimit for BPF maps: %w", err)
	}
	v, err := probeVariants(opts.NoDrops)
	if err != nil {
		return nil, err
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count possible CPUs: %w", err)
	}
	if err := checkMemory(opts); err != nil {
		return nil, err
	}
	d := &Datapath{tables: newFlowTables(opts.MaxFlows, ncpu), ifaces: newAttachments(),
		conns: connections{cgroup: opts.CgroupPath}, hostNetns: OwnNetns(), variants: v, drops: newDropTables(ncpu)}
	if d.reasons, err = LoadReasons(); err != nil && v.drops {
		return nil, err
	}
	if err := loadObjects(&d.objs, opts, v, d); err != nil {
		if errors.Is(err, unix.ENOMEM) {
			err = explainMemory(err, opts)
		}
		return nil, explainLoadError(err)
	}
	defer func() {
		if err != nil {
			_ = d.objs.Close()
		}
	}()
	d.retransmit, d.sendReset = d.objs.TcpRetransmitSkbV1, d.objs.TcpSendResetV1
	if v.retransmitErr {
		d.retransmit = d.objs.TcpRetransmitSkb
	}
	if v.resetReason {
		d.sendReset = d.objs.TcpSendReset
	}
	switch {
	case !v.drops:
	case v.dropRxSk:
		d.kfreeSkb = d.objs.KfreeSkb
	default:
		d.kfreeSkb = d.objs.KfreeSkbV1
	}
	d.tables.maps = [2]*ebpf.Map{d.objs.FlowsA, d.objs.FlowsB} // active_table starts at 0: flows_a
	d.drops.maps, d.drops.cache = [2]*ebpf.Map{d.objs.DropsA, d.objs.DropsB}, d.objs.DropCache
	if err := d.sampleClock(); err != nil {
		return nil, err
	}
	return d, nil
}

// loadObjects loads the BPF objects at opts' sizes, with the program
// variants of this kernel, into d.objs.
func loadObjects(objs *ebpfnetObjects, opts Options, v variants, d *Datapath) error {
	spec, err := loadEbpfnet()
	if err != nil {
		return fmt.Errorf("parse embedded BPF object: %w", err)
	}
	if err := opts.size(spec); err != nil {
		return err
	}
	if err := spec.Variables[ebpfnetVarHostNetns].Set(d.hostNetns); err != nil {
		return fmt.Errorf("set host_netns: %w", err)
	}
	if d.reasons != nil {
		bits, unknown, err := d.reasons.ignoreBitmap(opts.IgnoreDrops)
		if err != nil {
			return err
		}
		d.unknown = unknown
		if err := spec.Variables[ebpfnetVarDropIgnored].Set(bits); err != nil {
			return fmt.Errorf("set drop_ignored: %w", err)
		}
	}
	v.keep(spec)
	return spec.LoadAndAssign(objs, nil)
}

func (o Options) withDefaults() Options {
	if o.MaxConns == 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.RingSize == 0 {
		o.RingSize = DefaultRingSize
	}
	if o.MaxDrops == 0 {
		o.MaxDrops = DefaultMaxDrops
	}
	if o.MaxDNSPending == 0 {
		o.MaxDNSPending = DefaultMaxDNS
	}
	if o.DNSPorts == nil {
		o.DNSPorts = []uint16{53}
	}
	return o
}

// size sets the maps' capacities from the options.
func (o Options) size(spec *ebpf.CollectionSpec) error {
	for _, name := range []string{ebpfnetMapFlowsA, ebpfnetMapFlowsB} {
		spec.Maps[name].MaxEntries = o.MaxFlows
	}
	for _, name := range []string{ebpfnetMapConns, ebpfnetMapDialed, ebpfnetMapUdpDialed, ebpfnetMapUdpSockDialed} {
		spec.Maps[name].MaxEntries = o.MaxConns
	}
	spec.Maps[ebpfnetMapConnEvents].MaxEntries = o.RingSize
	for _, name := range []string{ebpfnetMapDropsA, ebpfnetMapDropsB} {
		spec.Maps[name].MaxEntries = o.MaxDrops
	}
	spec.Maps[ebpfnetMapDnsPending].MaxEntries = o.MaxDNSPending
	if len(o.DNSPorts) > DNSMaxPorts {
		return fmt.Errorf("at most %d DNS ports, got %d", DNSMaxPorts, len(o.DNSPorts))
	}
	var ports [DNSMaxPorts]uint16
	copy(ports[:], o.DNSPorts)
	if err := spec.Variables[ebpfnetVarDnsPorts].Set(ports); err != nil {
		return fmt.Errorf("set dns_ports: %w", err)
	}
	// Wake the reader only when a quarter of the ring is in use; it also
	// reads every connReadPeriod (ReadConns).
	if err := spec.Variables[ebpfnetVarRingWakeupBytes].Set(uint64(o.RingSize / 4)); err != nil {
		return fmt.Errorf("set ring_wakeup_bytes: %w", err)
	}
	if o.PodSocketsOnly {
		own := OwnNetns()
		if own == 0 {
			return errors.New("tcp_sockets pods: cannot read this process's network namespace (/proc/self/ns/net)")
		}
		if err := spec.Variables[ebpfnetVarUntracedNetns].Set(own); err != nil {
			return fmt.Errorf("set untraced_netns: %w", err)
		}
	}
	return nil
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
func (d *Datapath) MaxFlows() uint32 { return d.tables.maxFlows }

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
	for ifindex := range d.ifaces.links {
		errs = append(errs, d.detachLocked(ifindex))
	}
	for _, l := range d.conns.links {
		errs = append(errs, l.Close())
	}
	d.conns.links = nil
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
	err := errors.Join(d.detachAllLocked(), d.objs.Close())
	d.ifaces.owner.close() // after our filters are gone: they are not stale before
	return err
}

// variants are the programs whose tracepoint's arguments differ between
// kernels: the one matching the running kernel's BTF is loaded, the other
// stubbed (it may not verify).
type variants struct {
	retransmitErr bool // tcp_retransmit_skb has err (6.17+)
	resetReason   bool // tcp_send_reset has the reason (6.10+)
	drops         bool // kfree_skb has the reason (5.17+) and drops are wanted
	dropRxSk      bool // kfree_skb has rx_sk (6.11+)
}

func probeVariants(noDrops bool) (variants, error) {
	var v variants
	n, err := tracepointParams("tcp_retransmit_skb")
	if err != nil {
		return v, err
	}
	v.retransmitErr = n >= 4 // ctx, sk, skb, err
	if n, err = tracepointParams("tcp_send_reset"); err != nil {
		return v, err
	}
	v.resetReason = n >= 4 // ctx, sk, skb, reason
	if !noDrops {
		if n, err = tracepointParams("kfree_skb"); err != nil {
			return v, err
		}
		v.drops = n >= 4 // ctx, skb, location, reason
		v.dropRxSk = n >= 5
	}
	return v, nil
}

// keep stubs the variants this kernel does not match.
func (v variants) keep(spec *ebpf.CollectionSpec) {
	stub := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	for prog, drop := range map[string]bool{
		ebpfnetProgTcpRetransmitSkbV1: v.retransmitErr, ebpfnetProgTcpRetransmitSkb: !v.retransmitErr,
		ebpfnetProgTcpSendResetV1: v.resetReason, ebpfnetProgTcpSendReset: !v.resetReason,
		ebpfnetProgKfreeSkbV1: !v.drops || v.dropRxSk, ebpfnetProgKfreeSkb: !v.drops || !v.dropRxSk,
	} {
		if drop {
			spec.Programs[prog].Instructions = stub
		}
	}
}

// tracepointParams is the number of parameters of a tracepoint's BTF
// prototype, the context included (btf_trace_* is a pointer to a function
// whose first parameter is the context).
func tracepointParams(name string) (int, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return 0, fmt.Errorf("kernel BTF: %w", err)
	}
	typ, err := spec.AnyTypeByName("btf_trace_" + name)
	if err != nil {
		return 0, fmt.Errorf("%s tracepoint in the kernel BTF: %w", name, err)
	}
	if td, ok := typ.(*btf.Typedef); ok {
		typ = td.Type
	}
	if ptr, ok := typ.(*btf.Pointer); ok {
		typ = ptr.Target
	}
	proto, ok := typ.(*btf.FuncProto)
	if !ok {
		return 0, fmt.Errorf("btf_trace_%s is a %T, not a function prototype", name, typ)
	}
	return len(proto.Params), nil
}

// PerCPURead is a per-CPU map an interval reads: Lookups entries (and
// writes back as many when all were used), each copying every possible
// CPU's ValueSize bytes.
type PerCPURead struct {
	Name      string
	Lookups   int
	ValueSize int
}

// PerCPUReads are what one interval (Drain, Drops, Counters) reads of the
// per-CPU maps: the cost that grows with the CPU count (the sizing model
// of docs/BENCHMARKS.md, "Large nodes").
func (d *Datapath) PerCPUReads() []PerCPURead {
	return []PerCPURead{
		{"flow_cache", int(d.objs.FlowCache.MaxEntries() / 2), int(d.objs.FlowCache.ValueSize())},
		{"drop_cache", int(d.objs.DropCache.MaxEntries() / 2), int(d.objs.DropCache.ValueSize())},
		{"counters", int(flow.NumReasons), int(d.objs.Counters.ValueSize())},
	}
}
