package flow

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

func ep(s string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(s), port)
}

func TestEndpointsResolve(t *testing.T) {
	e := NewEndpoints()
	b := &Batch{Flows: []Flow{
		// Multicast the pod on ifindex 7 receives, listed before its unicast.
		{Ifindex: 7, Src: ep("fe80::1", 0), Dst: ep("ff02::16", 0), Direction: Receive},
		{Ifindex: 7, Src: ep("fd00::10", 1), Dst: ep("fd00::20", 2), Direction: Transmit},
		{Ifindex: 7, Src: ep("10.0.0.20", 80), Dst: ep("10.0.0.10", 3), Direction: Receive},
		{Ifindex: 8, Src: ep("10.0.1.255", 137), Dst: ep("255.255.255.255", 137), Direction: Receive}, // nothing learned
		{Ifindex: 2, OnNode: true, Src: ep("172.18.0.2", 22), Dst: ep("192.0.2.1", 5), Direction: Transmit},
	}}
	e.Resolve(b)
	want := []string{"10.0.0.10", "10.0.0.10", "10.0.0.10", "255.255.255.255", "invalid IP"}
	for i, w := range want {
		require.Equal(t, w, b.Flows[i].Endpoint.String(), "flow %d", i)
	}

	// Learned addresses persist across batches, and are forgotten.
	e.Forget = 1
	b2 := &Batch{Flows: []Flow{{Ifindex: 7, Src: ep("fe80::1", 0), Dst: ep("ff02::1", 0), Direction: Receive}}}
	e.Resolve(b2)
	require.Equal(t, "10.0.0.10", b2.Flows[0].Endpoint.String())
	e.Resolve(&Batch{})
	e.Resolve(&Batch{})
	e.Resolve(b2)
	require.Equal(t, "ff02::1", b2.Flows[0].Endpoint.String(), "forgotten after Forget idle batches")
}

// TestEndpointsLearnSaysWhenKnown: Learn reports an interface known once
// its IPv4 address is (what the drain's learning pass stops at); a
// multicast flow or an IPv6 address alone does not make it known.
func TestEndpointsLearnSaysWhenKnown(t *testing.T) {
	e := NewEndpoints()
	e.Begin()
	require.False(t, e.Learn(&Flow{Ifindex: 9, Src: ep("fe80::1", 0), Dst: ep("ff02::16", 0), Direction: Receive}))
	require.False(t, e.Learn(&Flow{Ifindex: 9, Src: ep("fd00::10", 1), Dst: ep("fd00::20", 2), Direction: Transmit}))
	require.True(t, e.Learn(&Flow{Ifindex: 9, Src: ep("10.0.0.20", 80), Dst: ep("10.0.0.10", 3), Direction: Receive}))
	require.True(t, e.Learn(&Flow{Ifindex: 9, Src: ep("10.0.0.9", 5353), Dst: ep("224.0.0.251", 5353), Direction: Receive}))
	require.False(t, e.Learn(&Flow{OnNode: true, Ifindex: 2, Src: ep("10.0.0.1", 1), Dst: ep("10.0.0.2", 2)}))
}
