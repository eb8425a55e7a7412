//go:build bench

package bench

import (
	"context"
	"encoding/binary"
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

// dnsQuery is a query for name (type A, RD) with transaction ID id.
func dnsQuery(id uint16, name string) []byte {
	q := binary.BigEndian.AppendUint16(nil, id)
	q = append(q, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0)
	for _, l := range strings.Split(name, ".") {
		q = append(q, byte(len(l)))
		q = append(q, l...)
	}
	return append(q, 0, 0, 1, 0, 1)
}

// TestHelperDNSLoad is not a benchmark: run as a child process by
// TestBenchDNS in the client's namespace, it sends DNS_RATE queries per
// second to DNS_SERVER for DNS_SECONDS (16 sockets, paced), or, with
// DNS_PLAIN set, as many plain datagrams of the same size to a port that
// is not DNS, and prints what it sent and what was answered.
func TestHelperDNSLoad(t *testing.T) {
	if os.Getenv("DNS_RATE") == "" {
		t.Skip("helper process of TestBenchDNS (privileged benchmark), not run on its own")
	}
	rate, _ := strconv.Atoi(os.Getenv("DNS_RATE"))
	secs, _ := strconv.Atoi(os.Getenv("DNS_SECONDS"))
	server := netip.MustParseAddrPort(os.Getenv("DNS_SERVER"))
	const sockets = 16
	var sent, answered atomic.Int64
	done := make(chan struct{})
	conns := make([]*net.UDPConn, sockets)
	for i := range conns {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server))
		require.NoError(t, err)
		conns[i] = c
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
				answered.Add(1)
			}
		}()
	}
	per := time.Second / time.Duration(rate)
	next, end := time.Now(), time.Now().Add(time.Duration(secs)*time.Second)
	for i := 0; time.Now().Before(end); i++ {
		q := dnsQuery(uint16(i), "web.shop.test")
		if _, err := conns[i%sockets].Write(q); err == nil {
			sent.Add(1)
		}
		next = next.Add(per)
		time.Sleep(time.Until(next))
	}
	time.Sleep(500 * time.Millisecond) // the last answers
	close(done)
	for _, c := range conns {
		c.Close()
	}
	fmt.Printf("DNSLOAD sent=%d answered=%d\n", sent.Load(), answered.Load())
}

// dnsLoad runs the helper in client's namespace and returns what it sent
// and what was answered, and this process's CPU over it (% of a core).
func dnsLoad(t *testing.T, client *testnet.Pod, server netip.AddrPort, rate, secs int) (sent, answered int64, user, sys float64) {
	user0, sys0 := cpuTime()
	wall0 := time.Now()
	cmd := exec.Command("ip", "netns", "exec", client.NS.Name, os.Args[0], "-test.run=^TestHelperDNSLoad$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "DNS_RATE="+strconv.Itoa(rate), "DNS_SECONDS="+strconv.Itoa(secs), "DNS_SERVER="+server.String())
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	user1, sys1 := cpuTime()
	wall := time.Since(wall0).Seconds()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "DNSLOAD ") {
			fmt.Sscanf(l, "DNSLOAD sent=%d answered=%d", &sent, &answered)
		}
	}
	return sent, answered, 100 * (user1 - user0).Seconds() / wall, 100 * (sys1 - sys0).Seconds() / wall
}

// lookupCounts follows dns.lookup.duration's count on the client's
// resource and the DNS loss counters.
type lookupCounts struct {
	lookups, lost atomic.Int64
	client        string
}

func (l *lookupCounts) consume(_ context.Context, md pmetric.Metrics) error {
	var n, lost int64
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		ip, _ := rm.Resource().Attributes().Get("k8s.pod.ip")
		ms := rm.ScopeMetrics().At(0).Metrics()
		for j := 0; j < ms.Len(); j++ {
			m := ms.At(j)
			switch {
			case m.Name() == "dns.lookup.duration" && ip.Str() == l.client:
				for k := 0; k < m.Histogram().DataPoints().Len(); k++ {
					n += int64(m.Histogram().DataPoints().At(k).Count())
				}
			case m.Name() == "ebpfnet.packets.uncounted":
				for k := 0; k < m.Sum().DataPoints().Len(); k++ {
					dp := m.Sum().DataPoints().At(k)
					if r, _ := dp.Attributes().Get("reason"); strings.HasPrefix(r.Str(), "dns_") {
						lost += dp.IntValue()
					}
				}
			}
		}
	}
	l.lookups.Store(n)
	l.lost.Store(lost)
	return nil
}

