package kernel

import (
	"testing"

	"github.com/gopacket/gopacket/layers"
	"github.com/stretchr/testify/require"
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
