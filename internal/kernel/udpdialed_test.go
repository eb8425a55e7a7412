package kernel

import (
	"github.com/ebpfnet/ebpfnet/internal/flow"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestUDPDialedUnderSocketLB: with a socket-level load balancer rewriting a
// "ClusterIP" to a backend for sendto() and connect() of UDP sockets, the
// receiver's sendmsg4/connect4 programs, attached first, record the Service
// address each socket sent to with its local port, while the datagrams reach
// the backend. Idle entries are deleted by the read.
func TestUDPDialedUnderSocketLB(t *testing.T) {
	testnet.RequireRoot(t)
	d, err := Load(Options{MaxFlows: 64})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	require.NoError(t, d.AttachTCP()) // ours first, as a receiver started before the LB would be

	server, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.2:0")))
	require.NoError(t, err)
	defer server.Close()
	backend := server.LocalAddr().(*net.UDPAddr).AddrPort()
	service := netip.MustParseAddrPort("127.0.0.98:53")
	root, err := Cgroup2Root()
	require.NoError(t, err)
	for _, attach := range []ebpf.AttachType{ebpf.AttachCGroupUDP4Sendmsg, ebpf.AttachCGroupInet4Connect} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: attach, Program: socketLB(t, attach, service, backend)})
		require.NoError(t, err)
		defer l.Close()
	}
	server6, err := net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[::1]:0")))
	require.NoError(t, err)
	defer server6.Close()
	backend6 := server6.LocalAddr().(*net.UDPAddr).AddrPort()

	local := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0"))
	// Unconnected: sendto the Service, then to the backend itself.
	viaService, err := net.ListenUDP("udp4", local)
	require.NoError(t, err)
	defer viaService.Close()
	_, err = viaService.WriteToUDPAddrPort([]byte("q"), service)
	require.NoError(t, err)
	direct, err := net.ListenUDP("udp4", local)
	require.NoError(t, err)
	defer direct.Close()
	_, err = direct.WriteToUDPAddrPort([]byte("q"), backend)
	require.NoError(t, err)
	// Bound, then connected to the Service. (An unbound connect has no
	// port yet: TestUDPDialedConnectBeforeBind.)
	connected, err := net.DialUDP("udp4", local, net.UDPAddrFromAddrPort(service))
	require.NoError(t, err)
	defer connected.Close()
	_, err = connected.Write([]byte("q"))
	require.NoError(t, err)
	v6, err := net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[::1]:0")))
	require.NoError(t, err)
	defer v6.Close()
	_, err = v6.WriteToUDPAddrPort([]byte("q"), backend6)
	require.NoError(t, err)

	// Every datagram reached the backend: the LB did rewrite.
	require.NoError(t, server.SetReadDeadline(time.Now().Add(2*time.Second)))
	from := map[uint16]bool{}
	for range 3 {
		_, src, err := server.ReadFromUDPAddrPort(make([]byte, 8))
		require.NoError(t, err)
		from[src.Port()] = true
	}
	port := func(c *net.UDPConn) uint16 { return c.LocalAddr().(*net.UDPAddr).AddrPort().Port() }
	require.Equal(t, map[uint16]bool{port(viaService): true, port(direct): true, port(connected): true}, from)

	// Only this test's sockets: other processes may send too.
	ours := func(maxIdle time.Duration) map[uint16]netip.AddrPort {
		got, err := d.UDPDialed(nil, maxIdle)
		require.NoError(t, err)
		m := map[uint16]netip.AddrPort{}
		for _, e := range got {
			switch e.LocalPort {
			case port(viaService), port(direct), port(connected), port(v6):
				m[e.LocalPort] = e.Dialed
			}
		}
		return m
	}
	require.Equal(t, map[uint16]netip.AddrPort{
		port(viaService): service, port(direct): backend, port(connected): service, port(v6): backend6,
	}, ours(time.Minute))

	// Entries idle longer than maxIdle are dropped, and deleted.
	time.Sleep(20 * time.Millisecond)
	require.Empty(t, ours(time.Millisecond))
	require.Empty(t, ours(time.Hour))
}

