//go:build bench

package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestHelperSynFlood is not a benchmark: run as a child process by
// TestBenchDrops, it sends TCP SYNs with a new source port each out of
// SYN_IFACE (AF_PACKET, below its namespace's stack) for SYN_SECONDS and
// prints how many it sent.
func TestHelperSynFlood(t *testing.T) {
	if os.Getenv("SYN_SECONDS") == "" {
		t.Skip("helper process of TestBenchDrops (privileged benchmark), not run on its own")
	}
	secs, _ := strconv.Atoi(os.Getenv("SYN_SECONDS"))
	srcMAC, err := net.ParseMAC(os.Getenv("SYN_SRC_MAC"))
	require.NoError(t, err)
	dstMAC, err := net.ParseMAC(os.Getenv("SYN_DST_MAC"))
	require.NoError(t, err)
	src, dst := netip.MustParseAddr(os.Getenv("SYN_SRC")), netip.MustParseAddrPort(os.Getenv("SYN_DST"))
	sent := 0
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for time.Now().Before(deadline) {
		const batch = 20000
		require.NoError(t, testnet.SendFrames(nil, os.Getenv("SYN_IFACE"), dstMAC, batch, func(i int, buf []byte) []byte {
			return testnet.TCPSYNFrame(buf, srcMAC, dstMAC, src, dst.Addr(), uint16(1024+(sent+i)%64000), dst.Port())
		}))
		sent += batch
	}
	fmt.Printf("SYNFLOOD sent=%d\n", sent)
}

// nsCounter reads a counter of /proc/net/snmp in ns: group (Tcp:), name.
func nsCounter(t *testing.T, ns *testnet.Netns, group, name string) int64 {
	v, err := testnet.SNMP(ns, "/proc/net/snmp", group, name)
	require.NoError(t, err)
	return int64(v)
}

// dropCounts follows what the receiver reported: the cumulative
// ebpfnet.packets.dropped by reason, and drops_full.
type dropCounts struct {
	byReason     map[string]*atomic.Int64
	full, missed atomic.Int64
}

func newDropCounts(reasons ...string) *dropCounts {
	d := &dropCounts{byReason: map[string]*atomic.Int64{}}
	for _, r := range reasons {
		d.byReason[r] = new(atomic.Int64)
	}
	return d
}

func (d *dropCounts) consume(_ context.Context, md pmetric.Metrics) error {
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		sms := md.ResourceMetrics().At(i).ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				d.point(ms.At(k))
			}
		}
	}
	return nil
}

func (d *dropCounts) point(m pmetric.Metric) {
	if m.Type() != pmetric.MetricTypeSum {
		return
	}
	dps := m.Sum().DataPoints()
	sums := map[string]int64{}
	for p := 0; p < dps.Len(); p++ {
		a := dps.At(p).Attributes()
		switch m.Name() {
		case "ebpfnet.packets.dropped":
			r, _ := a.Get("ebpfnet.drop.reason")
			sums[r.Str()] += dps.At(p).IntValue()
		case "ebpfnet.packets.uncounted":
			switch r, _ := a.Get("reason"); r.Str() {
			case "drops_full":
				d.full.Store(dps.At(p).IntValue())
			case "drops_missed":
				d.missed.Store(dps.At(p).IntValue())
			}
		}
	}
	for r, v := range sums {
		if c := d.byReason[r]; c != nil {
			c.Store(v)
		}
	}
}

