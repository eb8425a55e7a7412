package ebpfnetreceiver

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver/internal/metadata"
)

// TestLifecyclePrivileged is the generated lifecycle test, on the real
// kernel: create, start and shut down each signal twice, then both signals
// sharing one pipeline, and shut down without start.
func TestLifecyclePrivileged(t *testing.T) {
	testnet.RequireRoot(t)
	f := NewFactory()
	cfg := f.CreateDefaultConfig().(*Config)
	cfg.Interfaces.Include = "^lo$" // attach somewhere harmless
	cfg.Interfaces.Exclude = ""
	host := componenttest.NewNopHost()
	for i := 0; i < 2; i++ {
		set := receivertest.NewNopSettings(metadata.Type)
		m, err := f.CreateMetrics(context.Background(), set, cfg, consumertest.NewNop())
		require.NoError(t, err)
		require.NoError(t, m.Start(context.Background(), host))
		l, err := f.CreateLogs(context.Background(), set, cfg, consumertest.NewNop())
		require.NoError(t, err)
		require.NoError(t, l.Start(context.Background(), host))
		require.NoError(t, m.Shutdown(context.Background()))
		require.NoError(t, l.Shutdown(context.Background()))
		require.NoError(t, l.Shutdown(context.Background()), "second shutdown")
	}
	l, err := f.CreateLogs(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, consumertest.NewNop())
	require.NoError(t, err)
	require.NoError(t, l.Shutdown(context.Background()), "shutdown without start")
}

// fakeDatapath hands out the flows it was given, one batch per drain, in
// parts of partFlows (0: one part), as the kernel's drain does.
type fakeDatapath struct {
	mu       sync.Mutex
	batches  [][]flow.Flow
	draining []flow.Flow
	// partFlows is how many flows a part of DrainFlows holds (0: all).
	partFlows int
	drops     []flow.Drop // every interval's
	counters  flow.Counters
	detached  bool
	closed    bool
}

func (f *fakeDatapath) StartDrain() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return kernel.ErrClosed
	}
	f.draining = nil
	if len(f.batches) > 0 {
		f.draining, f.batches = f.batches[0], f.batches[1:]
	}
	return nil
}

func (f *fakeDatapath) DrainFlows(learn func(*flow.Flow) bool, fn func([]flow.Flow)) error {
	f.mu.Lock()
	flows := f.draining
	f.draining = nil
	f.mu.Unlock()
	for i := range flows {
		learn(&flows[i]) // every flow: all interfaces new
	}
	per := f.partFlows
	if per == 0 {
		per = max(len(flows), 1)
	}
	for from := 0; from < len(flows); from += per {
		part := append([]flow.Flow(nil), flows[from:min(from+per, len(flows))]...)
		fn(part)
	}
	return nil
}
func (f *fakeDatapath) Counters() (flow.Counters, error) { return f.counters, nil }
func (f *fakeDatapath) MaxFlows() uint32                 { return 1024 }
func (f *fakeDatapath) DetachAll() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detached = true
	return nil
}
func (f *fakeDatapath) Attach() error { return nil }
func (f *fakeDatapath) LiveConns(dst []flow.LiveConn) ([]flow.LiveConn, error) {
	return dst, nil
}
func (f *fakeDatapath) Drops(dst []flow.Drop) []flow.Drop { return append(dst, f.drops...) }

func (f *fakeDatapath) ReadDNS(ctx context.Context, _ func(*flow.DNSLookup)) error {
	<-ctx.Done()
	return nil
}

func (f *fakeDatapath) ExpireDNS(dst []flow.DNSLookup, _ time.Duration) ([]flow.DNSLookup, error) {
	return dst, nil
}

func (f *fakeDatapath) UDPDialed(dst []flow.UDPDialed, _ time.Duration) ([]flow.UDPDialed, error) {
	return dst, nil
}
func (f *fakeDatapath) ReadConns(ctx context.Context, _ func(*flow.Conn)) error {
	<-ctx.Done()
	return nil
}
func (f *fakeDatapath) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func kflow(src, dst [4]byte, sport, dport uint16, bytes uint64) flow.Flow {
	return flow.Flow{
		Src:      netip.AddrPortFrom(netip.AddrFrom4(src), sport),
		Dst:      netip.AddrPortFrom(netip.AddrFrom4(dst), dport),
		Protocol: flow.ProtoTCP, Direction: flow.Transmit, Ifindex: 7, Interface: "veth0",
		Bytes: bytes, Packets: 1, Start: time.Unix(0, 1), End: time.Unix(0, 2),
	}
}

