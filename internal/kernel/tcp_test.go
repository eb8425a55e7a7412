package kernel

import (
	"context"
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
