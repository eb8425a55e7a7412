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
	// PodSocketsOnly leaves out the TCP sockets of this process's network
	// namespace (the node's, for an agent on the host network): spans and
	// connection metrics cover the sockets of pods with their own network.
	PodSocketsOnly bool
}

// Defaults of Options.
const (
	DefaultMaxConns = 65536
	DefaultRingSize = 4 << 20
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
	hostNetns  uint32        // inode of this process's network namespace
	tables     flowTables
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
	withErr, err := retransmitHasErr()
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
		conns: connections{cgroup: opts.CgroupPath}, hostNetns: OwnNetns()}
	if err := loadObjects(&d.objs, opts, withErr); err != nil {
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
	d.retransmit = d.objs.TcpRetransmitSkbV1
	if withErr {
		d.retransmit = d.objs.TcpRetransmitSkb
	}
	d.tables.maps = [2]*ebpf.Map{d.objs.FlowsA, d.objs.FlowsB} // active_table starts at 0: flows_a
	if err := d.sampleClock(); err != nil {
		return nil, err
	}
	return d, nil
}

// loadObjects loads the BPF objects at opts' sizes into objs.
func loadObjects(objs *ebpfnetObjects, opts Options, withErr bool) error {
	spec, err := loadEbpfnet()
	if err != nil {
		return fmt.Errorf("parse embedded BPF object: %w", err)
	}
	if err := opts.size(spec); err != nil {
		return err
	}
	keepRetransmit(spec, withErr)
	return spec.LoadAndAssign(objs, nil)
}

func (o Options) withDefaults() Options {
	if o.MaxConns == 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.RingSize == 0 {
		o.RingSize = DefaultRingSize
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

// keepRetransmit keeps the tcp_retransmit_skb program that matches the
// running kernel (the tracepoint gained an argument in 6.17) and stubs the
// other, which may not verify.
func keepRetransmit(spec *ebpf.CollectionSpec, withErr bool) {
	stub := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	if withErr {
		spec.Programs[ebpfnetProgTcpRetransmitSkbV1].Instructions = stub
	} else {
		spec.Programs[ebpfnetProgTcpRetransmitSkb].Instructions = stub
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
