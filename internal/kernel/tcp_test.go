package kernel

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
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
	_ = d.ReadConns(ctx, func(e *ConnEvent) {
		if e.LocalPort == addr.Port() || e.RemotePort == addr.Port() {
			ours++
		}
	})
	c, err := d.Counters()
	require.NoError(t, err)
	lost := c[ReasonConnEventsFull].Packets
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
// payload bytes.
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
	const n, payload = 20, 1000
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
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr.String())
		require.NoError(t, err)
		_, err = c.Write(make([]byte, payload))
		require.NoError(t, err)
		_, _ = c.Read(make([]byte, 1)) // EOF: the server read everything and closed
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
	_ = d.ReadConns(ctx, func(e *ConnEvent) {
		switch {
		case e.RemotePort == closedPort:
			require.Equal(t, ResultRefused, e.Result)
			refused++
		case e.RemotePort == addr.Port() && e.Role == RoleClient:
			clients[[2]uint32{e.ClientIsn, e.ServerIsn}] = *e
		case e.LocalPort == addr.Port() && e.Role == RoleServer:
			servers[[2]uint32{e.ClientIsn, e.ServerIsn}] = *e
		}
	})
	require.Equal(t, 1, refused)
	require.Len(t, clients, n)
	require.Len(t, servers, n)
	for isns, c := range clients {
		s, ok := servers[isns]
		require.True(t, ok, "client ISN pair %v has a server side", isns)
		require.EqualValues(t, payload, c.BytesAcked)
		require.EqualValues(t, payload, s.BytesReceived)
		require.Equal(t, ResultClosed, c.Result)
		for _, e := range []ConnEvent{c, s} {
			require.NotZero(t, e.StartNs)
			require.LessOrEqual(t, e.StartNs, e.EstablishedNs)
			require.Less(t, e.EstablishedNs, e.EndNs)
		}
		require.Less(t, c.StartNs, s.StartNs, "the client connects before the server socket exists")
	}
}
