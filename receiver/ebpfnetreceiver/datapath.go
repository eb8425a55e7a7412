package ebpfnetreceiver

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"go.uber.org/zap"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
)

// datapath is what the pipeline needs of the kernel side (*kernel.Datapath
// with its interface watch); tests use fakes. Every read returns model
// values.
type datapath interface {
	// StartDrain ends the interval: the flow tables switch, its drops
	// are read (Drops); DrainFlows then streams its flows.
	StartDrain() error
	// DrainFlows hands the flows of the interval StartDrain ended to fn, a
	// part at a time, after learn saw what a new pod interface needs
	// (kernel.Datapath.DrainFlows).
	DrainFlows(learn func(*flow.Flow) bool, fn func([]flow.Flow)) error
	Counters() (flow.Counters, error)
	MaxFlows() uint32
	// DetachAll stops counting; flows counted so far can still be drained.
	DetachAll() error
	// Attach starts counting: the interface programs (and their watch for
	// new interfaces) and the TCP connection programs (host-wide).
	Attach() error
	// ReadConns delivers closed connections until ctx is done.
	ReadConns(ctx context.Context, fn func(*flow.Conn)) error
	// LiveConns appends the connections open now.
	LiveConns(dst []flow.LiveConn) ([]flow.LiveConn, error)
	// UDPDialed appends the UDP destinations local sockets sent to within
	// maxIdle (before any socket-level load balancer).
	UDPDialed(dst []flow.UDPDialed, maxIdle time.Duration) ([]flow.UDPDialed, error)
	// Drops appends what the kernel dropped in the interval the last
	// StartDrain ended.
	Drops(dst []flow.Drop) []flow.Drop
	// ReadDNS delivers answered DNS lookups until ctx is done.
	ReadDNS(ctx context.Context, fn func(*flow.DNSLookup)) error
	// ExpireDNS appends the queries unanswered for longer than timeout.
	ExpireDNS(dst []flow.DNSLookup, timeout time.Duration) ([]flow.DNSLookup, error)
	Close() error
}

// loadFunc loads and attaches the kernel side. Errors of single interfaces
// after start go to onError.
type loadFunc func(cfg *Config, logger *zap.Logger, onError func(error)) (datapath, error)

// kernelDatapath is the real datapath plus its interface watch.
type kernelDatapath struct {
	*kernel.Datapath
	cfg       *Config
	logger    *zap.Logger
	onError   func(error)
	mode      kernel.AttachMode
	stopWatch context.CancelFunc
}

func (k *kernelDatapath) Attach() error {
	ctx, cancel := context.WithCancel(context.Background())
	k.stopWatch = cancel
	if err := k.WatchInterfaces(ctx, selector(k.cfg), k.onError); err != nil {
		return err
	}
	attached := k.Attached()
	k.logger.Info("ebpfnet attached", zap.String("mode", string(k.mode)), zap.Int("interfaces", len(attached)))
	if len(attached) == 0 {
		k.logger.Warn("interfaces::include matches no interface of this node yet: flows are counted from interfaces that appear and match later",
			zap.String("include", k.cfg.Interfaces.Include), zap.String("exclude", k.cfg.Interfaces.Exclude), zap.Strings("interfaces", kernel.InterfaceNames()))
	}
	// TCP connections feed the traces, the connection metrics and, through
	// the flow/connection join, the trace context and RTT of flow logs.
	if err := k.AttachTCP(); err != nil {
		return fmt.Errorf("TCP connection tracking: %w", err)
	}
	return nil
}

func (k *kernelDatapath) DetachAll() error {
	k.stop()
	return k.Datapath.DetachAll()
}

func (k *kernelDatapath) Close() error {
	k.stop()
	return k.Datapath.Close()
}

func (k *kernelDatapath) stop() {
	if k.stopWatch != nil {
		k.stopWatch()
	}
}

// loadDatapath loads the kernel side; Attach starts counting.
func loadDatapath(cfg *Config, logger *zap.Logger, onError func(error)) (datapath, error) {
	// Validate kept the sizes within 32 bits.
	d, err := kernel.Load(kernel.Options{MaxFlows: uint32(cfg.MaxFlows), MaxConns: uint32(cfg.MaxConnections),
		RingSize: uint32(cfg.RingBufferSize), CgroupPath: cfg.CgroupPath,
		PodSocketsOnly: cfg.TCPSockets == "pods",
		NoDrops:        !cfg.Drops.Enabled, MaxDrops: uint32(cfg.Drops.MaxEntries), IgnoreDrops: cfg.Drops.IgnoreReasons,
		DNSPorts: cfg.DNS.kernelPorts(), MaxDNSPending: uint32(cfg.DNS.MaxPending)})
	if err != nil {
		return nil, err
	}
	logMemory(logger, d)
	logDrops(logger, cfg, d)
	mode, fallback := d.SetMode(kernel.AttachMode(cfg.AttachMode))
	if mode == "" {
		d.Close()
		return nil, fallback
	}
	if fallback != nil {
		logger.Warn("attach mode fallback", zap.Error(fallback))
	}
	return &kernelDatapath{Datapath: d, cfg: cfg, logger: logger, onError: onError, mode: mode}, nil
}

// logDrops says whether drops are counted, and which ignored reasons this
// kernel does not have (a list written for several kernels is fine).
func logDrops(logger *zap.Logger, cfg *Config, d *kernel.Datapath) {
	switch {
	case !cfg.Drops.Enabled:
	case !d.DropsEnabled():
		logger.Warn("drops: this kernel's kfree_skb tracepoint has no drop reason (Linux 5.17+ has): ebpfnet.packets.dropped is not reported")
	case len(d.UnknownDropReasons()) > 0:
		logger.Info("drops: some reasons of drops::ignore_reasons do not exist on this kernel (ignored)",
			zap.Strings("reasons", d.UnknownDropReasons()))
	}
}

// logMemory logs the kernel memory of the maps (charged to the
// collector's memory cgroup, outside the Go heap): the total and each map.
func logMemory(logger *zap.Logger, d *kernel.Datapath) {
	mem, err := d.Memory()
	if err != nil {
		logger.Warn("read the maps' kernel memory", zap.Error(err))
		return
	}
	fields := []zap.Field{zap.Int("cpus", mem.CPUs), zap.Uint64("total_bytes", mem.Total())}
	for _, m := range mem.Maps {
		fields = append(fields, zap.Uint64(m.Name+"_bytes", m.Bytes))
	}
	logger.Info("ebpfnet kernel memory (BPF maps, charged to this container's memory limit)", fields...)
}

// selector compiles the interface selection; Config.Validate checked the
// expressions.
func selector(cfg *Config) kernel.Selector {
	compile := func(re string) *regexp.Regexp {
		if re == "" {
			return nil
		}
		return regexp.MustCompile(re)
	}
	return kernel.Selector{
		Include: compile(cfg.Interfaces.Include),
		Exclude: compile(cfg.Interfaces.Exclude),
		Uplink:  compile(cfg.Interfaces.Uplink),
	}
}
