package ebpfnetreceiver

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receiverhelper"
	"go.uber.org/zap"

	"github.com/ebpfnet/ebpfnet/internal/chunk"
	"github.com/ebpfnet/ebpfnet/internal/convert"
	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
)

const transport = "ebpf"

// pipeline is the one kernel pipeline of a receiver config. It only wires
// the stages, every interval: read (internal/kernel, decoding into the
// model) → join (internal/flow, with lookups from internal/k8s and the
// node's conntrack) → convert (internal/convert) → consume. Closed TCP
// connections are read, and joined, as they arrive.
type pipeline struct {
	cfg  *Config
	set  receiver.Settings
	load loadFunc

	mu   sync.Mutex // guards next: set before Start, read by collect
	next consumers

	// Set by Start.
	obs         *receiverhelper.ObsReport
	dp          datapath
	joins       *joins
	conv        *convert.Converter
	closed      handoff[flow.Conn]
	dns         handoff[flow.DNSLookup]
	batch       flow.Batch  // the collection's buffers, reused
	logFlows    []flow.Flow // logCalls' buffer, reused
	cancel      context.CancelFunc
	wg          sync.WaitGroup // run
	cancelConns context.CancelFunc
	connsWG     sync.WaitGroup // readConns
	lease       *countLease
	counting    atomic.Bool // attached: this agent holds the lease

	finishOnce sync.Once // the first Shutdown's final collection
	finishErr  error
}

// consumers are the signal pipelines that name the receiver (nil: none).
type consumers struct {
	metrics consumer.Metrics
	logs    consumer.Logs
	traces  consumer.Traces
}

func newPipeline(cfg *Config, set receiver.Settings, load loadFunc) *pipeline {
	return &pipeline{cfg: cfg, set: set, load: load}
}

func (p *pipeline) setMetrics(next consumer.Metrics) {
	p.setNext(func(c *consumers) { c.metrics = next })
}
func (p *pipeline) setLogs(next consumer.Logs)     { p.setNext(func(c *consumers) { c.logs = next }) }
func (p *pipeline) setTraces(next consumer.Traces) { p.setNext(func(c *consumers) { c.traces = next }) }

func (p *pipeline) setNext(set func(*consumers)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	set(&p.next)
}

func (p *pipeline) consumers() consumers {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next
}

