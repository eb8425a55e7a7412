//go:build bench

package bench

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestBenchTCPEvents: the per-run cost of every TCP program under the
// events that exercise each: 2,000 connections aborted by the server
// (resets sent and received) and a 32 MiB transfer with 3% random loss
// (retransmissions).
func TestBenchTCPEvents(t *testing.T) {
	testnet.RequireRoot(t)
	node := testnet.NewNode(t, 95)
	p1 := node.AddPod(t, 2)
	p2 := node.AddPod(t, 3)
	statsOff, err := kernel.EnableStats()
	require.NoError(t, err)
	defer statsOff.Close()
	d, err := kernel.Load(kernel.Options{MaxFlows: 1024})
	require.NoError(t, err)
	defer d.Close()
	require.NoError(t, d.AttachTCP())
	before, err := d.ProgramStats()
	require.NoError(t, err)

	// Aborts: the server reads one byte and closes with SO_LINGER 0.
	const aborts = 2000
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Read(make([]byte, 1))
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	for i := 0; i < aborts; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		_, _ = c.Write([]byte{1})
		_, _ = c.Read(make([]byte, 1))
		c.Close()
	}
	ln.Close()
	// Retransmissions: 3% of the segments to p2 dropped at random.
	_, err = p2.NS.Exec("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "7300", "-m", "statistic", "--mode", "random", "--probability", "0.03", "-j", "DROP")
	require.NoError(t, err)
	require.NoError(t, testnet.TCPTransfer(p1.NS, p2.NS, netip.AddrPortFrom(p2.IPv4, 7300), 32<<20))

	after, err := d.ProgramStats()
	require.NoError(t, err)

	// UDP destinations (cgroup/sendmsg4): one socket sending to one
	// destination again and again (the entry exists: a lookup and a
	// timestamp), then sockets that each send once (a new entry).
	const sends, newSockets = 20000, 2000
	sink, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	require.NoError(t, err)
	defer sink.Close()
	dst := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := sink.Read(buf); err != nil {
				return
			}
		}
	}()
	udpSend := func(n int, c *net.UDPConn) {
		for i := 0; i < n; i++ {
			_, err := c.WriteToUDPAddrPort([]byte("q"), dst)
			require.NoError(t, err)
		}
	}
	c, err := net.ListenUDP("udp4", nil)
	require.NoError(t, err)
	udpSend(sends, c)
	c.Close()
	afterKnown, err := d.ProgramStats()
	require.NoError(t, err)
	for i := 0; i < newSockets; i++ {
		c, err := net.ListenUDP("udp4", nil)
		require.NoError(t, err)
		udpSend(1, c)
		c.Close()
	}
	afterNew, err := d.ProgramStats()
	require.NoError(t, err)

	var b strings.Builder
	b.WriteString("## TCP programs: per-event cost\n\n")
	b.WriteString("Reproduce: `make bench` (or `go test -tags bench -run TestBenchTCPEvents -v ./bench/`). With the TCP programs\n")
	fmt.Fprintf(&b, "attached: %d loopback connections the server aborts (SO_LINGER 0: a reset sent and one received each), then a\n", aborts)
	b.WriteString("32 MiB transfer between two pods with 3% of its segments dropped at random (retransmissions). run_time_ns / run_cnt\n")
	b.WriteString("(bpf_stats, which adds ~20-30 ns per run and, for programs in process context, any interrupt they take) over both.\n")
	fmt.Fprintf(&b, "Connection churn above has the cost under sustained load. record_sendmsg4: %d sendto() calls of one UDP socket to one\n", sends)
	fmt.Fprintf(&b, "destination (the entry exists), then %d sockets sending once each (a new entry in udp_dialed).\n\n", newSockets)
	b.WriteString("| program | runs | ns/run |\n|---|---|---|\n")
	for _, name := range []string{"inet_sock_set_state", "tcp_sockops", "record_connect4", "tcp_receive_reset", "tcp_send_reset", "tcp_retransmit_skb"} {
		s := after[name].Sub(before[name])
		fmt.Fprintf(&b, "| %s | %d | %.0f |\n", name, s.Runs, s.PerRun())
		t.Logf("%s: %d runs, %.0f ns/run", name, s.Runs, s.PerRun())
		require.NotZero(t, s.Runs, name)
	}
	for _, row := range []struct {
		what          string
		before, after map[string]kernel.ProgramStats
	}{{"record_sendmsg4, known destination", after, afterKnown}, {"record_sendmsg4, new destination", afterKnown, afterNew}} {
		s := row.after["record_sendmsg4"].Sub(row.before["record_sendmsg4"])
		fmt.Fprintf(&b, "| %s | %d | %.0f |\n", row.what, s.Runs, s.PerRun())
		t.Logf("%s: %d runs, %.0f ns/run", row.what, s.Runs, s.PerRun())
		require.GreaterOrEqual(t, s.Runs, uint64(sends/10), row.what)
	}
	addSection(b.String())
}
