package ebpfnetreceiver

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"

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

// fakeDatapath hands out the flows it was given, one batch per drain.
type fakeDatapath struct {
	mu       sync.Mutex
	batches  [][]kernel.Flow
	counters kernel.Counters
	detached bool
	closed   bool
}

func (f *fakeDatapath) Drain(dst []kernel.Flow) ([]kernel.Flow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return dst, kernel.ErrClosed
	}
	if len(f.batches) == 0 {
		return dst, nil
	}
	b := f.batches[0]
	f.batches = f.batches[1:]
	return append(dst, b...), nil
}
func (f *fakeDatapath) Counters() (kernel.Counters, error) { return f.counters, nil }
func (f *fakeDatapath) InterfaceName(uint32) string        { return "veth0" }
func (f *fakeDatapath) MaxFlows() uint32                   { return 1024 }
func (f *fakeDatapath) DetachAll() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detached = true
	return nil
}
func (f *fakeDatapath) AttachTCP() error { return nil }
func (f *fakeDatapath) LiveConns(dst []kernel.LiveConn) ([]kernel.LiveConn, error) {
	return dst, nil
}
func (f *fakeDatapath) UDPDialed(dst []kernel.UDPDialed, _ time.Duration) ([]kernel.UDPDialed, error) {
	return dst, nil
}
func (f *fakeDatapath) ReadConns(ctx context.Context, _ func(*kernel.ConnEvent)) error {
	<-ctx.Done()
	return nil
}
func (f *fakeDatapath) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func kflow(src, dst [4]byte, sport, dport uint16, bytes uint64) kernel.Flow {
	var k kernel.Flow
	k.Key.SrcAddr = [16]byte{10: 0xff, 11: 0xff, 12: src[0], 13: src[1], 14: src[2], 15: src[3]}
	k.Key.DstAddr = [16]byte{10: 0xff, 11: 0xff, 12: dst[0], 13: dst[1], 14: dst[2], 15: dst[3]}
	k.Key.SrcPort, k.Key.DstPort = sport, dport
	k.Key.Protocol, k.Key.Family = 6, 4
	k.Key.Direction = kernel.DirectionTransmit
	k.Key.Ifindex = 7
	k.Counts.Bytes, k.Counts.Packets = bytes, 1
	k.Counts.FirstSeenNs, k.Counts.LastSeenNs = 1, 2
	return k
}

// TestPipelineSharedAndFlushedOnShutdown checks, without a kernel, that the
// metrics and logs signals share one datapath, that shutdown detaches before
// the final drain, and that the final drain's flows are emitted.
func TestPipelineSharedAndFlushedOnShutdown(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	cfg.Interval = time.Hour // only the shutdown flush drains
	fake := &fakeDatapath{batches: [][]kernel.Flow{{kflow([4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, 40000, 80, 1500)}}}
	loads := 0
	set := receivertest.NewNopSettings(metadata.Type)
	p := newPipeline(cfg, set, func(*Config, *zap.Logger, func(error)) (datapath, error) {
		loads++
		return fake, nil
	})
	ms, ls := new(consumertest.MetricsSink), new(consumertest.LogsSink)
	p.setMetrics(ms)
	p.setLogs(ls)
	hm, hl := p.handle(), p.handle()
	host := componenttest.NewNopHost()
	require.NoError(t, hm.Start(context.Background(), host))
	require.NoError(t, hl.Start(context.Background(), host))
	require.Equal(t, 1, loads, "one datapath for both signals")
	require.NoError(t, hm.Shutdown(context.Background()))
	require.False(t, fake.closed, "still used by the logs signal")
	require.NoError(t, hl.Shutdown(context.Background()))
	require.True(t, fake.detached)
	require.True(t, fake.closed)
	require.Equal(t, 1, ls.LogRecordCount())
	require.NotZero(t, ms.DataPointCount())
}

func TestStartErrorIsClear(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	p := newPipeline(cfg, receivertest.NewNopSettings(metadata.Type), func(*Config, *zap.Logger, func(error)) (datapath, error) {
		return nil, errors.Join(kernel.ErrPrivileges, errors.New("the collector needs CAP_BPF"))
	})
	p.setMetrics(consumertest.NewNop())
	err := p.handle().Start(context.Background(), componenttest.NewNopHost())
	require.ErrorIs(t, err, kernel.ErrPrivileges)
	require.ErrorContains(t, err, "ebpfnet: ")
}
