package ebpfnetreceiver

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// startAll runs the receiver with a sink per signal.
func startAll(t *testing.T, cfg *Config) *sinks { return startSignals(t, cfg, true, true, true) }

// sendDatagrams sends n datagrams from ns to dst (nobody need listen) and
// returns the source port.
func sendDatagrams(t *testing.T, ns *testnet.Netns, dst netip.AddrPort, n int) uint16 {
	var conn net.PacketConn
	require.NoError(t, ns.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", ":0")
		return err
	}))
	defer conn.Close()
	for range n {
		_, err := conn.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(dst))
		require.NoError(t, err)
	}
	return uint16(conn.LocalAddr().(*net.UDPAddr).Port)
}

// iptablesCounter reads the packets of the rule with comment in ns.
func iptablesCounter(t *testing.T, ns *testnet.Netns, chain, comment string) int64 {
	p, _, err := testnet.RuleCounters(ns, chain, comment)
	require.NoError(t, err)
	return int64(p)
}

// flowDrops sums, over the flow records of local with destination dst, the
// drops of reason on them (ebpfnet.flow.drops).
func flowDrops(logs []plog.Logs, local netip.Addr, dst netip.AddrPort, reason string) int64 {
	var n int64
	forEachRecord(logs, func(res, a map[string]any, _ plog.LogRecord) {
		if res["k8s.pod.ip"] != local.String() || a["destination.address"] != dst.Addr().String() || a["destination.port"] != int64(dst.Port()) {
			return
		}
		if d, ok := a["ebpfnet.flow.drops"].(map[string]any); ok {
			v, _ := d[reason].(int64)
			n += v
		}
	})
	return n
}

func forEachRecord(logs []plog.Logs, fn func(res, attrs map[string]any, lr plog.LogRecord)) {
	for _, l := range logs {
		for i := 0; i < l.ResourceLogs().Len(); i++ {
			rl := l.ResourceLogs().At(i)
			res := rl.Resource().Attributes().AsRaw()
			for j := 0; j < rl.ScopeLogs().Len(); j++ {
				lrs := rl.ScopeLogs().At(j).LogRecords()
				for k := 0; k < lrs.Len(); k++ {
					fn(res, lrs.At(k).Attributes().AsRaw(), lrs.At(k))
				}
			}
		}
	}
}

// TestEndToEndDrops: packets a pod's own iptables rule drops in an
// established TCP connection, UDP to a port nobody listens on and a
// connection attempt to a closed port, each on every signal, equal to the
// kernel's own counters: the metric on the receiving pod's resource with
// the kernel's reason and the peer, the server span's "packets dropped"
// event, the flow record's drops, the reset sent without a socket.
func TestEndToEndDrops(t *testing.T) {
	node := testnet.NewNode(t, 29)
	a, b := node.AddPod(t, 2), node.AddPod(t, 3)
	_, err := b.NS.Exec("iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "7200", "-m", "statistic", "--mode", "nth",
		"--every", "40", "--packet", "39", "-m", "comment", "--comment", "ebpfnet-e2e-drop", "-j", "DROP")
	require.NoError(t, err)
	cfg := testConfig(node.ID)
	s := startAll(t, cfg)

	require.NoError(t, testnet.TCPTransfer(a.NS, b.NS, netip.AddrPortFrom(b.IPv4, 7200), 4<<20))
	udpPort := sendDatagrams(t, a.NS, netip.AddrPortFrom(b.IPv4, 7201), 20)
	_, err = testnet.Dial(a.NS, netip.AddrPortFrom(b.IPv4, 7202), 0, time.Second)
	require.Error(t, err, "nobody listens on 7202")
	time.Sleep(3 * cfg.Interval)
	s.stop()

	dropped := iptablesCounter(t, b.NS, "INPUT", "ebpfnet-e2e-drop")
	require.NotZero(t, dropped)
	pts := lastCumulative(t, s.metrics, "ebpfnet.packets.dropped")
	onB := func(reason, transport string) int64 {
		return sumWhere(pts, and(podResource(b), attr("ebpfnet.drop.reason", reason), attr("network.peer.address", a.IPv4.String()),
			attr("network.io.direction", "receive"), attr("network.transport", transport)))
	}
	require.Equal(t, dropped, onB("NETFILTER_DROP", "tcp"), "metric = the rule's counter: %v", pts)
	require.EqualValues(t, 20, onB("NO_SOCKET", "udp"), "datagrams to a closed port")
	require.EqualValues(t, 1, onB("NO_SOCKET", "tcp"), "the SYN to a closed port")

	// The server span carries its socket's drops.
	var events int64
	for _, sp := range collectSpans(s.traces) {
		if sp.span.Kind() != ptrace.SpanKindServer || iattr(sp.span, "server.port") != 7200 {
			continue
		}
		evs := sp.span.Events()
		for i := 0; i < evs.Len(); i++ {
			if e := evs.At(i); e.Name() == "packets dropped" && str(e.Attributes(), "ebpfnet.drop.reason") == "NETFILTER_DROP" {
				n, _ := e.Attributes().Get("ebpfnet.drop.packets")
				events += n.Int()
			}
		}
	}
	require.Equal(t, dropped, events, "the server span's drop events")

	// The UDP flow's record carries its drops.
	require.EqualValues(t, 20, flowDrops(s.logs.AllLogs(), b.IPv4, netip.AddrPortFrom(b.IPv4, 7201), "NO_SOCKET"),
		"flow records of %d -> 7201", udpPort)

	// The closed port's reset: sent without a socket, by b.
	resets := lastCumulative(t, s.metrics, "ebpfnet.tcp.resets.sent")
	require.EqualValues(t, 1, sumWhere(resets, and(podResource(b), attr("ebpfnet.tcp.role", "none"),
		attr("ebpfnet.tcp.reset.reason", "NO_SOCKET"), attr("network.peer.address", a.IPv4.String()))), "%v", resets)
}