// TestPipelineSharedAndFlushedOnShutdown checks, without a kernel, that the
// metrics and logs signals share one datapath, that shutdown detaches before
// the final drain, and that the final drain's flows are emitted.
func TestPipelineSharedAndFlushedOnShutdown(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	cfg.Interval = time.Hour // only the shutdown flush drains
	fake := &fakeDatapath{batches: [][]flow.Flow{{kflow([4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, 40000, 80, 1500)}}}
	loads := 0
	set := receivertest.NewNopSettings(metadata.Type)
	p := newPipeline(cfg, set, func(*Config, *zap.Logger, func(error)) (datapath, error) {
		loads++
		return fake, nil
	})
	ms, ls := new(consumertest.MetricsSink), new(consumertest.LogsSink)
	p.setMetrics(ms)
	p.setLogs(ls)
	s := newShared(p)
	hm, hl := s.handle(), s.handle()
	host := componenttest.NewNopHost()
	require.NoError(t, hm.Start(context.Background(), host))
	require.NoError(t, hl.Start(context.Background(), host))
	require.Equal(t, 1, loads, "one datapath for both signals")
	require.NoError(t, hm.Shutdown(context.Background()))
	// The collector may now stop a shared exporter (the file exporter
	// stops at its first Shutdown) before the logs handle's Shutdown: the
	// logs must have been handed over already.
	require.Equal(t, 1, ls.LogRecordCount(), "every signal's final data at the first Shutdown")
	require.NotZero(t, ms.DataPointCount())
	require.True(t, fake.detached)
	require.False(t, fake.closed, "still used by the logs signal")
	require.NoError(t, hl.Shutdown(context.Background()))
	require.True(t, fake.closed)
	require.Equal(t, 1, ls.LogRecordCount(), "nothing twice")
}

// TestRecordsPerCall: an interval of more records than
// max_records_per_call, drained in parts that are not a multiple of it,
// reaches the consumer in calls of that many (the last call the rest),
// every record once, and every flow is in the metrics once.
func TestRecordsPerCall(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	cfg.Interval = time.Hour
	cfg.MaxRecordsPerCall = 1000
	var flows []flow.Flow
	for i := 0; i < 4500; i++ {
		flows = append(flows, kflow([4]byte{10, 0, byte(i >> 8), byte(i)}, [4]byte{10, 1, 0, 2}, 40000, 80, uint64(i+1)))
	}
	// And 2,300 packet drops of other connections: records of their own,
	// handed over after the flows, in the same bounded calls.
	var drops []flow.Drop
	for i := 0; i < 2300; i++ {
		drops = append(drops, flow.Drop{Kind: flow.DropPacket, Local: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, 1}), 80),
			Peer: netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), Protocol: flow.ProtoTCP, Direction: flow.Receive,
			Reason: "NO_SOCKET", Packets: 1, Bytes: uint64(1_000_001 + i)})
	}
	fake := &fakeDatapath{batches: [][]flow.Flow{flows}, partFlows: 1100, drops: drops}
	p := newPipeline(cfg, receivertest.NewNopSettings(metadata.Type), func(*Config, *zap.Logger, func(error)) (datapath, error) {
		return fake, nil
	})
	ls, ms := new(consumertest.LogsSink), new(consumertest.MetricsSink)
	p.setLogs(ls)
	p.setMetrics(ms)
	s := newShared(p)
	hl, hm := s.handle(), s.handle()
	require.NoError(t, hl.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, hm.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, hl.Shutdown(context.Background()))
	require.NoError(t, hm.Shutdown(context.Background()))
	require.Len(t, ls.AllLogs(), 7, "(4,500 flows + 2,300 drops) / 1,000")
	var sent int64
	for _, md := range ms.AllMetrics() {
		rms := md.ResourceMetrics()
		for i := range rms.Len() {
			ms := rms.At(i).ScopeMetrics().At(0).Metrics()
			for j := range ms.Len() {
				if m := ms.At(j); m.Name() == "ebpfnet.flow.io" {
					for k := range m.Sum().DataPoints().Len() {
						sent += m.Sum().DataPoints().At(k).IntValue()
					}
				}
			}
		}
	}
	require.Equal(t, int64(4500*4501/2), sent, "every flow's bytes once in ebpfnet.flow.io")
	bytes := map[int64]bool{}
	for i, ld := range ls.AllLogs() {
		if i < 6 {
			require.Equal(t, 1000, ld.LogRecordCount(), "call %d", i)
		}
		rls := ld.ResourceLogs()
		for i := 0; i < rls.Len(); i++ {
			recs := rls.At(i).ScopeLogs().At(0).LogRecords()
			for j := 0; j < recs.Len(); j++ {
				v, ok := recs.At(j).Attributes().Get("ebpfnet.flow.bytes")
				require.True(t, ok)
				bytes[v.Int()] = true
			}
		}
	}
	require.Len(t, bytes, 4500+2300, "every flow and every drop once")
	require.Equal(t, 800, ls.AllLogs()[6].LogRecordCount(), "the last call")
}