// Start loads and attaches the kernel side and starts the goroutines. On
// an error everything started so far is undone, in reverse order.
func (p *pipeline) Start(context.Context, component.Host) (err error) {
	var undo []func()
	defer func() {
		for i := len(undo) - 1; err != nil && i >= 0; i-- {
			undo[i]()
		}
	}()
	logger := p.set.Logger
	if p.obs, err = receiverhelper.NewObsReport(receiverhelper.ObsReportSettings{
		ReceiverID: p.set.ID, Transport: transport, ReceiverCreateSettings: p.set,
	}); err != nil {
		return fmt.Errorf("ebpfnet: create obsreport: %w", err)
	}
	peers, err := startPeers(p.cfg.K8s, logger)
	if err != nil {
		return fmt.Errorf("ebpfnet: %w", err)
	}
	if peers != nil {
		undo = append(undo, peers.Stop)
	}
	if p.dp, err = p.load(p.cfg, logger, func(err error) { logger.Warn("interface", zap.Error(err)) }); err != nil {
		return fmt.Errorf("ebpfnet: %w", err)
	}
	undo = append(undo, func() { _ = p.dp.Close() })
	p.lease = newCountLease(p.cfg)
	held, err := p.lease.tryTake()
	if err != nil {
		return fmt.Errorf("ebpfnet: %w", err)
	}
	undo = append(undo, p.lease.release)
	if held {
		if err := p.dp.Attach(); err != nil {
			return fmt.Errorf("ebpfnet: %w", err)
		}
		p.counting.Store(true)
	}
	schema, err := Schema()
	if err != nil {
		return fmt.Errorf("ebpfnet: %w", err)
	}
	p.joins = newJoins(p.cfg, peers, p.consumers().logs != nil, logger)
	opts := convertOptions(p.cfg, p.set, p.joins.peerResolver())
	opts.Schema = schema
	p.conv = convert.NewConverter(opts, time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	connsCtx, cancelConns := context.WithCancel(context.Background())
	p.cancel, p.cancelConns = cancel, cancelConns
	p.wg.Add(1)
	p.connsWG.Add(2)
	go p.readConns(connsCtx)
	go p.readDNS(connsCtx)
	go p.run(ctx)
	if !held {
		logger.Info("another ebpfnet agent counts this node's interfaces (a rolling update's overlap): this one counts from the moment it stops")
		p.wg.Add(1)
		go p.takeOver(ctx)
	}
	return nil
}

// takeOver waits for the lease, then attaches: from then on this agent
// counts.
func (p *pipeline) takeOver(ctx context.Context) {
	defer p.wg.Done()
	if err := p.lease.wait(ctx); err != nil {
		return // stopped while waiting
	}
	if err := p.dp.Attach(); err != nil {
		p.set.Logger.Error("ebpfnet: attach after the previous agent stopped: not counting", zap.Error(err))
		return
	}
	p.counting.Store(true)
	p.set.Logger.Info("ebpfnet: the previous agent stopped, this one counts")
}

// Shutdown of one signal's handle: the first stops counting and hands
// every signal what was counted since the last interval (each signal's
// consumers stop only after its own receiver handle, so all still run);
// the last releases the kernel side.
func (p *pipeline) Shutdown(ctx context.Context, last bool) error {
	if p.cancel == nil {
		return nil // never started
	}
	if err := p.finish(ctx); err != nil {
		return err
	}
	if !last {
		return nil
	}
	p.joins.stop()
	return p.dp.Close()
}

// finish, once: stop the interval loop, detach (nothing is counted after
// this), read the ring's last closed connections, then the final
// collection.
func (p *pipeline) finish(ctx context.Context) error {
	p.finishOnce.Do(func() {
		p.cancel()
		if p.finishErr = wait(ctx, &p.wg); p.finishErr != nil {
			return
		}
		if err := p.dp.DetachAll(); err != nil {
			p.set.Logger.Warn("detach", zap.Error(err))
		}
		p.lease.release() // a waiting agent attaches now
		p.cancelConns()
		if p.finishErr = wait(ctx, &p.connsWG); p.finishErr != nil {
			return
		}
		p.collect()
	})
	return p.finishErr
}

func wait(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ebpfnet: shutdown: %w", ctx.Err())
	}
}

// readConns collects closed connections, joined, until the pipeline stops.
func (p *pipeline) readConns(ctx context.Context) {
	defer p.connsWG.Done()
	defer p.joins.conns.close()
	err := p.dp.ReadConns(ctx, func(c *flow.Conn) {
		p.joins.conns.Join(c)
		p.closed.add(c)
	})
	if err != nil {
		p.set.Logger.Error("read TCP connection events", zap.Error(err))
	}
}

// readDNS collects answered DNS lookups until the pipeline stops.
func (p *pipeline) readDNS(ctx context.Context) {
	defer p.connsWG.Done()
	if err := p.dp.ReadDNS(ctx, p.dns.add); err != nil {
		p.set.Logger.Error("read DNS lookups", zap.Error(err))
	}
}

// run collects every interval until the pipeline stops; the final drain
// is finish's.
func (p *pipeline) run(ctx context.Context) {
	defer p.wg.Done()
	ticker := time.NewTicker(p.cfg.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			p.collect()
		}
	}
}

// collect reads one interval, joins it and hands it to the consumers;
// nothing while another agent counts (see countLease). The flows stream:
// each part of the drained table is joined, counted in the metrics and
// handed over as flow log records before the next is read, so memory does
// not grow with the flows of an interval. Nothing keeps a reference into
// the batch's closed connections after it (the converters copy what they
// keep): the buffer is reused, so a steady connection rate appends without
// growing a slice.
func (p *pipeline) collect() {
	if !p.counting.Load() {
		return
	}
	next := p.consumers()
	b := &p.batch
	if !p.read(b, next.logs != nil) {
		return
	}
	s := p.joins.begin(b)
	logs := p.newLogCalls(next.logs, b.Time)
	record := func(flows []flow.Flow) {
		if next.metrics != nil {
			p.conv.RecordFlows(flows, b.Time)
		}
		logs.add(flows)
	}
	if err := p.dp.DrainFlows(s.Learn, func(part []flow.Flow) { record(s.Flows(part)) }); err != nil {
		p.set.Logger.Error("drain flow table", zap.Error(err))
	}
	record(s.End())
	logs.end(b)
	if next.metrics != nil {
		p.emitMetrics(next.metrics, p.conv.Metrics(b))
	}
	if next.traces != nil {
		p.emitTraces(next.traces, b.Closed)
	}
	p.closed.recycle(b.Closed)
	p.dns.recycle(b.DNS)
}

