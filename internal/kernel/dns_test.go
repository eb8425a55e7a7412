package kernel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// digResult is what dig says of one lookup ("timeout": no answer).
type digResult struct {
	status  string
	latency time.Duration
	size    int
}

// dig runs Debian's dig in ns (testnet.Dig).
func dig(t *testing.T, ns *testnet.Netns, args ...string) digResult {
	r := testnet.Dig(ns, args...)
	if r.Status == "" {
		require.Regexp(t, "timed out|no servers could be reached", r.Output)
		return digResult{status: "timeout"}
	}
	return digResult{status: r.Status, latency: r.Latency, size: r.Size}
}

// delayProxy forwards DNS datagrams from listen (in ns) to upstream and
// the answers back after delay: a slow resolver in front of a real one.
func delayProxy(t *testing.T, ns *testnet.Netns, listen, upstream netip.AddrPort, delay time.Duration) {
	var pc *net.UDPConn
	require.NoError(t, ns.Do(func() (err error) {
		pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen))
		return err
	}))
	var wg sync.WaitGroup
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			q := append([]byte(nil), buf[:n]...)
			wg.Add(1)
			go func() {
				defer wg.Done()
				var up *net.UDPConn
				if ns.Do(func() (err error) { up, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(upstream)); return err }) != nil {
					return
				}
				defer up.Close()
				_, _ = up.Write(q)
				_ = up.SetReadDeadline(time.Now().Add(2 * time.Second))
				a := make([]byte, 4096)
				m, err := up.Read(a)
				if err != nil {
					return
				}
				time.Sleep(delay)
				_, _ = pc.WriteToUDPAddrPort(a[:m], from)
			}()
		}
	}()
}

