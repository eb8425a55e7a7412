package kernel

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestConntrackBackend: under kube-proxy-style iptables DNAT in the node, a
// closed connection from a pod to a ClusterIP is found in conntrack by the
// tuple its socket saw, and the reply tuple names the backend it reached. A
// connection nothing translated, and one conntrack does not know, have none.
func TestConntrackBackend(t *testing.T) {
	testnet.RequireRoot(t)
	node := testnet.NewNode(t, 79)
	client := node.AddPod(t, 2)
	web := node.AddPod(t, 3)
	clusterIP := netip.MustParseAddr("10.96.7.7")
	testnet.KubeProxy(t, clusterIP, web.IPv4)
	ln, err := testnet.ListenTCP(web.NS, netip.AddrPortFrom(web.IPv4, 8080))
	require.NoError(t, err)
	defer ln.Close()

	ct, err := OpenConntrack()
	require.NoError(t, err)
	defer ct.Close()
	service := netip.AddrPortFrom(clusterIP, 80)
	port, err := testnet.Dial(client.NS, service, 100, 2*time.Second)
	require.NoError(t, err)
	got, ok, err := ct.Backend(unix.IPPROTO_TCP, netip.AddrPortFrom(client.IPv4, port), service)
	require.NoError(t, err)
	require.True(t, ok, "a DNATed connection is in conntrack")
	require.Equal(t, netip.AddrPortFrom(web.IPv4, 8080), got)

	direct := netip.AddrPortFrom(web.IPv4, 8080)
	port, err = testnet.Dial(client.NS, direct, 100, 2*time.Second)
	require.NoError(t, err)
	_, ok, err = ct.Backend(unix.IPPROTO_TCP, netip.AddrPortFrom(client.IPv4, port), direct)
	require.NoError(t, err)
	require.False(t, ok, "not translated")

	_, ok, err = ct.Backend(unix.IPPROTO_TCP, netip.MustParseAddrPort("10.99.0.1:1"), service)
	require.NoError(t, err)
	require.False(t, ok, "not in conntrack")
}
