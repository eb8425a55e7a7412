package ebpfnetreceiver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receiverhelper"
	"go.uber.org/zap"

	"github.com/ebpfnet/ebpfnet/internal/convert"
	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/k8s"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver/internal/metadata"
)

const transport = "ebpf"

// datapath is what the pipeline needs of the kernel side; tests use fakes.
type datapath interface {
	Drain(dst []kernel.Flow) ([]kernel.Flow, error)
	Counters() (kernel.Counters, error)
	InterfaceName(ifindex uint32) string
	MaxFlows() uint32
	// DetachAll stops counting; flows counted so far can still be drained.
	DetachAll() error
	// AttachTCP attaches the TCP connection programs (host-wide).
	AttachTCP() error
	// ReadConns delivers closed connections until ctx is done.
	ReadConns(ctx context.Context, fn func(*kernel.ConnEvent)) error
	// LiveConns appends the connections open now.
	LiveConns(dst []kernel.LiveConn) ([]kernel.LiveConn, error)
	// UDPDialed appends the UDP destinations local sockets sent to within
	// maxIdle (before any socket-level load balancer).
	UDPDialed(dst []kernel.UDPDialed, maxIdle time.Duration) ([]kernel.UDPDialed, error)
	Close() error
}

// loadFunc loads and attaches the kernel side. Errors of single interfaces
// after start go to onError.
type loadFunc func(cfg *Config, logger *zap.Logger, onError func(error)) (datapath, error)

// kernelDatapath is the real datapath plus its interface watch.
type kernelDatapath struct {
	*kernel.Datapath
	stopWatch context.CancelFunc
}

func (k *kernelDatapath) DetachAll() error {
	k.stopWatch()
	return k.Datapath.DetachAll()
}

func (k *kernelDatapath) Close() error {
	k.stopWatch()
	return k.Datapath.Close()
}

func loadDatapath(cfg *Config, logger *zap.Logger, onError func(error)) (datapath, error) {
	d, err := kernel.Load(kernel.Options{MaxFlows: cfg.MaxFlows, MaxConns: cfg.MaxConnections, RingSize: cfg.RingBufferSize,
		CgroupPath: cfg.CgroupPath})
	if err != nil {
		return nil, err
	}
	mode, fallback := d.SetMode(kernel.AttachMode(cfg.AttachMode))
	if mode == "" {
		d.Close()
		return nil, fallback
	}
	if fallback != nil {
		logger.Warn("attach mode fallback", zap.Error(fallback))
	}
	sel := selector(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	if err := d.WatchInterfaces(ctx, sel, onError); err != nil {
		cancel()
		d.Close()
		return nil, err
	}
	logger.Info("ebpfnet attached", zap.String("mode", string(mode)), zap.Int("interfaces", len(d.Attached())))
	return &kernelDatapath{Datapath: d, stopWatch: cancel}, nil
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

// pipeline is the one kernel pipeline of a receiver config: drain →
// model → convert → consume, every interval.
type pipeline struct {
	cfg  *Config
	set  receiver.Settings
	load loadFunc

	mu             sync.Mutex
	metrics        consumer.Metrics
	logs           consumer.Logs
	traces         consumer.Traces
	handles        int
	running        int
	onLastShutdown func()

	dp        datapath
	cancel    context.CancelFunc
	done      chan struct{}
	connsDone chan struct{}
	hostNetns uint32
	connMu    sync.Mutex
	// spareConns is the buffer the next collection hands to readConns
	// (touched only by the collecting goroutine).
	spareConns []flow.Conn
	peers      *k8s.Resolver // nil: no Kubernetes enrichment
	// Where the node's NAT sent connections: one lookup for readConns
	// (spans), one for collect (flow logs); natFailed: a lookup error was
	// logged (once for both).
	connNAT, flowNAT natLookup
	natFailed        atomic.Bool
	// TCP connections to ClusterIPs of the last collection with their
	// backends (annotateNATBackends), and the map the next one fills.
	natKnown, natNext map[natConn]netip.AddrPort
	peerMemo          *k8s.Memo    // peers' lookups of the current collection
	cgroups           *k8s.Cgroups // socket cgroup id -> pod UID, container ID
	conns             []flow.Conn  // closed since the last collect
	obs               *receiverhelper.ObsReport
	opts              convert.Options
	conv              *convert.Metrics
	cconv             *convert.ConnMetrics
	live              []flow.LiveConn
	eps               *flow.Endpoints
	kbuf              []kernel.Flow
	lbuf              []kernel.LiveConn
	ubuf              []kernel.UDPDialed
	fbuf              []flow.Flow
}

func newPipeline(cfg *Config, set receiver.Settings, load loadFunc) *pipeline {
	return &pipeline{cfg: cfg, set: set, load: load}
}

func (p *pipeline) setMetrics(next consumer.Metrics) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.metrics = next
}

func (p *pipeline) setTraces(next consumer.Traces) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.traces = next
}

