package kernel

import (
	"github.com/ebpfnet/ebpfnet/internal/flow"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// BenchmarkEndpointIngressHit is the per-packet cost of the flow program on
// the hit path (one flow, repeated), with BPF_PROG_TEST_RUN.
func BenchmarkEndpointIngressHit(b *testing.B) {
	t := &testing.T{}
	d := loadForBench(b)
	pkt := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(40000, 80, false, true), payload(1400))
	_, dur, err := d.objs.EndpointIngress.Benchmark(pkt, b.N, nil)
	require.NoError(b, err)
	b.ReportMetric(float64(dur.Nanoseconds()), "ns/pkt")
}

func loadForBench(b *testing.B) *Datapath {
	b.Helper()
	d, err := Load(Options{MaxFlows: 131072})
	require.NoError(b, err)
	b.Cleanup(func() { d.Close() })
	return d
}

// BenchmarkConntrackBackend is one conntrack lookup of a live loopback TCP
// connection (found, not translated): what the receiver pays per client
// connection to a Service ClusterIP.
func BenchmarkConntrackBackend(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(b, err)
	defer conn.Close()
	ct, err := OpenConntrack()
	require.NoError(b, err)
	defer ct.Close()
	src := conn.LocalAddr().(*net.TCPAddr).AddrPort()
	dst := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ct.Backend(unix.IPPROTO_TCP, src, dst); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUDPDialedFull reads a nearly full udp_dialed map (60,000 of the
// 65,536 entries of the default max_connections), as the receiver does every
// interval with a logs pipeline and Kubernetes enrichment.
func BenchmarkUDPDialedFull(b *testing.B) {
	const n = 60000
	for _, batch := range []bool{true, false} {
		name := "batch"
		if !batch {
			name = "iterate" // kernels without batch operations
		}
		b.Run(name, func(b *testing.B) {
			d := loadForBench(b)
			d.tables.batchOK = batch
			fillUDPDialed(b, d, n, 0) // nothing stale: every read sees them all
			buf := make([]flow.UDPDialed, 0, n)
			b.ReportAllocs()
			for b.Loop() {
				got, err := d.UDPDialed(buf[:0], time.Hour)
				if err != nil || len(got) != n {
					b.Fatal(len(got), err)
				}
			}
		})
	}
}

// BenchmarkDrainSlots is one Drain of 64 flows when every flow_cache slot
// of the table drained holds packets of one of them on every CPU ("full":
// the slot pass a busy node pays each interval), and when none does
// ("empty": the rest of the drain). Its wall time is mostly the barrier's RCU
// grace period, a wait: cpu-ns/op is the CPU time (user and system) of the
// thread that drains.
func BenchmarkDrainSlots(b *testing.B) {
	for _, full := range []bool{false, true} {
		name := "empty"
		if full {
			name = "full"
		}
		b.Run(name, func(b *testing.B) {
			d := loadForBench(b)
			n := d.objs.FlowCache.MaxEntries() / 2
			slots := make([]cacheSlot, d.tables.ncpu)
			flow := rawCounts{Bytes: 100, Packets: 1}
			want := uint64(1)
			if full {
				want += uint64(d.tables.ncpu)
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var cpuNs int64
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				for i := uint32(0); i < n; i++ {
					key := FlowKey{SrcPort: uint16(1000 + i), DstPort: 53, Protocol: 17, Family: 4, Ifindex: 1}
					for cpu := range slots {
						slots[cpu] = cacheSlot{Key: key, Delta: rawCounts{Bytes: 100, Packets: 1}}
					}
					if full {
						require.NoError(b, d.objs.FlowCache.Put(uint32(d.tables.active)*n+i, slots))
					}
					require.NoError(b, d.tables.maps[d.tables.active].Put(&key, &flow))
				}
				b.StartTimer()
				before := threadCPU(b)
				flows, err := d.drainEntries(nil)
				cpuNs += threadCPU(b) - before
				if err != nil || len(flows) != int(n) || flows[0].Counts.Packets != want {
					b.Fatal(len(flows), err)
				}
			}
			b.ReportMetric(float64(cpuNs)/float64(b.N), "cpu-ns/op")
		})
	}
}

// threadCPU is the CPU time (user and system) of the calling OS thread, up
// to date (getrusage's lags until the thread is next scheduled).
func threadCPU(b *testing.B) int64 {
	var ts unix.Timespec
	require.NoError(b, unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts))
	return ts.Nano()
}