// TestBenchDNS: the DNS path's cost and the collector's at 5,000 lookups/s.
// Pod A's helper asks Debian's dnsmasq in pod B; the receiver runs all
// three signals (nop consumers; its own metrics counted). The endpoint
// programs' ns/run (bpf_stats) under the DNS load, and under the same rate
// of plain datagrams of the same size to a port that is not DNS, with DNS
// parsing on and off (dns.enabled false), interleaved.
func TestBenchDNS(t *testing.T) {
	testnet.RequireRoot(t)
	node := testnet.NewNode(t, 88)
	a, b := node.AddPod(t, 2), node.AddPod(t, 3)
	testnet.Dnsmasq(t, b.NS, b.IPv4.String(), "10.1.2.3 web.shop.test\n")
	// A sink for the plain datagrams, so they are answered by nobody and
	// dropped by nobody (the kernel would answer a closed port with ICMP).
	var sink *net.UDPConn
	require.NoError(t, b.NS.Do(func() (err error) {
		sink, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.IPv4, 9053)))
		return err
	}))
	defer sink.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, err := sink.Read(buf); err != nil {
				return
			}
		}
	}()
	statsOff, err := kernel.EnableStats()
	require.NoError(t, err)
	defer statsOff.Close()
	const rate = 5000
	secs := 10
	if s, err := strconv.Atoi(os.Getenv("BENCH_DNS_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	n := reps()
	progs := []string{"endpoint_ingress", "endpoint_egress"}
	rows := map[string][]float64{}
	var lostRows []float64
	for rep := 0; rep < n; rep++ {
		for _, c := range []struct {
			row    string
			dns    bool
			target netip.AddrPort
		}{
			{"DNS queries, DNS on", true, netip.AddrPortFrom(b.IPv4, 53)},
			{"plain datagrams, DNS on", true, netip.AddrPortFrom(b.IPv4, 9053)},
			{"plain datagrams, DNS off", false, netip.AddrPortFrom(b.IPv4, 9053)},
		} {
			counts := &lookupCounts{client: a.IPv4.String()}
			mc, err := consumer.NewMetrics(counts.consume)
			require.NoError(t, err)
			cfg, stop := startConfigured(t, node, consumertest.NewNop(), mc, consumertest.NewNop(),
				func(cfg *ebpfnetConfig) { cfg.DNS.Enabled = c.dns })
			time.Sleep(cfg.Interval)
			before, err := kernel.SystemProgramStats(progs...)
			require.NoError(t, err)
			sent, answered, user, sys := dnsLoad(t, a, c.target, rate, secs)
			after, err := kernel.SystemProgramStats(progs...)
			require.NoError(t, err)
			time.Sleep(2 * cfg.Interval)
			stop()
			in, eg := after[progs[0]].Sub(before[progs[0]]), after[progs[1]].Sub(before[progs[1]])
			rows[c.row+" ingress"] = append(rows[c.row+" ingress"], in.PerRun())
			rows[c.row+" egress"] = append(rows[c.row+" egress"], eg.PerRun())
			rows[c.row+" user"] = append(rows[c.row+" user"], user)
			rows[c.row+" sys"] = append(rows[c.row+" sys"], sys)
			if c.row == "DNS queries, DNS on" {
				// Every query is a lookup (answered, or a timeout once
				// dns.timeout passed) or counted as lost.
				unaccounted := sent - counts.lookups.Load() - counts.lost.Load()
				lostRows = append(lostRows, float64(unaccounted))
				t.Logf("sent %d queries, %d answered; reported %d lookups, %d counted as lost", sent, answered, counts.lookups.Load(), counts.lost.Load())
			}
		}
	}
	var s strings.Builder
	s.WriteString("## DNS: the per-packet cost and the collector at 5,000 lookups/s\n\n")
	s.WriteString("Reproduce: `make bench` (or `go test -count=1 -tags bench -run TestBenchDNS -v ./bench/`). A child process in pod A sends 5,000\n")
	fmt.Fprintf(&s, "queries/s (16 UDP sockets, paced) to Debian's dnsmasq in pod B for %d s; then the same rate of plain datagrams of the same\n", secs)
	s.WriteString("size to a UDP port that is not DNS, with DNS parsing on and off (`dns.enabled`), interleaved. The receiver runs all three\n")
	s.WriteString("signals (nop consumers). ns/run = run_time_ns / run_cnt of the pod-endpoint programs (bpf_stats: queries leave A\n")
	s.WriteString("through ingress, answers arrive through egress; B's veth sees the reverse); collector CPU = this process's user and\n")
	s.WriteString("system time over the load, % of one core. Unaccounted = queries sent − `dns.lookup.duration`'s count on A (answered,\n")
	s.WriteString("and the unanswered as timeouts) −\n")
	fmt.Fprintf(&s, "`uncounted{dns_*}`. %d runs: median (min–max).\n\n", n)
	s.WriteString("| load | endpoint_ingress ns/run | endpoint_egress ns/run | collector CPU, user | collector CPU, sys |\n|---|---|---|---|---|\n")
	for _, row := range []string{"DNS queries, DNS on", "plain datagrams, DNS on", "plain datagrams, DNS off"} {
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s |\n", row, summarize(rows[row+" ingress"]).format("", 1, 0),
			summarize(rows[row+" egress"]).format("", 1, 0), summarize(rows[row+" user"]).format("", 1, 1), summarize(rows[row+" sys"]).format("", 1, 1))
	}
	fmt.Fprintf(&s, "\nUnaccounted lookups at 5,000/s: %s.\n", summarize(lostRows).format("", 1, 0))
	addSection(s.String())
}
