package kernel

import (
	"context"
	"fmt"
	"github.com/ebpfnet/ebpfnet/internal/flow"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestConnRingFullIsCounted: with a one-page ring and nobody reading it, a
// burst of connections overflows it; every connection is either in the ring
// or counted as lost.
func TestConnRingFullIsCounted(t *testing.T) {
	testnet.RequireRoot(t)
	d, err := Load(Options{MaxFlows: 64, RingSize: 4096})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	require.NoError(t, d.AttachTCP())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := netip.MustParseAddrPort(ln.Addr().String())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		acceptAndClose(ln)
	}()
	const n = 100
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr.String())
		require.NoError(t, err)
		c.Close()
	}
	ln.Close()
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // let the last sockets reach CLOSE

	// Now read what the ring holds: ours are the sockets on the listener's port.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ours := 0
	_ = d.readEvents(ctx, func(e *ConnEvent) {
		if e.LocalPort == addr.Port() || e.RemotePort == addr.Port() {
			ours++
		}
	})
	c, err := d.Counters()
	require.NoError(t, err)
	lost := c[flow.ReasonConnEventsFull].Packets
	require.NotZero(t, lost, "a 4 KiB ring cannot hold %d connections", 2*n)
	require.Less(t, ours, 2*n)
	// Other sockets on the host may close meanwhile and take ring slots or
	// be lost too, so ours + lost is at least the connections we made.
	require.GreaterOrEqual(t, uint64(ours)+lost, uint64(2*n), "every connection is in the ring or counted as lost")
}

// TestSockopsAloneReportsConnections: the kernel skips the tracepoint
// program when it is already running on that CPU, so for sockets created
// after the attach sockops must record start, establishment and close on
// its own. With only sockops attached, connections (and a refused connect)
// are reported with both roles, matching ISN pairs, ordered times and the
// payload bytes each side wrote.
func TestSockopsAloneReportsConnections(t *testing.T) {
	testnet.RequireRoot(t)
	d, err := Load(Options{MaxFlows: 64})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	d.mu.Lock()
	err = d.attachSockopsLocked()
	d.mu.Unlock()
	require.NoError(t, err)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := netip.MustParseAddrPort(ln.Addr().String())
	const n, payload, reply = 20, 1000, 777
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, payload)
		for i := 0; i < n; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.ReadFull(c, buf)
			_, _ = c.Write(make([]byte, reply))
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr.String())
		require.NoError(t, err)
		_, err = c.Write(make([]byte, payload))
		require.NoError(t, err)
		got, _ := io.Copy(io.Discard, c) // to EOF: the server read everything, replied and closed
		require.EqualValues(t, reply, got)
		c.Close()
	}
	wg.Wait()
	// A port nobody listens on: refused.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedPort := netip.MustParseAddrPort(closed.Addr().String()).Port()
	closed.Close()
	_, err = net.Dial("tcp", closed.Addr().String())
	require.Error(t, err)
	ln.Close()
	time.Sleep(200 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	clients := map[[2]uint32]ConnEvent{}
	servers := map[[2]uint32]ConnEvent{}
	refused := 0
	_ = d.readEvents(ctx, func(e *ConnEvent) {
		switch {
		case e.RemotePort == closedPort:
			require.Equal(t, uint8(flow.Refused), e.Result)
			refused++
		case e.RemotePort == addr.Port() && e.Role == uint8(flow.Client):
			clients[[2]uint32{e.ClientIsn, e.ServerIsn}] = *e
		case e.LocalPort == addr.Port() && e.Role == uint8(flow.Server):
			servers[[2]uint32{e.ClientIsn, e.ServerIsn}] = *e
		}
	})
	require.Equal(t, 1, refused)
	require.Len(t, clients, n)
	require.Len(t, servers, n)
	for isns, c := range clients {
		s, ok := servers[isns]
		require.True(t, ok, "client ISN pair %v has a server side", isns)
		// What each application wrote, as the other side's socket and its
		// own count it: the client's payload, the server's reply.
		require.EqualValues(t, payload, c.BytesAcked, "client bytes sent")
		require.EqualValues(t, payload, s.BytesReceived, "server bytes received")
		require.EqualValues(t, reply, s.BytesAcked, "server bytes sent")
		require.EqualValues(t, reply, c.BytesReceived, "client bytes received")
		require.Equal(t, uint8(flow.Closed), c.Result)
		for _, e := range []ConnEvent{c, s} {
			require.NotZero(t, e.StartNs)
			require.LessOrEqual(t, e.StartNs, e.EstablishedNs)
			require.Less(t, e.EstablishedNs, e.EndNs)
		}
		require.Less(t, c.StartNs, s.StartNs, "the client connects before the server socket exists")
	}
}

