package kernel

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type fakeConntrack struct {
	calls   int
	err     error
	backend netip.AddrPort
}

func (f *fakeConntrack) Backend(uint8, netip.AddrPort, netip.AddrPort) (netip.AddrPort, bool, error) {
	f.calls++
	if f.err != nil {
		return netip.AddrPort{}, false, f.err
	}
	return f.backend, true, nil
}

func (f *fakeConntrack) Close() error { return nil }

// TestNATLookupRestsAfterError: a conntrack that fails (or cannot be
// opened) is not asked again for natRetry, so that events behind it are not
// held up; each failure is reported (the caller logs the first); lookups
// resume after the rest.
func TestNATLookupRestsAfterError(t *testing.T) {
	local, svc := netip.MustParseAddrPort("10.0.0.2:40000"), netip.MustParseAddrPort("10.96.0.1:80")
	backend := netip.MustParseAddrPort("10.0.1.5:8080")
	var reported []error

	ct := &fakeConntrack{err: errors.New("no answer")}
	opens := 0
	n := NATLookup{onError: func(err error) { reported = append(reported, err) }, open: func() (conntracker, error) {
		opens++
		if opens == 1 {
			return nil, errors.New("socket: permission denied")
		}
		return ct, nil
	}}
	for range 3 {
		_, ok := n.Backend(6, local, svc)
		require.False(t, ok)
	}
	require.Equal(t, 1, opens, "after the open failed, lookups rest")
	n.retryAt = time.Now().Add(-time.Second) // the rest is over
	for range 3 {
		_, ok := n.Backend(6, local, svc)
		require.False(t, ok)
	}
	require.Equal(t, 2, opens)
	require.Equal(t, 1, ct.calls, "after a lookup failed, lookups rest")
	require.Len(t, reported, 2, "the open and the lookup failed")

	n.retryAt = time.Now().Add(-time.Second)
	ct.err, ct.backend = nil, backend
	got, ok := n.Backend(6, local, svc)
	require.True(t, ok)
	require.Equal(t, backend, got)
	require.Equal(t, 2, ct.calls)
}