func (p *pipeline) setLogs(next consumer.Logs) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.logs = next
}

func (p *pipeline) start(_ context.Context, _ component.Host) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running++
	if p.running > 1 {
		return nil
	}
	obs, err := receiverhelper.NewObsReport(receiverhelper.ObsReportSettings{
		ReceiverID: p.set.ID, Transport: transport, ReceiverCreateSettings: p.set,
	})
	if err != nil {
		p.running--
		return fmt.Errorf("ebpfnet: create obsreport: %w", err)
	}
	logger := p.set.Logger
	peers, err := startPeers(p.cfg.K8s, logger)
	if err != nil {
		p.running--
		return fmt.Errorf("ebpfnet: %w", err)
	}
	dp, err := p.load(p.cfg, logger, func(err error) { logger.Warn("interface", zap.Error(err)) })
	if err != nil {
		if peers != nil {
			peers.Stop()
		}
		p.running--
		return fmt.Errorf("ebpfnet: %w", err)
	}
	p.obs = obs
	p.dp = dp
	p.peers = peers
	p.opts = convertOptions(p.cfg, p.set)
	if peers != nil {
		p.peerMemo = k8s.NewMemo(peers)
		p.opts.Peers = p.peerMemo
	}
	p.conv = convert.NewMetrics(p.opts, time.Now())
	p.cconv = convert.NewConnMetrics(p.opts, time.Now())
	p.eps = flow.NewEndpoints()
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.done = make(chan struct{})
	p.connsDone = make(chan struct{})
	// TCP connections feed the traces, the connection metrics and, through
	// the flow/connection join, the trace context and RTT of flow logs.
	if err := dp.AttachTCP(); err != nil {
		cancel()
		dp.Close()
		if peers != nil {
			peers.Stop()
		}
		p.running--
		return fmt.Errorf("ebpfnet: TCP connection tracking: %w", err)
	}
	p.hostNetns = kernel.OwnNetns()
	p.cgroups = nil
	if root := p.cfg.CgroupPath; root != "" {
		p.cgroups = k8s.NewCgroups(root)
	} else if root, err := kernel.Cgroup2Root(); err == nil {
		p.cgroups = k8s.NewCgroups(root)
	}
	go p.readConns(ctx)
	go p.run(ctx)
	return nil
}

// readConns collects closed connections until the pipeline stops.
func (p *pipeline) readConns(ctx context.Context) {
	defer close(p.connsDone)
	offset, offsetAt := kernel.WallClockOffset(), time.Now()
	err := p.dp.ReadConns(ctx, func(e *kernel.ConnEvent) {
		if time.Since(offsetAt) > time.Second {
			offset, offsetAt = kernel.WallClockOffset(), time.Now()
		}
		c := flow.ConnFromKernel(e, offset, p.hostNetns)
		if p.cgroups != nil && e.CgroupId != 0 {
			id := p.cgroups.Lookup(e.CgroupId)
			c.PodUID, c.ContainerID = id.PodUID, id.ContainerID
		}
		p.findBackend(&c)
		p.connMu.Lock()
		p.conns = append(p.conns, c)
		p.connMu.Unlock()
	})
	p.connNAT.close()
	if err != nil {
		p.set.Logger.Error("read TCP connection events", zap.Error(err))
	}
}

