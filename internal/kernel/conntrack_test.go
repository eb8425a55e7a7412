package kernel

import (
	"encoding/binary"
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

// TestConntrackReplyParsing: the reply tuple's source is read from an entry,
// and a truncated or corrupt entry gives no address and no panic.
func TestConntrackReplyParsing(t *testing.T) {
	entry := []byte{unix.AF_INET, 0, 0, 0}
	orig := len(entry)
	entry = nlAttr(entry, unix.NLA_F_NESTED|ctaTupleOrig, nil)
	entry = nlAttr(entry, unix.NLA_F_NESTED|ctaTupleIP, nil)
	nlEnd(entry, orig+4)
	nlEnd(entry, orig)
	reply := len(entry)
	entry = nlAttr(entry, unix.NLA_F_NESTED|ctaTupleReply, nil)
	ip := len(entry)
	entry = nlAttr(entry, unix.NLA_F_NESTED|ctaTupleIP, nil)
	entry = nlAttr(entry, ctaIPv4Src, []byte{10, 250, 1, 3})
	entry = nlAttr(entry, ctaIPv4Dst, []byte{10, 250, 1, 2})
	nlEnd(entry, ip)
	l4 := len(entry)
	entry = nlAttr(entry, unix.NLA_F_NESTED|ctaTupleProto, nil)
	entry = nlAttr(entry, ctaProtoNum, []byte{6})
	entry = nlAttr(entry, ctaProtoSrc, []byte{0x1f, 0x90})
	nlEnd(entry, l4)
	nlEnd(entry, reply)

	got, err := replySource(entry)
	require.NoError(t, err)
	require.Equal(t, netip.MustParseAddrPort("10.250.1.3:8080"), got)
	for n := 0; n < len(entry); n++ {
		got, err := replySource(entry[:n])
		require.False(t, got.IsValid() && err == nil && n < len(entry)-8, "truncated at %d: %v", n, got)
	}
	corrupt := append([]byte(nil), entry...)
	binary.NativeEndian.PutUint16(corrupt[reply:], 0xffff) // a length past the end
	got, _ = replySource(corrupt)
	require.False(t, got.IsValid())
}
