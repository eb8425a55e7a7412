package kernel

import (
	"context"
	"net/netip"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestUplinkFIBCacheFollowsRoutes: remote → pod datagrams cross the uplink
// and are de-duplicated (the FIB sends them to the bridge of a pod
// endpoint, the uplink's FIB cache remembers it). A /32 route then sends
// the pod's address to an interface the receiver does not watch: the
// route update alone (no interval in between) makes the uplink count the
// next datagrams as the node's, exactly, and the earlier ones stay
// de-duplicated.
func TestUplinkFIBCacheFollowsRoutes(t *testing.T) {
	testnet.RequireRoot(t)
	n := testnet.NewNode(t, 44)
	pod := n.AddPod(t, 2)
	d, err := Load(Options{MaxFlows: 1024})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	_, err = d.SetMode(AttachAuto)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sel := Selector{Include: regexp.MustCompile("^(" + testnet.Prefix(n.ID) + "-|" + n.Uplink + "$)"), Uplink: regexp.MustCompile("^" + n.Uplink + "$")}
	require.NoError(t, d.WatchInterfaces(ctx, sel, func(err error) { t.Errorf("watch: %v", err) }))
	_, err = d.Drain(nil)
	require.NoError(t, err)
	before, err := d.Counters()
	require.NoError(t, err)

	// A veth pair stands for an interface the receiver does not watch (no
	// dummy module here).
	other := "ex44"
	_, _ = testnet.Run("ip", "link", "del", other)
	testnet.Must(t, "ip", "link", "add", other, "type", "veth", "peer", "name", other+"p")
	t.Cleanup(func() { _, _ = testnet.Run("ip", "link", "del", other) })
	testnet.Must(t, "ip", "link", "set", other, "up")
	testnet.Must(t, "ip", "link", "set", other+"p", "up")
	time.Sleep(200 * time.Millisecond) // the link updates reach the watch
	dst := netip.AddrPortFrom(pod.IPv4, 5300)
	_, err = testnet.UDPSend(n.Remote.NS, pod.NS, dst, 10, 100)
	require.NoError(t, err)
	testnet.Must(t, "ip", "route", "add", pod.IPv4.String()+"/32", "dev", other)
	time.Sleep(200 * time.Millisecond) // the route update reaches the watch
	require.NoError(t, testnet.UDPSendOnly(n.Remote.NS, dst, 7, 100))

	flows, err := d.Drain(nil)
	require.NoError(t, err)
	after, err := d.Counters()
	require.NoError(t, err)
	var nodePackets, podPackets uint64
	for _, f := range flows {
		if f.Dst.Addr() != pod.IPv4 || f.Protocol != flow.ProtoUDP {
			continue
		}
		if f.OnNode {
			nodePackets += f.Packets
		} else {
			podPackets += f.Packets
		}
	}
	require.Equal(t, uint64(10), podPackets, "the first datagrams, at the pod's veth")
	require.Equal(t, uint64(7), nodePackets, "after the route change: the node's, at the uplink")
	require.Equal(t, uint64(10), after[flow.ReasonDedupUplink].Packets-before[flow.ReasonDedupUplink].Packets,
		"the first datagrams de-duplicated at the uplink")
}
