package flow

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/sampling"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
)

// TestThresholdsAsOpenTelemetrySpecifies: the thresholds and their
// encodings equal contrib's pkg/sampling (the probabilistic sampler's and
// spanmetrics' model), and so do the keep decisions on real connection
// trace IDs; 1/4 is the specification's example, th:c.
func TestThresholdsAsOpenTelemetrySpecifies(t *testing.T) {
	require.Equal(t, "c", RatioThreshold(0.25).TValue())
	require.Equal(t, "8", RatioThreshold(0.5).TValue())
	require.Equal(t, "0", RatioThreshold(1).TValue())
	for _, ratio := range []float64{0.5, 0.25, 0.1, 1.0 / 3, 0.01, 0.001, 1e-6} {
		th := RatioThreshold(ratio)
		want, err := sampling.ProbabilityToThresholdWithPrecision(ratio, 14)
		require.NoError(t, err)
		require.Equal(t, want.Unsigned(), uint64(th), "ratio %v", ratio)
		parsed, err := sampling.TValueToThreshold(th.TValue())
		require.NoError(t, err, th.TValue())
		require.Equal(t, uint64(th), parsed.Unsigned(), "ratio %v: %s", ratio, th.TValue())
		require.InDelta(t, 1/ratio, parsed.AdjustedCount(), 1e-6/ratio)
		for i := range 2000 {
			c := Conn{Role: Client, Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.2:80"),
				ClientISN: uint32(i * 7919), ServerISN: uint32(i * 104729)}
			c.TraceID, c.SpanID, c.ParentSpanID = ConnIDs(&c)
			require.Equal(t, want.ShouldSample(sampling.TraceIDToRandomness(pcommon.TraceID(c.TraceID))),
				th.Keeps(TraceRandomness(c.TraceID)), "ratio %v, trace %x", ratio, c.TraceID)
		}
	}
}

// TestSpanSamplingKeepsAQuarterAndWholeTraces: at 1/4, over 20,000
// connections (both sides each), 25% ± 3σ of the connections are kept,
// every kept client side's server side is kept too, and every connection a
// keep rule matches is kept at threshold 0.
func TestSpanSamplingKeepsAQuarterAndWholeTraces(t *testing.T) {
	s := SpanSampling{Threshold: RatioThreshold(0.25), Keep: KeepRules{Failed: true, Reset: true, MinRTT: 100 * time.Millisecond,
		MinRetransmits: 4, MinDuration: time.Minute}}
	const n = 20000
	kept, keptAlways, matched := 0, 0, 0
	t0 := time.Unix(1700000000, 0)
	for i := range n {
		client := Conn{Role: Client, Local: netip.AddrPortFrom(netip.MustParseAddr("10.1.0.5"), uint16(30000+i%30000)),
			Remote: netip.MustParseAddrPort("10.1.0.9:443"), ClientISN: uint32(i) * 2654435761, ServerISN: uint32(i) * 40503,
			Start: t0, End: t0.Add(time.Second), SRTT: time.Millisecond}
		switch i % 50 { // one in ten matches one rule
		case 0:
			client.Result = Refused
		case 1:
			client.Result = Reset
		case 2:
			client.SRTT = 150 * time.Millisecond
		case 3:
			client.Retransmits = 5
		case 4:
			client.End = t0.Add(2 * time.Minute)
		}
		server := client
		server.Role, server.Local, server.Remote = Server, client.Remote, client.Local
		client.TraceID, client.SpanID, client.ParentSpanID = ConnIDs(&client)
		server.TraceID, server.SpanID, server.ParentSpanID = ConnIDs(&server)
		require.Equal(t, client.TraceID, server.TraceID)
		ck, cth := s.Decide(&client)
		sk, sth := s.Decide(&server)
		if s.Keep.Matches(&client) {
			matched++
			require.True(t, ck, "a keep rule's connection")
			require.Zero(t, cth)
			keptAlways++
			continue
		}
		require.Equal(t, ck, sk, "both sides of a connection decide alike")
		if ck {
			kept++
			require.Equal(t, s.Threshold, cth)
			require.Equal(t, s.Threshold, sth)
		}
	}
	require.Equal(t, n/10, matched)
	require.Equal(t, matched, keptAlways)
	sampled := n - matched
	p := 0.25
	sigma := math.Sqrt(float64(sampled) * p * (1 - p))
	require.InDelta(t, p*float64(sampled), float64(kept), 3*sigma, "kept %d of %d", kept, sampled)
}

// TestFlowRandomnessIsTheFlows: both directions of a flow get the same
// randomness, other flows other values, spread over 56 bits: at 1/4, 25%
// ± 3σ of 20,000 flows are kept.
func TestFlowRandomnessIsTheFlows(t *testing.T) {
	th := RatioThreshold(0.25)
	kept := 0
	const n = 20000
	for i := range n {
		a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), uint16(40000+i%1000))
		b := netip.MustParseAddrPort("10.3.0.7:5432")
		out := Flow{Src: a, Dst: b, Protocol: ProtoTCP}
		in := Flow{Src: b, Dst: a, Protocol: ProtoTCP}
		r := FlowRandomness(&out)
		require.Equal(t, r, FlowRandomness(&in))
		require.Less(t, r, uint64(1)<<56)
		if th.Keeps(r) {
			kept++
		}
	}
	sigma := math.Sqrt(n * 0.25 * 0.75)
	require.InDelta(t, n/4, float64(kept), 3*sigma)
	udp := Flow{Src: netip.MustParseAddrPort("10.2.0.1:40000"), Dst: netip.MustParseAddrPort("10.3.0.7:5432"), Protocol: ProtoUDP}
	tcp := udp
	tcp.Protocol = ProtoTCP
	require.NotEqual(t, FlowRandomness(&udp), FlowRandomness(&tcp))
}
