package kernel

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDecodeUnmapsDualStackSockets: a dual-stack (AF_INET6) socket talking
// IPv4 reports v4-mapped addresses; the model has them as IPv4, as the
// packets (and so the flows and the pod's address) are.
func TestDecodeUnmapsDualStackSockets(t *testing.T) {
	mapped := netip.MustParseAddr("::ffff:10.252.0.53").As16()
	e := ConnEvent{Family: 6, Role: 2, LocalAddr: mapped, LocalPort: 8080,
		RemoteAddr: netip.MustParseAddr("::ffff:10.252.0.55").As16(), RemotePort: 33074}
	c := decodeConn(&e, 0, 0, nil)
	require.Equal(t, netip.MustParseAddrPort("10.252.0.53:8080"), c.Local)
	require.Equal(t, netip.MustParseAddrPort("10.252.0.55:33074"), c.Remote)
	v6 := netip.MustParseAddr("fd00::5")
	e.LocalAddr = v6.As16()
	require.Equal(t, v6, decodeConn(&e, 0, 0, nil).Local.Addr(), "real IPv6 stays IPv6")
	st := ConnState{Family: 6, LocalAddr: mapped, EstablishedNs: 1}
	require.Equal(t, netip.MustParseAddr("10.252.0.53"), decodeLive(1, &st, 0).Local.Addr())
}