// read switches the flow tables and fills b with the rest of the interval
// from the kernel side (its flows are DrainFlows'); false when the datapath
// is closed.
func (p *pipeline) read(b *flow.Batch, perFlow bool) bool {
	logger := p.set.Logger
	b.Time = time.Now()
	b.Flows = nil
	var err error
	if err = p.dp.StartDrain(); err != nil {
		logger.Error("drain flow table", zap.Error(err))
		if errors.Is(err, kernel.ErrClosed) {
			return false
		}
	}
	if b.Counters, err = p.dp.Counters(); err != nil {
		logger.Error("read counters", zap.Error(err))
	}
	b.TableCapacity = p.dp.MaxFlows()
	b.Drops = p.dp.Drops(b.Drops[:0])
	b.DNS = p.dns.take()
	if p.cfg.DNS.Enabled {
		if b.DNS, err = p.dp.ExpireDNS(b.DNS, p.cfg.DNS.Timeout); err != nil && !errors.Is(err, kernel.ErrClosed) {
			logger.Error("expire DNS queries", zap.Error(err))
		}
	}
	b.Closed = p.closed.take()
	if b.Live, err = p.dp.LiveConns(b.Live[:0]); err != nil && !errors.Is(err, kernel.ErrClosed) {
		logger.Error("read open connections", zap.Error(err))
	}
	b.UDPDialed = b.UDPDialed[:0]
	if perFlow && p.joins.wantUDPDialed() {
		// A destination stays known longer than any interval, so the
		// flows of the interval that saw the send still join it.
		b.UDPDialed, err = p.dp.UDPDialed(b.UDPDialed, max(udpDialedIdle, 2*p.cfg.Interval))
		if err != nil && !errors.Is(err, kernel.ErrClosed) {
			logger.Error("read UDP destinations", zap.Error(err))
		}
	}
	return true
}

// udpDialedIdle is how long a UDP destination stays known after its
// socket's last send to it.
const udpDialedIdle = 2 * time.Minute

// The emits hand one signal's collection over in calls of at most
// max_records_per_call records, each counted by the receiver's obsreport.
// Flow records and spans are converted a call's worth at a time, so that
// an interval of a full flow table is never all in pdata at once; the
// metrics (bounded by max_series) are cut after the conversion. A refused
// call (a memory limiter, a full queue downstream) is counted as refused
// there and does not stop the others; one line is logged per collection
// and signal.

func (p *pipeline) emitMetrics(next consumer.Metrics, md pmetric.Metrics) {
	var r refusals
	_ = chunk.Metrics(md, p.cfg.MaxRecordsPerCall, func(md pmetric.Metrics) error {
		n := md.DataPointCount()
		if n == 0 {
			return nil
		}
		opCtx := p.obs.StartMetricsOp(context.Background())
		err := next.ConsumeMetrics(opCtx, md)
		p.obs.EndMetricsOp(opCtx, transport, n, err)
		r.add(n, err)
		return nil
	})
	r.log(p.set.Logger, "metrics")
}

// logCalls hands an interval's flow log records over as its flows arrive,
// max_records_per_call flows a call: whole calls straight from a part, the
// rest of a part copied into a buffer that the next part fills; the drop
// records no flow record carries go with the last call, the DNS lookups in
// calls of their own. With
// max_records_per_call 0 (one call) the interval's flows are all held.
type logCalls struct {
	p     *pipeline
	next  consumer.Logs // nil: no logs pipeline
	time  time.Time
	per   int
	flows []flow.Flow
	r     refusals
}

func (p *pipeline) newLogCalls(next consumer.Logs, at time.Time) *logCalls {
	return &logCalls{p: p, next: next, time: at, per: p.cfg.MaxRecordsPerCall, flows: p.logFlows[:0]}
}

