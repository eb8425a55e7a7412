//go:build bench

package bench

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// echoServer answers every message of size bytes with size bytes, on every
// connection, until the listener closes.
func echoServer(t *testing.T, ns *testnet.Netns, addr netip.AddrPort, size int) func() {
	var ln net.Listener
	require.NoError(t, ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	}))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, size)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return func() { ln.Close() }
}

// dialIn connects from ns to addr (the socket stays in ns).
func dialIn(ns *testnet.Netns, addr netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.Dial("tcp", addr.String())
		return err
	})
	return c, err
}

// pingPong times n round trips of size bytes from ns to addr: on one
// connection, or on a new connection each (connect, request, response,
// close). Durations in microseconds.
func pingPong(t *testing.T, ns *testnet.Netns, addr netip.AddrPort, size, n int, persistent bool) []float64 {
	out := make([]float64, 0, n)
	msg, buf := make([]byte, size), make([]byte, size)
	roundTrip := func(c net.Conn) {
		_, err := c.Write(msg)
		require.NoError(t, err)
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err)
	}
	if persistent {
		c, err := dialIn(ns, addr)
		require.NoError(t, err)
		defer c.Close()
		roundTrip(c) // warm
		for range n {
			start := time.Now()
			roundTrip(c)
			out = append(out, float64(time.Since(start).Nanoseconds())/1e3)
		}
		return out
	}
	for range n {
		start := time.Now()
		c, err := dialIn(ns, addr)
		require.NoError(t, err)
		roundTrip(c)
		c.Close()
		out = append(out, float64(time.Since(start).Nanoseconds())/1e3)
	}
	return out
}

func percentile(xs []float64, p float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// TestBenchLatency: request/response round trips (1-byte and 1 KiB
// messages, on one connection and on a new connection each) between two
// pods and from a remote host to a pod, without and with the receiver (the
// endpoint and uplink programs and the TCP lifecycle programs, drained
// every second), interleaved; p50 and p99 of each run.
func TestBenchLatency(t *testing.T) {
	testnet.RequireRoot(t)
	node := testnet.NewNode(t, 100)
	client, server := node.AddPod(t, 2), node.AddPod(t, 3)
	type path struct {
		name string
		from *testnet.Netns
	}
	paths := []path{{"pod → pod", client.NS}, {"remote → pod", node.Remote.NS}}
	type kind struct {
		name       string
		size, n    int
		persistent bool
	}
	kinds := []kind{{"1 B, one connection", 1, 20000, true}, {"1 KiB, one connection", 1024, 20000, true},
		{"1 B, a connection each", 1, 2000, false}, {"1 KiB, a connection each", 1024, 2000, false}}
	type key struct{ p, k int }
	type sample struct{ p50, p99 []float64 }
	base, with := map[key]*sample{}, map[key]*sample{}
	for ki, k := range kinds {
		addr := netip.AddrPortFrom(server.IPv4, uint16(5400+ki))
		defer echoServer(t, server.NS, addr, k.size)()
	}
	record := func(s map[key]*sample, kk key, xs []float64) {
		if s[kk] == nil {
			s[kk] = &sample{}
		}
		s[kk].p50 = append(s[kk].p50, percentile(xs, 0.5))
		s[kk].p99 = append(s[kk].p99, percentile(xs, 0.99))
	}
	for rep := 0; rep < reps(); rep++ {
		for pi, p := range paths {
			for ki, k := range kinds {
				addr := netip.AddrPortFrom(server.IPv4, uint16(5400+ki))
				run := func() []float64 { return pingPong(t, p.from, addr, k.size, k.n, k.persistent) }
				withReceiver := func() []float64 {
					d, stop := attachedNode(t, node)
					defer stop()
					require.NoError(t, d.AttachTCP())
					return run()
				}
				kk := key{pi, ki}
				record(base, kk, run())
				record(with, kk, withReceiver())
				record(with, kk, withReceiver())
				record(base, kk, run())
				t.Logf("rep %d %s, %s: p50 %.1f / %.1f µs", rep, p.name, k.name, base[kk].p50[len(base[kk].p50)-1], with[kk].p50[len(with[kk].p50)-1])
			}
		}
	}
	var b strings.Builder
	b.WriteString("## Request latency (round trips with and without the receiver)\n\n")
	fmt.Fprintf(&b, "Reproduce: `make bench` (or `BENCH_REPS=%d go test -count=1 -timeout 30m -tags bench -run TestBenchLatency -v ./bench/`).\n", reps())
	b.WriteString("A request/response ping-pong over TCP (the client writes the message, the server echoes it), timed by the client\n")
	b.WriteString("around each round trip: on one connection (20,000 round trips a run) and on a new connection each (connect,\n")
	b.WriteString("request, response, close; 2,000 a run), from a pod to a pod on the same bridge and from a remote host through the\n")
	b.WriteString("node's uplink to a pod. \"with\" = the endpoint programs on both pod veths, the uplink programs and the TCP lifecycle\n")
	fmt.Fprintf(&b, "programs (tracepoints, sockops), drained every second. %d repetitions of without, with, with, without; each cell\n", reps())
	b.WriteString("is the median (min–max) over the runs of that run's percentile; Δ = median with − median without.\n\n")
	b.WriteString("| path | round trip | p50 without | p50 with | Δ p50 | p99 without | p99 with | Δ p99 |\n|---|---|---|---|---|---|---|---|\n")
	for pi, p := range paths {
		for ki, k := range kinds {
			bs, ws := base[key{pi, ki}], with[key{pi, ki}]
			b50, w50, b99, w99 := summarize(bs.p50), summarize(ws.p50), summarize(bs.p99), summarize(ws.p99)
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %+.1f µs (%+.1f%%) | %s | %s | %+.1f µs |\n", p.name, k.name,
				b50.format("µs", 1, 1), w50.format("µs", 1, 1), w50.med-b50.med, 100*(w50.med/b50.med-1),
				b99.format("µs", 1, 1), w99.format("µs", 1, 1), w99.med-b99.med)
		}
	}
	addSection(b.String())
}
