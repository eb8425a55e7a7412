package kernel

import (
	"net"
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
			d.batchOK = batch
			fillUDPDialed(b, d, n, 0) // nothing stale: every read sees them all
			buf := make([]UDPDialed, 0, n)
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