func (l *logCalls) add(flows []flow.Flow) {
	if l.next == nil {
		return
	}
	if l.per == 0 {
		l.flows = append(l.flows, flows...)
		return
	}
	if len(l.flows) > 0 { // the call begun in an earlier part first
		n := min(len(flows), l.per-len(l.flows))
		l.flows = append(l.flows, flows[:n]...)
		if flows = flows[n:]; len(l.flows) < l.per {
			return
		}
		l.flush(nil)
	}
	for ; len(flows) >= l.per; flows = flows[l.per:] { // whole calls straight from the part
		l.consume(&flow.Batch{Time: l.time, Flows: flows[:l.per]})
	}
	l.flows = append(l.flows, flows...)
}

// flush converts and hands over the buffered flows, with drops.
func (l *logCalls) flush(drops []flow.Drop) {
	l.consume(&flow.Batch{Time: l.time, Flows: l.flows, Drops: drops})
	clear(l.flows) // no drops, names or policies kept alive
	l.flows = l.flows[:0]
}

func (l *logCalls) consume(part *flow.Batch) {
	p := l.p
	ld := p.conv.Logs(part)
	n := ld.LogRecordCount()
	if n == 0 {
		return
	}
	opCtx := p.obs.StartLogsOp(context.Background())
	err := l.next.ConsumeLogs(opCtx, ld)
	p.obs.EndLogsOp(opCtx, transport, n, err)
	l.r.add(n, err)
}

// end hands over the rest: the last flows with the drops, the DNS lookups.
// The drops no flow carries are records of their own, bounded by the calls
// as the flows are: a flood of drops (a flow table full of new flows) is
// thousands of them.
func (l *logCalls) end(b *flow.Batch) {
	if l.next == nil {
		return
	}
	n := len(b.Drops)
	if l.per > 0 {
		n = min(n, l.per-len(l.flows))
	}
	l.flush(b.Drops[:n])
	drops := b.Drops[n:]
	for from, to := range l.p.calls(len(drops)) {
		l.consume(&flow.Batch{Time: b.Time, Drops: drops[from:to]})
	}
	for from, to := range l.p.calls(len(b.DNS)) {
		l.consume(&flow.Batch{Time: b.Time, DNS: b.DNS[from:to]})
	}
	l.p.logFlows = l.flows
	l.r.log(l.p.set.Logger, "logs")
}

func (p *pipeline) emitTraces(next consumer.Traces, conns []flow.Conn) {
	var r refusals
	for from, to := range p.calls(len(conns)) {
		td := p.conv.Traces(conns[from:to])
		n := td.SpanCount()
		if n == 0 {
			continue
		}
		opCtx := p.obs.StartTracesOp(context.Background())
		err := next.ConsumeTraces(opCtx, td)
		p.obs.EndTracesOp(opCtx, transport, n, err)
		r.add(n, err)
	}
	r.log(p.set.Logger, "traces")
}

// calls yields the [from, to) ranges of n records, max_records_per_call
// each (one range when it is 0).
func (p *pipeline) calls(n int) iter.Seq2[int, int] {
	per := p.cfg.MaxRecordsPerCall
	if per <= 0 {
		per = max(n, 1)
	}
	return func(yield func(int, int) bool) {
		for from := 0; from < n; from += per {
			if !yield(from, min(from+per, n)) {
				return
			}
		}
	}
}

// refusals are the refused calls of one emit.
type refusals struct {
	calls, records int
	first          error
}

func (r *refusals) add(records int, err error) {
	if err == nil {
		return
	}
	r.calls++
	r.records += records
	if r.first == nil {
		r.first = err
	}
}

func (r *refusals) log(logger *zap.Logger, signal string) {
	if r.calls > 0 {
		logger.Error("consume "+signal+": refused downstream (counted in otelcol_receiver_refused_*)",
			zap.Int("calls", r.calls), zap.Int("records", r.records), zap.Error(r.first))
	}
}

// handoff holds what a reader goroutine delivered since the last
// collection (closed connections, DNS lookups): the reader appends, the
// collection takes the slice and gives it back for reuse, so a steady rate
// appends without growing one.
type handoff[T any] struct {
	mu    sync.Mutex
	list  []T
	spare []T
}

func (h *handoff[T]) add(x *T) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.list = append(h.list, *x)
}

func (h *handoff[T]) take() []T {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.list
	h.list, h.spare = h.spare[:0], nil
	return out
}

// recycle gives back a slice take returned, for reuse.
func (h *handoff[T]) recycle(s []T) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.spare = s
}
