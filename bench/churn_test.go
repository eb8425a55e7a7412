//go:build bench

package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/ebpfnet/ebpfnet/internal/convert"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestHelperChurn is not a benchmark: run as a child process by
// TestBenchChurn, it opens and closes CHURN_RATE TCP connections per second
// to CHURN_SERVER (served in CHURN_SERVER_NS) for
// CHURN_SECONDS and prints how many it made. It runs inside the client
// namespace; the listener is created in the server namespace (a socket
// keeps the namespace it was created in).
func TestHelperChurn(t *testing.T) {
	if os.Getenv("CHURN_RATE") == "" {
		t.Skip("helper process of TestBenchChurn (privileged benchmark), not run on its own")
	}
	rate, _ := strconv.Atoi(os.Getenv("CHURN_RATE"))
	secs, _ := strconv.Atoi(os.Getenv("CHURN_SECONDS"))
	server := os.Getenv("CHURN_SERVER")
	var ln net.Listener
	require.NoError(t, (&testnet.Netns{Name: os.Getenv("CHURN_SERVER_NS")}).Do(func() (err error) {
		ln, err = net.Listen("tcp", server)
		return err
	}))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// This process runs inside the client namespace (ip netns exec), so
	// dials need no setns.
	var made, failed atomic.Int64
	var wg sync.WaitGroup
	const workers = 32
	perWorker := time.Duration(float64(time.Second) * workers / float64(rate))
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now()
			for time.Now().Before(deadline) {
				c, err := net.Dial("tcp", server)
				if err == nil {
					err = c.Close()
				}
				if err != nil {
					failed.Add(1)
				} else {
					made.Add(1)
				}
				next = next.Add(perWorker)
				time.Sleep(time.Until(next))
			}
		}()
	}
	wg.Wait()
	fmt.Printf("CHURN made=%d failed=%d\n", made.Load(), failed.Load())
}

// churnPort is the server port of the load's connections.
const churnPort = 7200