// TestUDPDialedConnectBeforeBind: a UDP socket that connect()s to a Service
// before it has a local port (Go's net.Dial, glibc's resolver) is recorded
// by its cookie at connect, and its port is added when its first packet
// leaves the pod (the endpoint program on the pod's veth): UDPDialed then
// names the Service for that port, though the datagrams went to the backend.
func TestUDPDialedConnectBeforeBind(t *testing.T) {
	testnet.RequireRoot(t)
	node := testnet.NewNode(t, 78)
	client := node.AddPod(t, 2)
	backendPod := node.AddPod(t, 3)
	d, err := Load(Options{MaxFlows: 64})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	require.NoError(t, d.AttachTCP()) // ours first, as a receiver started before the LB would be
	veth, err := net.InterfaceByName(client.Veth)
	require.NoError(t, err)
	require.NoError(t, d.Attach(veth.Index, client.Veth, RoleEndpoint, 0))

	backend := netip.AddrPortFrom(backendPod.IPv4, 5353)
	service := netip.MustParseAddrPort("10.96.0.10:53")
	root, err := Cgroup2Root()
	require.NoError(t, err)
	l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: ebpf.AttachCGroupInet4Connect,
		Program: socketLB(t, ebpf.AttachCGroupInet4Connect, service, backend)})
	require.NoError(t, err)
	defer l.Close()

	// net.Dial("udp") connects an unbound socket; the LB sends it to the backend.
	port, err := testnet.UDPSendVia(client.NS, backendPod.NS, service, backend, 3, 40)
	require.NoError(t, err)
	flows, err := d.drainEntries(nil)
	require.NoError(t, err)
	var toBackend bool
	for _, f := range flows {
		toBackend = toBackend || (f.Key.SrcPort == port && netip.AddrFrom16(f.Key.DstAddr).Unmap() == backend.Addr())
	}
	require.True(t, toBackend, "the client's flow goes to the backend: %v", flows)

	got, err := d.UDPDialed(nil, time.Minute)
	require.NoError(t, err)
	require.Contains(t, got, flow.UDPDialed{LocalPort: port, Dialed: service})
}

// fillUDPDialed puts n entries in udp_dialed (local ports 1..n to one
// destination), every third of them last used stale ago; it returns how many
// are fresh. stale must not exceed the time since boot (CLOCK_MONOTONIC
// starts at zero): see staleAge.
func fillUDPDialed(tb testing.TB, d *Datapath, n int, stale time.Duration) int {
	now, fresh := MonotonicNow(), 0
	require.LessOrEqual(tb, uint64(stale), now, "a stamp %s before CLOCK_MONOTONIC %d would wrap", stale, now)
	dst := netip.MustParseAddr("10.96.0.10").As16()
	for i := 1; i <= n; i++ {
		k := UDPDialedKey{Addr: dst, Port: 53, LocalPort: uint16(i), Family: 4}
		last := now
		if i%3 == 0 {
			last -= uint64(stale)
		} else {
			fresh++
		}
		require.NoError(tb, d.objs.UdpDialed.Put(&k, &last))
	}
	return fresh
}

// staleAge is how old the test's stale entries are: an hour, or half the
// time since boot on a machine up for less than two hours (CLOCK_MONOTONIC
// cannot be an hour back then), after waiting for at least 2 s of uptime.
func staleAge(tb testing.TB) time.Duration {
	for MonotonicNow() < uint64(2*time.Second) {
		time.Sleep(100 * time.Millisecond)
	}
	return min(time.Hour, time.Duration(MonotonicNow()/2))
}

// TestUDPDialedReadsEveryEntry: the read goes through batches of entries
// (more than one here) and returns every fresh entry once, deleting the
// stale ones.
func TestUDPDialedReadsEveryEntry(t *testing.T) {
	testnet.RequireRoot(t)
	d, err := Load(Options{MaxFlows: 64, MaxConns: 16384})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	const n = 10000 // > drainBatch
	stale := staleAge(t)
	fresh := fillUDPDialed(t, d, n, stale)
	got, err := d.UDPDialed(nil, stale/2)
	require.NoError(t, err)
	ports := map[uint16]bool{}
	for _, e := range got {
		require.Equal(t, netip.MustParseAddrPort("10.96.0.10:53"), e.Dialed)
		require.False(t, ports[e.LocalPort], "port %d twice", e.LocalPort)
		ports[e.LocalPort] = true
	}
	require.Len(t, ports, fresh)
	again, err := d.UDPDialed(nil, stale/2)
	require.NoError(t, err)
	require.Len(t, again, fresh, "the stale entries were deleted, the fresh ones kept")
}