// socketLB is testnet.SocketLB at attach, closed with the test.
func socketLB(t *testing.T, attach ebpf.AttachType, service, backend netip.AddrPort) *ebpf.Program {
	t.Helper()
	prog, err := testnet.SocketLB(attach, service, backend)
	require.NoError(t, err)
	t.Cleanup(func() { prog.Close() })
	return prog
}

// TestDialedAddressUnderSocketLB: with a socket-level load balancer
// rewriting a "ClusterIP" to a backend at connect(), the client's event
// carries the backend as the socket's peer and the Service address it
// dialed; without the rewrite, dialed equals the peer.
func TestDialedAddressUnderSocketLB(t *testing.T) {
	testnet.RequireRoot(t)
	d, err := Load(Options{MaxFlows: 64})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	require.NoError(t, d.AttachTCP()) // ours first, as a receiver started before the LB would be

	ln, err := net.Listen("tcp", "127.0.0.2:0")
	require.NoError(t, err)
	defer ln.Close()
	backend := netip.MustParseAddrPort(ln.Addr().String())
	service := netip.MustParseAddrPort("127.0.0.99:80")
	root, err := Cgroup2Root()
	require.NoError(t, err)
	l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: ebpf.AttachCGroupInet4Connect, Program: socketLB(t, ebpf.AttachCGroupInet4Connect, service, backend)})
	require.NoError(t, err)
	defer l.Close()

	go acceptAndClose(ln)
	for _, target := range []netip.AddrPort{service, backend} {
		c, err := net.Dial("tcp", target.String())
		require.NoError(t, err, "dial %s", target)
		require.Equal(t, backend.String(), c.RemoteAddr().String(), "the socket sees the backend")
		_, _ = c.Read(make([]byte, 1))
		c.Close()
	}
	time.Sleep(200 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var dialed []netip.AddrPort
	_ = d.readEvents(ctx, func(e *ConnEvent) {
		if e.Role != uint8(flow.Client) || e.RemotePort != backend.Port() {
			return
		}
		require.EqualValues(t, 4, e.DialedFamily)
		a := netip.AddrFrom16(e.DialedAddr).Unmap()
		require.Equal(t, backend.Addr(), netip.AddrFrom16(e.RemoteAddr).Unmap())
		dialed = append(dialed, netip.AddrPortFrom(a, e.DialedPort))
	})
	require.ElementsMatch(t, []netip.AddrPort{service, backend}, dialed)
}

// TestResetsSentAndReceived: a server that aborts (SO_LINGER 0) sends a
// reset; its connection reports one reset sent, the client's one received,
// both ended by a reset.
func TestResetsSentAndReceived(t *testing.T) {
	testnet.RequireRoot(t)
	d, err := Load(Options{MaxFlows: 64})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	require.NoError(t, d.AttachTCP())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Read(make([]byte, 1)) // the client is connected: abort now
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close() // RST
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	_, err = c.Write([]byte{1})
	require.NoError(t, err)
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err, "connection reset")
	c.Close()
	time.Sleep(200 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var server, client *ConnEvent
	_ = d.readEvents(ctx, func(e *ConnEvent) {
		e2 := *e
		switch {
		case e.Role == uint8(flow.Server) && e.LocalPort == port:
			server = &e2
		case e.Role == uint8(flow.Client) && e.RemotePort == port:
			client = &e2
		}
	})
	require.NotNil(t, server)
	require.NotNil(t, client)
	require.EqualValues(t, 1, server.ResetsSent)
	require.EqualValues(t, 0, server.ResetsReceived)
	require.EqualValues(t, 1, client.ResetsReceived)
	require.EqualValues(t, 0, client.ResetsSent)
	require.Equal(t, uint8(flow.Reset), server.Result)
	require.Equal(t, uint8(flow.Reset), client.Result)
}