// TestBenchDrops: the drop path under a SYN flood to a closed port (every
// SYN a new 5-tuple, the most a child process sends on this machine), with
// the receiver running all three signals: kfree_skb's cost per drop
// (bpf_stats), the collector's CPU, and the count against the kernel's
// (every SYN to a port nobody listens on gets one reset: the namespace's
// TcpOutRsts; a rule drops the resets: its counter). Then a clean transfer
// with and without the drop program, interleaved: the packet path does not
// run it.
func TestBenchDrops(t *testing.T) {
	testnet.RequireRoot(t)
	node := testnet.NewNode(t, 89)
	a, b := node.AddPod(t, 2), node.AddPod(t, 3)
	_, err := b.NS.Exec("iptables", "-w", "-A", "OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-m", "comment", "--comment", "bench-rst", "-j", "DROP")
	require.NoError(t, err)
	statsOff, err := kernel.EnableStats()
	require.NoError(t, err)
	defer statsOff.Close()
	secs := 10
	if s, err := strconv.Atoi(os.Getenv("BENCH_DROP_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	n := reps()
	var perDrop, cpuUser, cpuSys, rate, lossRows []float64
	var lost []string
	for rep := 0; rep < n; rep++ {
		r := synFlood(t, node, a, b, secs)
		perDrop, cpuUser, cpuSys, rate = append(perDrop, r.perDrop), append(cpuUser, r.user), append(cpuSys, r.sys), append(rate, r.rate)
		lossRows = append(lossRows, float64(r.unaccounted))
		lost = append(lost, r.summary)
	}
	clean := cleanTransfers(t, node, a, b, n)

	var s strings.Builder
	s.WriteString("## Drops: the kfree_skb program under a drop storm\n\n")
	s.WriteString("Reproduce: `make bench` (or `go test -count=1 -tags bench -run TestBenchDrops -v ./bench/`). A child process in pod A sends TCP SYNs\n")
	fmt.Fprintf(&s, "to a port nobody listens on in pod B, a new source port each (AF_PACKET, as fast as it can), for %d s; B's kernel drops each\n", secs)
	s.WriteString("(`NO_SOCKET`) and answers with a reset, which an iptables rule in B drops (`NETFILTER_DROP`): two drops per SYN, both\n")
	s.WriteString("counted in place in one drop table entry each (the peer's port is not in the key). The receiver runs with all three\n")
	s.WriteString("signals (nop consumers) and default sizes. Cost per drop = kfree_skb run_time_ns / run_cnt (bpf_stats) over the storm;\n")
	s.WriteString("collector CPU = this process's user and system time over the storm (the sender is another process), % of one core.\n")
	s.WriteString("Unaccounted = B's TcpOutRsts (one reset per SYN that found no socket) + the rule's counter − the receiver's\n")
	s.WriteString("`NO_SOCKET` + `NETFILTER_DROP` − `drops_full` − `drops_missed`: 0 means every drop the kernel made is in the metrics or counted as\n")
	s.WriteString("not recorded. Consecutive drops of one key on one CPU add to a per-CPU slot (no hash lookup; `drop_cache` in bpf/maps.h).\n")
	fmt.Fprintf(&s, "%d storms: median (min–max).\n\n", n)
	s.WriteString("| SYNs dropped per second | kfree_skb ns per drop | collector CPU, user (% of a core) | collector CPU, sys | unaccounted |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&s, "| %s | %s | %s | %s | %s |\n\n", summarize(rate).format("", 1, 0), summarize(perDrop).format("", 1, 0),
		summarize(cpuUser).format("", 1, 1), summarize(cpuSys).format("", 1, 1), summarize(lossRows).format("", 1, 0))
	for _, l := range lost {
		fmt.Fprintf(&s, "- %s\n", l)
	}
	s.WriteString("\n" + clean)
	addSection(s.String())
}

type stormResult struct {
	perDrop, user, sys, rate float64
	unaccounted              int64
	summary                  string
}

// synFlood runs one storm with a fresh receiver.
func synFlood(t *testing.T, node *testnet.Node, a, b *testnet.Pod, secs int) stormResult {
	counts := newDropCounts("NO_SOCKET", "NETFILTER_DROP")
	mc, err := consumer.NewMetrics(counts.consume)
	require.NoError(t, err)
	cfg, stop := startReceiver(t, node, consumertest.NewNop(), mc, consumertest.NewNop())
	time.Sleep(cfg.Interval) // attached, a first collection done
	rsts0 := nsCounter(t, b.NS, "Tcp:", "OutRsts")
	rule0 := iptablesPackets(t, b.NS, "OUTPUT", "bench-rst")
	before, err := kernel.SystemProgramStats("kfree_skb")
	require.NoError(t, err)
	user0, sys0 := cpuTime()
	wall0 := time.Now()
	cmd := exec.Command("ip", "netns", "exec", a.NS.Name, os.Args[0], "-test.run=^TestHelperSynFlood$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "SYN_SECONDS="+strconv.Itoa(secs), "SYN_IFACE=eth0", "SYN_SRC_MAC="+a.MAC, "SYN_DST_MAC="+b.MAC,
		"SYN_SRC="+a.IPv4.String(), "SYN_DST="+b.IPv4.String()+":9999")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	user1, sys1 := cpuTime()
	wall := time.Since(wall0)
	after, err := kernel.SystemProgramStats("kfree_skb")
	require.NoError(t, err)
	time.Sleep(2 * cfg.Interval) // the storm's last interval reported
	stop()
	var sent int64
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "SYNFLOOD ") {
			fmt.Sscanf(l, "SYNFLOOD sent=%d", &sent)
		}
	}
	rsts := nsCounter(t, b.NS, "Tcp:", "OutRsts") - rsts0
	rule := iptablesPackets(t, b.NS, "OUTPUT", "bench-rst") - rule0
	k := after["kfree_skb"].Sub(before["kfree_skb"])
	noSocket, nf, full := counts.byReason["NO_SOCKET"].Load(), counts.byReason["NETFILTER_DROP"].Load(), counts.full.Load()+counts.missed.Load()
	r := stormResult{perDrop: k.PerRun(), user: 100 * (user1 - user0).Seconds() / wall.Seconds(), sys: 100 * (sys1 - sys0).Seconds() / wall.Seconds(),
		rate: float64(rsts) / wall.Seconds(), unaccounted: rsts + rule - noSocket - nf - full}
	r.summary = fmt.Sprintf("sent %d SYNs; the kernel: %d resets sent (TcpOutRsts), %d dropped by the rule; the receiver: NO_SOCKET %d, NETFILTER_DROP %d, drops_full + drops_missed %d; kfree_skb ran %d times",
		sent, rsts, rule, noSocket, nf, full, k.Runs)
	t.Log(r.summary)
	return r
}

