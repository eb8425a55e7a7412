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
	var b strings.Builder
	b.WriteString("## TCP programs: per-event cost\n\n")
	b.WriteString("Reproduce: `make bench` (or `go test -tags bench -run TestBenchTCPEvents -v ./bench/`). With the TCP programs\n")
	fmt.Fprintf(&b, "attached: %d loopback connections the server aborts (SO_LINGER 0: a reset sent and one received each), then a\n", aborts)
	b.WriteString("32 MiB transfer between two pods with 3% of its segments dropped at random (retransmissions). run_time_ns / run_cnt\n")
	b.WriteString("(bpf_stats, which adds ~20-30 ns per run and, for programs in process context, any interrupt they take) over both.\n")
	b.WriteString("Connection churn above has the cost under sustained load.\n\n")
	b.WriteString("| program | runs | ns/run |\n|---|---|---|\n")
	for _, name := range []string{"inet_sock_set_state", "tcp_sockops", "record_connect4", "tcp_receive_reset", "tcp_send_reset", "tcp_retransmit_skb"} {
		s := after[name].Sub(before[name])
		fmt.Fprintf(&b, "| %s | %d | %.0f |\n", name, s.Runs, s.PerRun())
		t.Logf("%s: %d runs, %.0f ns/run", name, s.Runs, s.PerRun())
		require.NotZero(t, s.Runs, name)
	}
	addSection(b.String())
}