// release ends one handle; the last started one stops the pipeline.
func (p *pipeline) release(ctx context.Context, started bool) error {
	p.mu.Lock()
	p.handles--
	last := p.handles == 0
	var stop bool
	if started {
		p.running--
		stop = p.running == 0
	}
	p.mu.Unlock()
	var err error
	if stop {
		err = p.stop(ctx)
	}
	if last && p.onLastShutdown != nil {
		p.onLastShutdown()
	}
	return err
}

func (p *pipeline) stop(ctx context.Context) error {
	p.cancel()
	for _, ch := range []chan struct{}{p.done, p.connsDone} {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("ebpfnet: shutdown: %w", ctx.Err())
		}
	}
	if p.peers != nil {
		p.peers.Stop()
		p.peers = nil
	}
	return p.dp.Close()
}

func (p *pipeline) run(ctx context.Context) {
	defer close(p.done)
	defer p.flowNAT.close()
	ticker := time.NewTicker(p.cfg.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			// Stop counting, then emit everything counted since the last
			// interval: no packet falls between the last drain and detach.
			if err := p.dp.DetachAll(); err != nil {
				p.set.Logger.Warn("detach", zap.Error(err))
			}
			p.collect()
			return
		case <-ticker.C:
			p.collect()
		}
	}
}

// collect drains one interval and hands it to the consumers.
func (p *pipeline) collect() {
	logger := p.set.Logger
	offset := kernel.WallClockOffset()
	now := time.Now()
	flows, err := p.dp.Drain(p.kbuf[:0])
	p.kbuf = flows
	if err != nil {
		logger.Error("drain flow table", zap.Error(err))
		if errors.Is(err, kernel.ErrClosed) {
			return
		}
	}
	counters, err := p.dp.Counters()
	if err != nil {
		logger.Error("read counters", zap.Error(err))
	}
	batch := flow.Batch{Time: now, Counters: counters, TableCapacity: p.dp.MaxFlows(), Flows: p.fbuf[:0]}
	for i := range flows {
		batch.Flows = append(batch.Flows, flow.FromKernel(&flows[i], offset, p.dp.InterfaceName))
	}
	p.fbuf = batch.Flows
	p.eps.Resolve(&batch)

	p.mu.Lock()
	metrics, logs, traces := p.metrics, p.logs, p.traces
	p.mu.Unlock()
	if p.peerMemo != nil {
		p.peerMemo.Reset()
	}
	p.connMu.Lock()
	conns := p.conns
	p.conns = p.spareConns[:0]
	p.connMu.Unlock()
	// Nothing keeps a reference into conns after this collection (the
	// converters copy what they keep): it becomes the next spare buffer, so
	// a steady connection rate appends without growing a slice each time.
	defer func() { p.spareConns = conns }()
	live, err := p.dp.LiveConns(p.lbuf[:0])
	p.lbuf = live
	if err != nil && !errors.Is(err, kernel.ErrClosed) {
		logger.Error("read open connections", zap.Error(err))
	}
	if logs != nil {
		flow.NewConnIndex(live, conns).Annotate(&batch)
		p.annotateUDPDialed(&batch)
		p.annotateNATBackends(&batch)
	}
	ctx := context.Background()
	if metrics != nil {
		md := p.conv.Convert(&batch)
		p.live = flow.LiveFromKernel(live, p.hostNetns, p.live[:0])
		p.cconv.Add(now, p.live, conns)
		p.cconv.AppendTo(md, now)
		if n := md.DataPointCount(); n > 0 {
			opCtx := p.obs.StartMetricsOp(ctx)
			err := metrics.ConsumeMetrics(opCtx, md)
			p.obs.EndMetricsOp(opCtx, transport, n, err)
			if err != nil {
				logger.Error("consume metrics", zap.Error(err))
			}
		}
	}
	if traces != nil && len(conns) > 0 {
		td := convert.Traces(p.opts, conns)
		n := td.SpanCount()
		opCtx := p.obs.StartTracesOp(ctx)
		err := traces.ConsumeTraces(opCtx, td)
		p.obs.EndTracesOp(opCtx, transport, n, err)
		if err != nil {
			logger.Error("consume traces", zap.Error(err))
		}
	}
	if logs != nil {
		ld := convert.Logs(p.opts, &batch)
		if n := ld.LogRecordCount(); n > 0 {
			opCtx := p.obs.StartLogsOp(ctx)
			err := logs.ConsumeLogs(opCtx, ld)
			p.obs.EndLogsOp(opCtx, transport, n, err)
			if err != nil {
				logger.Error("consume logs", zap.Error(err))
			}
		}
	}
}