// TestRetransmitLayoutFromBTF: the tcp_retransmit_skb program is chosen by
// the tracepoint's prototype in the kernel BTF, which gained an error
// argument in 6.17.
func TestRetransmitLayoutFromBTF(t *testing.T) {
	var uts unix.Utsname
	require.NoError(t, unix.Uname(&uts))
	var major, minor int
	_, err := fmt.Sscanf(unix.ByteSliceToString(uts.Release[:]), "%d.%d", &major, &minor)
	require.NoError(t, err)
	v, err := probeVariants(false)
	require.NoError(t, err)
	require.Equal(t, major > 6 || (major == 6 && minor >= 17), v.retransmitErr, "kernel %d.%d", major, minor)
	require.Equal(t, major > 6 || (major == 6 && minor >= 10), v.resetReason, "kernel %d.%d", major, minor)
	require.Equal(t, major > 6 || (major == 6 && minor >= 11), v.dropRxSk, "kernel %d.%d", major, minor)
	require.True(t, v.drops, "kernel %d.%d", major, minor)
}

// TestConnStateFullCountsEachSocketOnce: with a 16-entry connection map,
// 40 connections held open (80 sockets) leave at least 64 sockets untracked,
// each counted once in conn_state_full (the tracepoint and sockops both
// failed to insert it, and both used to count it).
func TestConnStateFullCountsEachSocketOnce(t *testing.T) {
	testnet.RequireRoot(t)
	d, err := Load(Options{MaxFlows: 64, MaxConns: 16})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	require.NoError(t, d.AttachTCP())
	before, err := d.Counters()
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	const n = 40
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		s, err := ln.Accept()
		require.NoError(t, err)
		conns = append(conns, c, s)
	}
	after, err := d.Counters()
	require.NoError(t, err)
	lost := after[flow.ReasonConnStateFull].Packets - before[flow.ReasonConnStateFull].Packets
	require.GreaterOrEqual(t, lost, uint64(2*n-16), "at least the sockets past the map's 16 entries")
	// Other sockets of the host may be lost meanwhile too, a few; counted
	// twice, ours alone would be at least 2*(2*n-16) = 128.
	require.LessOrEqual(t, lost, uint64(2*n+8), "each lost socket counted once")
}

// TestPodSocketsOnly: with PodSocketsOnly, the sockets of this process's
// network namespace (the host's here) get no event, however many; those of
// other namespaces (a pod and a remote host of a test node) get theirs, on
// both sides.
func TestPodSocketsOnly(t *testing.T) {
	testnet.RequireRoot(t)
	d, err := Load(Options{MaxFlows: 64, PodSocketsOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	require.NoError(t, d.AttachTCP())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go acceptAndClose(ln)
	hostPort := netip.MustParseAddrPort(ln.Addr().String()).Port()
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		c.Close()
	}
	node := testnet.NewNode(t, 26)
	pod := node.AddPod(t, 2)
	pl, err := testnet.ListenTCP(pod.NS, netip.AddrPortFrom(pod.IPv4, 8080))
	require.NoError(t, err)
	t.Cleanup(pl.Close)
	for i := 0; i < 5; i++ {
		_, err := testnet.Dial(node.Remote.NS, netip.AddrPortFrom(pod.IPv4, 8080), 100, 2*time.Second)
		require.NoError(t, err)
	}
	time.Sleep(300 * time.Millisecond) // the last sockets reach CLOSE

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	host, pods := 0, map[uint8]int{}
	_ = d.readEvents(ctx, func(e *ConnEvent) {
		switch {
		case e.LocalPort == hostPort || e.RemotePort == hostPort:
			host++
		case (e.LocalPort == 8080 || e.RemotePort == 8080) &&
			(addr(e.LocalAddr, e.Family) == pod.IPv4 || addr(e.RemoteAddr, e.Family) == pod.IPv4):
			pods[e.Role]++ // this node's: other tests' pods listen on 8080 too
		}
	})
	require.Zero(t, host, "the host's sockets are not traced")
	require.Equal(t, map[uint8]int{uint8(flow.Client): 5, uint8(flow.Server): 5}, pods, "both sides of every pod connection")
}

// acceptAndClose accepts connections on ln and closes each, until ln is
// closed.
func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}
