//go:build bench

package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/flow"
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
	// Closed connections are read as the receiver reads them: with no
	// reader the ring passes its wake-up threshold (a quarter of it) and
	// every later close pays a wake-up (tcp_sockops: 155 ns/run in the
	// first repetition, 900-2,100 in the later ones).
	ctx, cancel := context.WithCancel(context.Background())
	readErr := make(chan error, 1)
	go func() { readErr <- d.ReadConns(ctx, func(*flow.Conn) {}) }()
	defer func() {
		cancel()
		require.NoError(t, <-readErr)
	}()
	// The transfers' loss: 3% of the segments to p2 dropped at random.
	_, err = p2.NS.Exec("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "7300", "-m", "statistic", "--mode", "random", "--probability", "0.03", "-j", "DROP")
	require.NoError(t, err)
	const aborts, sends, newSockets = 2000, 20000, 2000
	tcpPrograms := []string{"inet_sock_set_state", "tcp_sockops", "record_connect4", "tcp_receive_reset", "tcp_send_reset", "tcp_retransmit_skb"}
	rows := append(slices.Clone(tcpPrograms), "record_sendmsg4, known destination", "record_sendmsg4, new destination")
	cost := map[string][]float64{}
	runs := map[string][]float64{}
	add := func(row string, s kernel.ProgramStats) {
		cost[row] = append(cost[row], s.PerRun())
		runs[row] = append(runs[row], float64(s.Runs))
	}
	n := reps()
	for rep := 0; rep < n; rep++ {
		before, err := d.ProgramStats()
		require.NoError(t, err)
		tcpAborts(t, aborts)
		require.NoError(t, testnet.TCPTransfer(p1.NS, p2.NS, netip.AddrPortFrom(p2.IPv4, 7300), 32<<20))
		after, err := d.ProgramStats()
		require.NoError(t, err)
		for _, name := range tcpPrograms {
			s := after[name].Sub(before[name])
			require.NotZero(t, s.Runs, name)
			add(name, s)
		}
		// UDP destinations (cgroup/sendmsg4): one socket sending to one
		// destination again and again (the entry exists: a lookup and a
		// timestamp), then sockets that each send once (a new entry).
		udpSends(t, sends, 1)
		afterKnown, err := d.ProgramStats()
		require.NoError(t, err)
		udpSends(t, 1, newSockets)
		afterNew, err := d.ProgramStats()
		require.NoError(t, err)
		for _, r := range []struct {
			row           string
			before, after map[string]kernel.ProgramStats
		}{{rows[6], after, afterKnown}, {rows[7], afterKnown, afterNew}} {
			s := r.after["record_sendmsg4"].Sub(r.before["record_sendmsg4"])
			require.GreaterOrEqual(t, s.Runs, uint64(sends/10), r.row)
			add(r.row, s)
		}
	}

	var b strings.Builder
	b.WriteString("## TCP programs: per-event cost\n\n")
	b.WriteString("Reproduce: `make bench` (or `go test -count=1 -tags bench -run TestBenchTCPEvents -v ./bench/`). With the TCP programs\n")
	fmt.Fprintf(&b, "attached: %d loopback connections the server aborts (SO_LINGER 0: a reset sent and one received each), then a\n", aborts)
	b.WriteString("32 MiB transfer between two pods with 3% of its segments dropped at random (retransmissions). run_time_ns / run_cnt\n")
	b.WriteString("(bpf_stats, which adds ~20-30 ns per run and, for programs in process context, any interrupt they take) over both,\n")
	b.WriteString("with closed connections read from the ring as the receiver reads them.\n")
	fmt.Fprintf(&b, "All of it %d times: median (min–max) over the repetitions.\n", n)
	fmt.Fprintf(&b, "Connection churn above has the cost under sustained load. record_sendmsg4: %d sendto() calls of one UDP socket to one\n", sends)
	fmt.Fprintf(&b, "destination (the entry exists), then %d sockets sending once each (a new entry in udp_dialed).\n\n", newSockets)
	b.WriteString("| program | runs per repetition | ns/run |\n|---|---|---|\n")
	for _, row := range rows {
		fmt.Fprintf(&b, "| %s | %.0f | %s |\n", row, summarize(runs[row]).med, summarize(cost[row]).format("", 1, 0))
		t.Logf("%s: %v runs, %v ns/run", row, runs[row], cost[row])
	}
	addSection(b.String())
}

// tcpAborts makes n loopback connections whose server reads one byte and
// closes with SO_LINGER 0 (a reset sent and one received each).
func tcpAborts(t *testing.T, n int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
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
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		_, _ = c.Write([]byte{1})
		_, _ = c.Read(make([]byte, 1))
		c.Close()
	}
}

// udpSends sends one byte `each` times from each of `sockets` new UDP
// sockets to one loopback destination.
func udpSends(t *testing.T, each, sockets int) {
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
	for i := 0; i < sockets; i++ {
		c, err := net.ListenUDP("udp4", nil)
		require.NoError(t, err)
		for j := 0; j < each; j++ {
			_, err := c.WriteToUDPAddrPort([]byte("q"), dst)
			require.NoError(t, err)
		}
		c.Close()
	}
}