// udpDialedIdle is how long a UDP destination stays known after its
// socket's last send to it: longer than any interval, so the flows of the
// interval that saw the send still join it.
const udpDialedIdle = 2 * time.Minute

// annotateUDPDialed names, on UDP flows a socket-level load balancer
// rewrote, the Service the local socket sent to (Kubernetes only: the join
// needs the Service's endpoints).
func (p *pipeline) annotateUDPDialed(b *flow.Batch) {
	if p.peerMemo == nil {
		return
	}
	dialed, err := p.dp.UDPDialed(p.ubuf[:0], max(udpDialedIdle, 2*p.cfg.Interval))
	p.ubuf = dialed
	if err != nil {
		if !errors.Is(err, kernel.ErrClosed) {
			p.set.Logger.Error("read UDP destinations", zap.Error(err))
		}
		return
	}
	flow.NewDialedIndex(dialed).Annotate(b, p.peerMemo.Backs)
}

// nodeName resolves k8s.node.name: config, then K8S_NODE_NAME, then host name.
func nodeName(cfg *Config) string {
	if cfg.NodeName != "" {
		return cfg.NodeName
	}
	if n := os.Getenv("K8S_NODE_NAME"); n != "" {
		return n
	}
	n, _ := os.Hostname()
	return n
}

func flowAttrs[K ~string](keys []K) convert.FlowAttrs {
	var a convert.FlowAttrs
	for _, k := range keys {
		a |= convert.FlowAttrsByName[string(k)]
	}
	return a
}

func convertOptions(cfg *Config, set receiver.Settings) convert.Options {
	m := cfg.Metrics
	opts := convert.Options{
		NodeName:     nodeName(cfg),
		ScopeName:    metadata.ScopeName,
		ScopeVersion: set.BuildInfo.Version,
		Resource: convert.ResourceOptions{
			K8sNodeName: cfg.ResourceAttributes.K8sNodeName.Enabled,
			K8sPodIP:    cfg.ResourceAttributes.K8sPodIP.Enabled,
			K8sPodUID:   cfg.ResourceAttributes.K8sPodUID.Enabled,
			ContainerID: cfg.ResourceAttributes.ContainerID.Enabled,
		},
		FlowIO:             convert.MetricOptions{Enabled: m.EbpfnetFlowIo.Enabled, Attrs: flowAttrs(m.EbpfnetFlowIo.EnabledAttributes)},
		FlowPackets:        convert.MetricOptions{Enabled: m.EbpfnetFlowPackets.Enabled, Attrs: flowAttrs(m.EbpfnetFlowPackets.EnabledAttributes)},
		Uncounted:          m.EbpfnetPacketsUncounted.Enabled,
		ConnsUnreported:    m.EbpfnetConnectionsUnreported.Enabled,
		StateChangesMissed: m.EbpfnetTCPStateChangesMissed.Enabled,
		TableFlows:         m.EbpfnetFlowTableFlows.Enabled,
		TableCapacity:      m.EbpfnetFlowTableCapacity.Enabled,
		SeriesEvicted:      m.EbpfnetSeriesEvicted.Enabled,
		FlowEvents:         cfg.Events.EbpfnetFlow.Enabled,
		SeriesIdleTimeout:  cfg.SeriesIdleTimeout,
		MaxSeries:          cfg.MaxSeries,
	}
	if cfg.Temporality == "delta" {
		opts.Temporality = convert.Delta
	}
	return opts
}
