package ebpfnetreceiver

import (
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

var nstatRetrans = regexp.MustCompile(`TcpRetransSegs\s+(\d+)`)

func retransSegs(t *testing.T, ns *testnet.Netns) int64 {
	out, err := ns.Exec("nstat", "-asz", "TcpRetransSegs")
	require.NoError(t, err)
	m := nstatRetrans.FindStringSubmatch(out)
	require.NotNil(t, m, out)
	v, err := strconv.ParseInt(m[1], 10, 64)
	require.NoError(t, err)
	return v
}

// TestEndToEndRetransmitsMatchNstat drops every 30th packet of one transfer
// at the server (iptables statistic, nth: a random 3% once dropped nothing,
// GRO delivering the 8 MiB in few large packets) and checks the exported
// retransmits, on the metric and on the connection's span, against the
// namespace's own TcpRetransSegs counter.
func TestEndToEndRetransmitsMatchNstat(t *testing.T) {
	node := testnet.NewNode(t, 15)
	p1 := node.AddPod(t, 2)
	p2 := node.AddPod(t, 3)
	_, err := p2.NS.Exec("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "7100", "-m", "statistic", "--mode", "nth", "--every", "30", "--packet", "29", "-j", "DROP")
	require.NoError(t, err)
	cfg := testConfig(node.ID)
	cfg.Interval = 300 * time.Millisecond
	traces, metrics, stop := startTraces(t, cfg)

	before := retransSegs(t, p1.NS)
	require.NoError(t, testnet.TCPTransfer(p1.NS, p2.NS, netip.AddrPortFrom(p2.IPv4, 7100), 8<<20))
	var span *spanRec
	require.Eventually(t, func() bool {
		for _, s := range collectSpans(traces) {
			if s.span.Kind() == ptrace.SpanKindClient && sattr(s.span, "server.address") == p2.IPv4.String() && iattr(s.span, "server.port") == 7100 {
				span = &s
				return true
			}
		}
		return false
	}, 30*time.Second, 100*time.Millisecond)
	time.Sleep(2 * cfg.Interval)
	stop()
	want := retransSegs(t, p1.NS) - before
	require.NotZero(t, want, "the loss must cause retransmits")
	require.Equal(t, want, iattr(span.span, "ebpfnet.tcp.retransmits"), "span")
	require.Equal(t, want, connMetric(t, metrics, "ebpfnet.tcp.retransmits", p1.IPv4.String(),
		map[string]string{"ebpfnet.tcp.role": "client", "network.peer.address": p2.IPv4.String()}), "metric")
	// The retransmissions as span events (bursts found by tcp_retransmit_skb,
	// segments counted like total_retrans), within the span.
	var inBursts int64
	evs := span.span.Events()
	for i := 0; i < evs.Len(); i++ {
		if e := evs.At(i); e.Name() == "retransmit burst" {
			n, _ := e.Attributes().Get("ebpfnet.tcp.retransmits")
			inBursts += n.Int()
			require.False(t, e.Timestamp() < span.span.StartTimestamp() || e.Timestamp() > span.span.EndTimestamp(), "burst inside the span")
		}
	}
	require.Equal(t, want, inBursts, "retransmissions in the span's bursts")
	t.Logf("retransmitted segments: %d (nstat TcpRetransSegs); %d retransmissions in bursts on the span", want, inBursts)
}