func TestStartErrorIsClear(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	p := newPipeline(cfg, receivertest.NewNopSettings(metadata.Type), func(*Config, *zap.Logger, func(error)) (datapath, error) {
		return nil, errors.Join(kernel.ErrPrivileges, errors.New("the collector needs CAP_BPF"))
	})
	p.setMetrics(consumertest.NewNop())
	err := newShared(p).handle().Start(context.Background(), componenttest.NewNopHost())
	require.ErrorIs(t, err, kernel.ErrPrivileges)
	require.ErrorContains(t, err, "ebpfnet: ")
}

// startLogged starts a metrics receiver on the real kernel, its log from
// level on observed, until the test ends.
func startLogged(t *testing.T, cfg *Config, level zapcore.Level) *observer.ObservedLogs {
	testnet.RequireRoot(t)
	core, logs := observer.New(level)
	set := receivertest.NewNopSettings(metadata.Type)
	set.Logger = zap.New(core)
	r, err := NewFactory().CreateMetrics(context.Background(), set, cfg, consumertest.NewNop())
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	t.Cleanup(func() { require.NoError(t, r.Shutdown(context.Background())) })
	return logs
}

// TestIncludeMatchingNothingWarns: a selection that matches no interface
// starts (pods' veths may come later) but says so, with what there is.
func TestIncludeMatchingNothingWarns(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	cfg.Interfaces.Include = "^ebpfnet-matches-nothing$"
	logs := startLogged(t, cfg, zap.WarnLevel)
	warned := logs.FilterMessageSnippet("matches no interface").All()
	require.Len(t, warned, 1)
	require.Contains(t, warned[0].ContextMap()["interfaces"], "lo", "the node's interfaces are listed")
}

// TestKernelMemoryLogged: Start logs the kernel memory of every map, the
// flow tables at max_flows entries, and the total.
func TestKernelMemoryLogged(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	cfg.Interfaces.Include, cfg.Interfaces.Exclude = "^lo$", ""
	cfg.MaxFlows = 50000
	logs := startLogged(t, cfg, zap.InfoLevel)
	logged := logs.FilterMessageSnippet("ebpfnet kernel memory").All()
	require.Len(t, logged, 1)
	f := logged[0].ContextMap()
	var sum uint64
	for k, v := range f {
		if strings.HasSuffix(k, "_bytes") && k != "total_bytes" {
			sum += v.(uint64)
		}
	}
	require.Equal(t, f["total_bytes"], sum)
	for _, m := range []string{"flows_a", "flows_b", "conns", "conn_events", "flow_cache"} {
		require.NotZero(t, f[m+"_bytes"], m)
	}
	// 50,000 entries (65,536 buckets) of 40-byte keys and 32-byte values:
	// more than the keys and values alone, less than twice as much.
	flows := f["flows_a_bytes"].(uint64)
	require.Greater(t, flows, uint64(50000*(40+32)))
	require.Less(t, flows, uint64(2*65536*(40+32)))
}
