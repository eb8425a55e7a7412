package convert

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// benchBatch is n flows of 100 pods to 1,000 peers with ephemeral ports,
// the shape of a busy node's interval.
func benchBatch(n int) *flow.Batch {
	b := &flow.Batch{Time: t0.Add(10 * time.Second), TableCapacity: 131072, Flows: make([]flow.Flow, n)}
	for i := range b.Flows {
		local := netip.AddrFrom4([4]byte{10, 244, 0, byte(i%100 + 1)})
		remote := netip.AddrFrom4([4]byte{10, 245, byte(i % 1000 / 250), byte(i%1000%250 + 1)})
		f := podFlow(ap(local, uint16(30000+i%30000)), ap(remote, 443), flow.ProtoTCP, flow.Transmit, uint64(1000+i), 10, t0)
		b.Flows[i] = f
	}
	return b
}

// BenchmarkConvertMetrics: one interval of n flows to pmetric, cumulative,
// default (peer level) attributes; ns/op / n is the cost per flow.
func BenchmarkConvertMetrics(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			batch := benchBatch(n)
			c := NewConverter(testOptions(), t0)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c.Metrics(batch)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/flow")
		})
	}
}

// BenchmarkConvertLogs: one flow log record per flow.
func BenchmarkConvertLogs(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			batch := benchBatch(n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				Logs(testOptions(), batch)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/flow")
		})
	}
}

// BenchmarkConvertTraces: one span per closed connection.
func BenchmarkConvertTraces(b *testing.B) {
	conns := make([]flow.Conn, 10000)
	for i := range conns {
		c := flow.Conn{Role: flow.Client, Local: ap(pod, uint16(30000+i)), Remote: ap(peer, 80), Start: t0, Established: t0.Add(time.Millisecond),
			End: t0.Add(time.Second), ClientISN: uint32(i), ServerISN: uint32(i * 7), BytesSent: 100, Comm: "curl", PID: 42}
		c.TraceID, c.SpanID, c.ParentSpanID = flow.ConnIDs(&c)
		conns[i] = c
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Traces(testOptions(), conns)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(conns)), "ns/span")
}