// TestDNSLookupsMatchDig: Debian's dig in pod A asks Debian's dnsmasq in
// pod B (and, through a proxy in pod C that holds every answer 40 ms, a
// slow resolver; and pod D, which drops every query): answered, NXDOMAIN,
// over TCP, slow, timed out. Each lookup the kernel side reports on A's
// veth matches what dig saw: the status, the name, the type, the latency
// within 1 ms of dig's Query time (dig rounds to a millisecond); B's veth
// reports the server's view of the same lookups.
func TestDNSLookupsMatchDig(t *testing.T) {
	n := newDropNode(t, 33)
	a, b := n.a, n.b
	c, d := n.AddPod(t, 4), n.AddPod(t, 5)
	attachPods(t, n, c, d)
	big := strings.Repeat("x", 200)
	testnet.Dnsmasq(t, b.NS, b.IPv4.String(), "10.1.2.3 web.shop.test\n10.1.2.4 Api.Shop.test\n",
		fmt.Sprintf("--txt-record=big.shop.test,%q,%q,%q,%q", big, big, big, big)) // an 800-byte answer
	delayProxy(t, c.NS, netip.AddrPortFrom(c.IPv4, 53), netip.AddrPortFrom(b.IPv4, 53), 40*time.Millisecond)
	_, err := d.NS.Exec("iptables", "-w", "-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP")
	require.NoError(t, err)

	var mu sync.Mutex
	var got []flow.DNSLookup
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- n.d.ReadDNS(ctx, func(l *flow.DNSLookup) { mu.Lock(); got = append(got, *l); mu.Unlock() })
	}()
	type ask struct {
		server *testnet.Pod
		name   string
		args   []string
		want   string
		qtype  uint16
		proto  uint8
	}
	asks := []ask{
		{b, "web.shop.test", []string{"A"}, "NOERROR", 1, flow.ProtoUDP},
		{b, "api.shop.test", []string{"AAAA"}, "NOERROR", 28, flow.ProtoUDP},
		{b, "nope.shop.test", []string{"A"}, "NXDOMAIN", 1, flow.ProtoUDP},
		{b, "web.shop.test", []string{"A", "+tcp"}, "NOERROR", 1, flow.ProtoTCP},
		{b, "big.shop.test", []string{"TXT", "+bufsize=4096"}, "NOERROR", 16, flow.ProtoUDP}, // EDNS0: over 512 bytes in UDP
		{c, "web.shop.test", []string{"A"}, "NOERROR", 1, flow.ProtoUDP},
		{d, "web.shop.test", []string{"A"}, "timeout", 1, flow.ProtoUDP},
	}
	// One lookup of ours per dig, by transaction ID (+qid). dig's Query
	// time is its own clock around its event loop, in whole milliseconds:
	// on a busy machine (make test runs packages in parallel) a run can lag
	// by milliseconds, so a lookup whose latency is not within 1 ms (or 5%)
	// of dig's is asked again, at most five times, each attempt logged.
	find := func(id uint16, side flow.DNSSide, client netip.Addr) []flow.DNSLookup {
		mu.Lock()
		defer mu.Unlock()
		var out []flow.DNSLookup
		for _, l := range got {
			if l.ID == id && l.Side == side && l.Client.Addr() == client && (side == flow.DNSServer || l.Endpoint == client) {
				out = append(out, l)
			}
		}
		return out
	}
	for i, q := range asks {
		for attempt := 0; ; attempt++ {
			id := uint16(1000 + 10*i + attempt)
			r := dig(t, a.NS, append([]string{"@" + q.server.IPv4.String(), q.name, "+qid=" + strconv.Itoa(int(id))}, q.args...)...)
			require.Equal(t, q.want, r.status, "dig %s %v", q.name, q.args)
			if q.qtype == 16 {
				require.Greater(t, r.size, 512, "an answer over 512 bytes")
			}
			if q.want == "timeout" {
				time.Sleep(1100 * time.Millisecond) // the query ages past the timeout
				timeouts, err := n.d.ExpireDNS(nil, time.Second)
				require.NoError(t, err)
				mu.Lock()
				got = append(got, timeouts...)
				mu.Unlock()
			}
			var client []flow.DNSLookup
			require.Eventually(t, func() bool { client = find(id, flow.DNSClient, a.IPv4); return len(client) > 0 },
				2*time.Second, 20*time.Millisecond, "%s %v: a lookup with ID %d on A's veth", q.name, q.args, id)
			require.Len(t, client, 1)
			l := client[0]
			require.Equal(t, q.name, l.Name)
			require.Equal(t, q.qtype, l.QType)
			require.EqualValues(t, 1, l.QClass, "IN")
			require.Equal(t, q.proto, l.Protocol)
			require.Equal(t, q.server.IPv4, l.Server.Addr())
			status := l.ErrorType()
			if status == "" {
				status = "NOERROR"
			}
			require.Equal(t, q.want, status, q.name)
			t.Logf("%s %v @%s: %s in %v (dig: %v)", q.name, q.args, q.server.Name, status, l.Latency, r.latency)
			if q.want == "timeout" {
				require.True(t, l.TimedOut)
				break
			}
			server := find(id, flow.DNSServer, a.IPv4)
			require.Len(t, server, 1, "%s: the resolver's veth saw it too", q.name)
			require.LessOrEqual(t, server[0].Latency, l.Latency, "answered at the server before it arrived at the client")
			// dig's Query time moves in steps of this machine's tick (0,
			// 4, 40, 44 ms at HZ=250): within a step of ours. Over TCP it
			// includes its connection setup: ours can only be shorter.
			diff := (l.Latency - r.latency).Abs()
			if q.proto == flow.ProtoTCP {
				diff = max(l.Latency-r.latency, 0)
			}
			if diff <= digStep || diff <= r.latency/20 {
				if q.proto == flow.ProtoUDP {
					requireClientClock(t, a.NS, q.server.IPv4, q.name, q.qtype, uint16(3000+10*i+attempt), find)
				}
				break
			}
			require.Less(t, attempt, 4, "%s: latency %v, dig said %v (5 attempts)", q.name, l.Latency, r.latency)
		}
	}
	// Without EDNS0 the 800-byte answer does not fit: dnsmasq sets TC and
	// dig asks again over TCP, with the same ID.
	r := dig(t, a.NS, "@"+b.IPv4.String(), "big.shop.test", "TXT", "+noedns", "+qid=2000")
	require.Equal(t, "NOERROR", r.status)
	require.Greater(t, r.size, 512, "the full answer, over TCP")
	var udp, tcp []flow.DNSLookup
	require.Eventually(t, func() bool {
		udp, tcp = nil, nil
		for _, l := range find(2000, flow.DNSClient, a.IPv4) {
			if l.Protocol == flow.ProtoUDP {
				udp = append(udp, l)
			} else {
				tcp = append(tcp, l)
			}
		}
		return len(udp) == 1 && len(tcp) == 1
	}, 2*time.Second, 20*time.Millisecond, "a truncated UDP answer and its TCP retry")
	require.True(t, udp[0].Truncated(), "TC set")
	require.False(t, tcp[0].Truncated())
	retries := flow.TruncatedRetries{Window: 5 * time.Second}
	pair := []flow.DNSLookup{udp[0], tcp[0]}
	retries.Link(pair)
	require.Equal(t, pair[0].TraceID, pair[1].TraceID, "the TCP retry is linked to the truncated answer")
	require.True(t, pair[1].TCPRetry)
	cancel()
	require.NoError(t, <-done)
}

