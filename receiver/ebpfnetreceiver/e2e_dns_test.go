package ebpfnetreceiver

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// servfail answers every query at addr in ns with SERVFAIL (the question
// echoed): a resolver whose upstream is broken.
func servfail(t *testing.T, ns *testnet.Netns, addr netip.AddrPort) {
	var pc *net.UDPConn
	require.NoError(t, ns.Do(func() (err error) {
		pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	}))
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			r := append([]byte(nil), buf[:n]...)
			r[2] = 0x80 | r[2]&0x01 // QR, RD as asked
			r[3] = 0x80 | 2         // RA, SERVFAIL
			r[6], r[7], r[8], r[9], r[10], r[11] = 0, 0, 0, 0, 0, 0
			_, _ = pc.WriteToUDPAddrPort(r, from)
		}
	}()
}

// dnsPoints are the points of a DNS histogram on pod's resource, by error.type.
func dnsPoints(md []pmetric.Metrics, name string, pod *testnet.Pod) (counts map[string]uint64, exemplars [][16]byte) {
	counts = map[string]uint64{}
	last := md[len(md)-1]
	for i := 0; i < last.ResourceMetrics().Len(); i++ {
		rm := last.ResourceMetrics().At(i)
		if str(rm.Resource().Attributes(), "k8s.pod.ip") != pod.IPv4.String() {
			continue
		}
		ms := rm.ScopeMetrics().At(0).Metrics()
		for j := 0; j < ms.Len(); j++ {
			if ms.At(j).Name() != name {
				continue
			}
			dps := ms.At(j).Histogram().DataPoints()
			for k := 0; k < dps.Len(); k++ {
				dp := dps.At(k)
				counts[str(dp.Attributes(), "error.type")] += dp.Count()
				for e := 0; e < dp.Exemplars().Len(); e++ {
					exemplars = append(exemplars, dp.Exemplars().At(e).TraceID())
				}
			}
		}
	}
	return counts, exemplars
}

// TestEndToEndDNS: Debian's dig, the Go resolver and glibc's (getent) in
// pod A ask Debian's dnsmasq in pod B, a resolver that answers SERVFAIL in
// pod C, and pod D, which drops every query. dns.lookup.duration on A's
// resource counts exactly what dig saw, by error.type (answered, NXDOMAIN,
// SERVFAIL, timeout), with the resolver as the peer; B's resolver view
// counts what it answered; every lookup has a log record with its name,
// whose trace ID the exemplars point at.
func TestEndToEndDNS(t *testing.T) {
	node := testnet.NewNode(t, 34)
	a, b, c, d := node.AddPod(t, 2), node.AddPod(t, 3), node.AddPod(t, 4), node.AddPod(t, 5)
	testnet.Dnsmasq(t, b.NS, b.IPv4.String(), "10.1.2.3 web.shop.test\n")
	servfail(t, c.NS, netip.AddrPortFrom(c.IPv4, 53))
	_, err := d.NS.Exec("iptables", "-w", "-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP")
	require.NoError(t, err)
	cfg := testConfig(node.ID)
	cfg.DNS.Timeout = time.Second
	s := startAll(t, cfg)

	digs := []struct {
		server *testnet.Pod
		name   string
		status string
		n      int
	}{{b, "web.shop.test", "NOERROR", 3}, {b, "nope.shop.test", "NXDOMAIN", 2}, {c, "web.shop.test", "SERVFAIL", 2}, {d, "web.shop.test", "", 1}}
	for _, q := range digs {
		for range q.n {
			r := testnet.Dig(a.NS, "+time=1", "@"+q.server.IPv4.String(), q.name)
			require.Equal(t, q.status, r.Status, r.Output)
		}
	}
	// The Go resolver and glibc's, through the pod's resolv.conf.
	goRes := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var conn net.Conn
		err := a.NS.Do(func() (err error) {
			conn, err = (&net.Dialer{}).DialContext(ctx, network, netip.AddrPortFrom(b.IPv4, 53).String())
			return err
		})
		return conn, err
	}}
	ips, err := goRes.LookupNetIP(context.Background(), "ip4", "web.shop.test")
	require.NoError(t, err)
	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.1.2.3")}, ips)
	etc := filepath.Join("/etc/netns", a.NS.Name)
	require.NoError(t, os.MkdirAll(etc, 0o755))
	t.Cleanup(func() { _ = os.RemoveAll(etc) })
	require.NoError(t, os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver "+b.IPv4.String()+"\n"), 0o644))
	out, err := a.NS.Exec("getent", "ahostsv4", "glibc.web.shop.test")
	require.Error(t, err, "glibc: %s", out) // NXDOMAIN: getent exits 2
	time.Sleep(cfg.DNS.Timeout + 3*cfg.Interval)
	s.stop()

	counts, exemplars := dnsPoints(s.metrics.AllMetrics(), "dns.lookup.duration", a)
	// dig's lookups, plus the Go resolver's A (answered) and glibc's A
	// (NXDOMAIN) of names it did not ask.
	require.Equal(t, map[string]uint64{"": 3 + 1, "NXDOMAIN": 2 + 1, "SERVFAIL": 2, "timeout": 1}, counts)
	server, _ := dnsPoints(s.metrics.AllMetrics(), "ebpfnet.dns.server.duration", b)
	require.Equal(t, map[string]uint64{"": 3 + 1, "NXDOMAIN": 2 + 1}, server, "the resolver's view: what it answered")

	records := map[string]int{}
	traces := map[[16]byte]bool{}
	forEachRecord(s.logs.AllLogs(), func(res, attrs map[string]any, lr plog.LogRecord) {
		if lr.EventName() != "ebpfnet.dns.lookup" || res["k8s.pod.ip"] != a.IPv4.String() {
			return
		}
		status, _ := attrs["ebpfnet.dns.rcode"].(string)
		if attrs["error.type"] == "timeout" {
			status = "timeout"
		} else {
			require.Equal(t, "QUERY", attrs["ebpfnet.dns.opcode"], "the response's opcode")
		}
		records[attrs["dns.question.name"].(string)+" "+status]++
		traces[lr.TraceID()] = true
	})
	require.Equal(t, map[string]int{"web.shop.test NOERROR": 4, "nope.shop.test NXDOMAIN": 2, "glibc.web.shop.test NXDOMAIN": 1,
		"web.shop.test SERVFAIL": 2, "web.shop.test timeout": 1}, records)
	require.NotEmpty(t, exemplars)
	for _, e := range exemplars {
		require.True(t, traces[e], "exemplar %x names a lookup's log record", e)
	}
}
