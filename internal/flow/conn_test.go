package flow

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestConnIDsStitch: the client and the server of one connection, seen with
// different addresses (DNAT), get one trace ID and the parent relation.
func TestConnIDsStitch(t *testing.T) {
	est := time.Unix(100, 0)
	client := Conn{Role: Client, ClientISN: 0x11111111, ServerISN: 0x22222222, Established: est, Cookie: 1,
		Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.96.0.10:80")}
	server := Conn{Role: Server, ClientISN: 0x11111111, ServerISN: 0x22222222, Established: est, Cookie: 99,
		Local: netip.MustParseAddrPort("10.0.1.5:8080"), Remote: netip.MustParseAddrPort("10.0.0.1:40000")}
	ct, cs, cp := ConnIDs(&client)
	st, ss, sp := ConnIDs(&server)
	require.Equal(t, ct, st, "one trace")
	require.Equal(t, cs, sp, "server's parent is the client span")
	require.NotEqual(t, cs, ss)
	require.Equal(t, [8]byte{}, cp, "client span is a root")

	other := client
	other.ServerISN++
	ot, _, _ := ConnIDs(&other)
	require.NotEqual(t, ct, ot, "another connection, another trace")

	// Failed connects have no server ISN; retries with the same client ISN
	// (as SYN retransmits have) but another socket get another trace.
	f1 := Conn{Role: Client, ClientISN: 5, Cookie: 1}
	f2 := Conn{Role: Client, ClientISN: 5, Cookie: 2}
	t1, _, _ := ConnIDs(&f1)
	t2, _, _ := ConnIDs(&f2)
	require.NotEqual(t, t1, t2)
}