// attachPods attaches the datapath to more pods of a drop node.
func attachPods(t *testing.T, n *dropNode, pods ...*testnet.Pod) {
	for _, p := range pods {
		idx, err := net.InterfaceByName(p.Veth)
		require.NoError(t, err)
		br, err := net.InterfaceByName(n.Bridge)
		require.NoError(t, err)
		require.NoError(t, n.d.Attach(idx.Index, p.Veth, RoleEndpoint, br.Index), fmt.Sprint(p.Name))
	}
}

// TestDNSPendingFullIsCounted: with a 16-entry query map, 40 queries to a
// resolver pod that never answers, each seen on the client's veth and on
// the resolver's (80 transactions): 16 wait (and time out), the other 64
// are counted as not reported; none is lost silently.
func TestDNSPendingFullIsCounted(t *testing.T) {
	n := newDropNodeWith(t, 35, Options{MaxFlows: 4096, MaxDNSPending: 16})
	_, err := n.b.NS.Exec("iptables", "-w", "-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP")
	require.NoError(t, err)
	c0, err := n.d.Counters()
	require.NoError(t, err)
	var conn net.Conn
	require.NoError(t, n.a.NS.Do(func() (err error) {
		conn, err = net.Dial("udp", netip.AddrPortFrom(n.b.IPv4, 53).String())
		return err
	}))
	defer conn.Close()
	q := []byte{0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'e', 'b', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1}
	for id := range 40 {
		q[0], q[1] = byte(id>>8), byte(id)
		_, err := conn.Write(q)
		require.NoError(t, err)
	}
	time.Sleep(100 * time.Millisecond)
	c1, err := n.d.Counters()
	require.NoError(t, err)
	full := c1[flow.ReasonDNSPendingFull].Packets - c0[flow.ReasonDNSPendingFull].Packets
	timeouts, err := n.d.ExpireDNS(nil, 0)
	require.NoError(t, err)
	mine := 0
	for _, l := range timeouts {
		if l.Server.Addr() == n.b.IPv4 && l.TimedOut && l.Name == "web.test" {
			mine++
		}
	}
	require.EqualValues(t, 80, uint64(mine)+full, "timed out %d + counted as not reported %d", mine, full)
	require.Equal(t, 16, mine, "the map holds 16")
}

// digStep is the resolution of dig's Query time here (the kernel tick).
const digStep = 4 * time.Millisecond

// requireClientClock asks server for name from ns with a query of id on a
// UDP socket, timing it with the monotonic clock around its write and its
// read (a client's own view at microsecond resolution), and requires the
// kernel side's latency of that transaction to be within 1 ms (or 5%) of
// it, and not above it. Up to five attempts on a busy machine.
func requireClientClock(t *testing.T, ns *testnet.Netns, server netip.Addr, name string, qtype, id uint16,
	find func(uint16, flow.DNSSide, netip.Addr) []flow.DNSLookup) {
	var conn *net.UDPConn
	require.NoError(t, ns.Do(func() (err error) {
		conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(server, 53)))
		return err
	}))
	defer conn.Close()
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
	for attempt := uint16(0); ; attempt++ {
		q := []byte{byte((id + attempt) >> 8), byte(id + attempt), 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
		for _, l := range strings.Split(name, ".") {
			q = append(q, byte(len(l)))
			q = append(q, l...)
		}
		q = append(q, 0, byte(qtype>>8), byte(qtype), 0, 1)
		start := time.Now()
		_, err := conn.Write(q)
		require.NoError(t, err)
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(2*time.Second)))
		_, err = conn.Read(make([]byte, 4096))
		took := time.Since(start)
		require.NoError(t, err)
		var got []flow.DNSLookup
		require.Eventually(t, func() bool { got = find(id+attempt, flow.DNSClient, local); return len(got) == 1 },
			2*time.Second, 20*time.Millisecond, "the lookup of ID %d", id+attempt)
		diff := took - got[0].Latency
		t.Logf("%s: %v on the veth, %v by the client's clock", name, got[0].Latency, took)
		if diff >= 0 && (diff <= time.Millisecond || diff <= took/20) {
			return
		}
		require.Less(t, attempt, uint16(4), "%s: latency %v, the client measured %v (5 attempts)", name, got[0].Latency, took)
	}
}