// cpuTime is this process's user and system CPU time so far.
func cpuTime() (user, sys time.Duration) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// TestBenchChurn: the receiver (all three signals, default sizes) under
// 1,000, 5,000 and 20,000 new connections per second between two pods, each
// rate three times (BENCH_CHURN_REPS), interleaved; the load runs in a child
// process, so this process's CPU is the collector's.
func TestBenchChurn(t *testing.T) {
	testnet.RequireRoot(t)
	node := testnet.NewNode(t, 92)
	p1 := node.AddPod(t, 2)
	p2 := node.AddPod(t, 3)
	secs := 30
	if v, err := strconv.Atoi(os.Getenv("BENCH_CHURN_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	// 30 s at 20,000/s is 600,000 connections from one client address to
	// one server port.
	busyClient(t, p1.NS)
	statsOff, err := kernel.EnableStats()
	require.NoError(t, err)
	defer statsOff.Close()

	var b strings.Builder
	b.WriteString("## Connection churn (TCP lifecycle programs and the collector)\n\n")
	fmt.Fprintf(&b, "Reproduce: `make bench` (or `go test -count=1 -tags bench -run TestBenchChurn -v ./bench/`, 6 min). A child process opens and closes\n")
	fmt.Fprintf(&b, "TCP connections pod A -> pod B at the given rate for %d s (32 paced workers); the receiver runs in the test process with\n", secs)
	b.WriteString("metrics, logs and traces pipelines (nop consumers) and default sizes (4 MiB ring, 65,536 connection states).\n")
	b.WriteString("Collector CPU = this process's user time and its system time (which includes softirq work of the load the kernel\n")
	b.WriteString("charges to whatever thread it interrupted) over the run, as % of one core. Cost per event = run_time_ns / run_cnt (bpf_stats) over the run.\n")
	b.WriteString("Missing = 2 x connections made - spans emitted (a client and a server span each). Unreported = the receiver's\n")
	b.WriteString("`ebpfnet.connections.unreported` (ring or state map full). Skipped = the tracepoint's `recursion_misses` (the kernel\n")
	b.WriteString("skipped it because it was already running on that CPU; `ebpfnet.tcp.state_changes.missed`): sockops recovers them.\n\n")
	rates := []int{1000, 5000, 20000}
	if v := os.Getenv("BENCH_CHURN_RATES"); v != "" { // e.g. "5000" to profile one rate
		rates = nil
		for _, f := range strings.Split(v, ",") {
			r, err := strconv.Atoi(f)
			require.NoError(t, err)
			rates = append(rates, r)
		}
	}
	n := 3
	if v, err := strconv.Atoi(os.Getenv("BENCH_CHURN_REPS")); err == nil && v > 0 {
		n = v
	}
	fmt.Fprintf(&b, "Each rate %d times (the rates interleaved): median (min–max) over the runs.\n\n", n)
	b.WriteString("| target rate | connections made in the run | spans missing | connections unreported | tracepoint runs skipped | collector CPU, user (% of a core) | collector CPU, sys (% of a core) | inet_sock_set_state ns/run | tcp_sockops ns/run | record_connect4 ns/run |\n|---|---|---|---|---|---|---|---|---|---|\n")
	results := map[int]map[string][]float64{}
	for rep := 0; rep < n; rep++ {
		for _, rate := range rates {
			if results[rate] == nil {
				results[rate] = map[string][]float64{}
			}
			for k, v := range churnRun(t, node, p1, p2, rate, secs) {
				results[rate][k] = append(results[rate][k], v)
			}
		}
	}
	for _, rate := range rates {
		r := results[rate]
		col := func(k, unit string, prec int) string { return summarize(r[k]).format(unit, 1, prec) }
		fmt.Fprintf(&b, "| %d/s | %s, %.0f failed at most | %s | %s | %s | %s | %s | %s | %s | %s |\n", rate, col("made", "", 0), summarize(r["failed"]).max,
			col("missing", "", 0), col("lost", "", 0), col("skipped", "", 0), col("user", "", 1), col("sys", "", 1), col("set", "", 0), col("so", "", 0), col("rc", "", 0))
	}
	addSection(b.String())
}

// churnRun runs the load of TestBenchChurn once at rate for secs against a
// receiver of its own and returns a value per column of the section.
func churnRun(t *testing.T, node *testnet.Node, p1, p2 *testnet.Pod, rate, secs int) map[string]float64 {
	var spans atomic.Int64
	tc, err := consumer.NewTraces(func(_ context.Context, td ptrace.Traces) error {
		// Only the load's connections (other sockets of the host
		// close meanwhile too).
		rss := td.ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			sss := rss.At(i).ScopeSpans()
			for j := 0; j < sss.Len(); j++ {
				ss := sss.At(j).Spans()
				for k := 0; k < ss.Len(); k++ {
					if p, ok := ss.At(k).Attributes().Get(convert.AttrServerPort); ok && p.Int() == churnPort {
						spans.Add(1)
					}
				}
			}
		}
		return nil
	})
	require.NoError(t, err)
	// ebpfnet.connections.unreported is cumulative since this
	// receiver's datapath was loaded: its last value is the loss.
	var lost atomic.Int64
	mc, err := consumer.NewMetrics(func(_ context.Context, md pmetric.Metrics) error {
		if v, ok := sumOf(md, "ebpfnet.connections.unreported"); ok {
			lost.Store(v)
		}
		return nil
	})
	require.NoError(t, err)
	cfg, stop := startConfigured(t, node, tc, mc, consumertest.NewNop(), func(c *ebpfnetConfig) {
		// BENCH_CHURN_RING: another ring size (bytes), to size it for a rate.
		if v, err := strconv.ParseInt(os.Getenv("BENCH_CHURN_RING"), 10, 64); err == nil && v > 0 {
			c.RingBufferSize = v
		}
	})

	progs := []string{"inet_sock_set_state", "tcp_sockops", "record_connect4"}
	before, err := kernel.SystemProgramStats(progs...)
	require.NoError(t, err)

	if path := os.Getenv("BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(fmt.Sprintf("%s.%d", path, rate))
		require.NoError(t, err)
		require.NoError(t, pprof.StartCPUProfile(f))
	}
	user0, sys0 := cpuTime()
	wall0 := time.Now()
	cmd := exec.Command("ip", "netns", "exec", p1.NS.Name, os.Args[0], "-test.run=^TestHelperChurn$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "CHURN_RATE="+strconv.Itoa(rate), "CHURN_SECONDS="+strconv.Itoa(secs),
		"CHURN_SERVER="+p2.IPv4.String()+":"+strconv.Itoa(churnPort), "CHURN_SERVER_NS="+p2.NS.Name)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	user1, sys1 := cpuTime()
	user, sys, wall := user1-user0, sys1-sys0, time.Since(wall0)
	pprof.StopCPUProfile()
	var made, failed int
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "CHURN ") {
			fmt.Sscanf(l, "CHURN made=%d failed=%d", &made, &failed)
		}
	}
	time.Sleep(cfg.Interval + 2*time.Second) // one interval: the last spans
	after, err := kernel.SystemProgramStats(progs...)
	require.NoError(t, err)
	stop()
	set0 := after["inet_sock_set_state"].Sub(before["inet_sock_set_state"])
	so := after["tcp_sockops"].Sub(before["tcp_sockops"])
	rc := after["record_connect4"].Sub(before["record_connect4"])
	res := map[string]float64{"made": float64(made), "failed": float64(failed), "seconds": wall.Seconds(),
		"missing": float64(2*int64(made) - spans.Load()), "lost": float64(lost.Load()), "skipped": float64(set0.RecursionMisses),
		"user": 100 * user.Seconds() / wall.Seconds(), "sys": 100 * sys.Seconds() / wall.Seconds(),
		"set": set0.PerRun(), "so": so.PerRun(), "rc": rc.PerRun()}
	t.Logf("rate %d: %v", rate, res)
	return res
}

// sumOf adds up the data points of the named sum metric.
func sumOf(md pmetric.Metrics, name string) (int64, bool) {
	var total int64
	found := false
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		sms := md.ResourceMetrics().At(i).ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				if m := ms.At(k); m.Name() == name && m.Type() == pmetric.MetricTypeSum {
					found = true
					for p := 0; p < m.Sum().DataPoints().Len(); p++ {
						total += m.Sum().DataPoints().At(p).IntValue()
					}
				}
			}
		}
	}
	return total, found
}