// iptablesPackets reads the packet counter of the rule with comment.
func iptablesPackets(t *testing.T, ns *testnet.Netns, chain, comment string) int64 {
	p, _, err := testnet.RuleCounters(ns, chain, comment)
	require.NoError(t, err)
	return int64(p)
}

// cleanTransfers: 256 MiB pod to pod with the drop program and without
// (drops.enabled false), interleaved n times: throughput and kfree_skb
// runs, the packet path's view of a tracepoint that fires only on drops.
func cleanTransfers(t *testing.T, node *testnet.Node, a, b *testnet.Pod, n int) string {
	const size = 256 << 20
	gbps := map[bool][]float64{}
	var runs []float64
	for rep := 0; rep < n; rep++ {
		for _, drops := range []bool{true, false} {
			_, stop := startReceiverWith(t, node, func(c *ebpfnetConfig) { c.Drops.Enabled = drops })
			before, err := kernel.SystemProgramStats("kfree_skb")
			require.NoError(t, err)
			start := time.Now()
			require.NoError(t, testnet.TCPTransfer(a.NS, b.NS, netip.AddrPortFrom(b.IPv4, 7400), size))
			gbps[drops] = append(gbps[drops], float64(size)*8/time.Since(start).Seconds()/1e9)
			if drops {
				after, err := kernel.SystemProgramStats("kfree_skb")
				require.NoError(t, err)
				runs = append(runs, float64(after["kfree_skb"].Sub(before["kfree_skb"]).Runs))
			}
			stop()
		}
	}
	var s strings.Builder
	s.WriteString("Nothing dropping: a 256 MiB TCP transfer pod to pod with the receiver running, with the drop program and without it\n")
	fmt.Fprintf(&s, "(`drops: {enabled: false}`), interleaved, %d times each: median (min–max).\n\n", n)
	s.WriteString("| drop program | throughput | kfree_skb runs during the transfer |\n|---|---|---|\n")
	fmt.Fprintf(&s, "| attached | %s | %s |\n", summarize(gbps[true]).format("Gbit/s", 1, 2), summarize(runs).format("", 1, 0))
	fmt.Fprintf(&s, "| not loaded | %s | – |\n", summarize(gbps[false]).format("Gbit/s", 1, 2))
	return s.String()
}
