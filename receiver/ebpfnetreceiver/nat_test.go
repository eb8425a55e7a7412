package ebpfnetreceiver

import (
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
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
// held up; the failure is logged once; lookups resume after the rest.
func TestNATLookupRestsAfterError(t *testing.T) {
	local, svc := netip.MustParseAddrPort("10.0.0.2:40000"), netip.MustParseAddrPort("10.96.0.1:80")
	backend := netip.MustParseAddrPort("10.0.1.5:8080")
	core, logs := observer.New(zap.WarnLevel)
	logger := zap.New(core)
	var failed atomic.Bool

	ct := &fakeConntrack{err: errors.New("no answer")}
	opens := 0
	n := natLookup{open: func() (conntracker, error) {
		opens++
		if opens == 1 {
			return nil, errors.New("socket: permission denied")
		}
		return ct, nil
	}}
	for range 3 {
		_, ok := n.backend(6, local, svc, &failed, logger)
		require.False(t, ok)
	}
	require.Equal(t, 1, opens, "after the open failed, lookups rest")
	n.retryAt = time.Now().Add(-time.Second) // the rest is over
	for range 3 {
		_, ok := n.backend(6, local, svc, &failed, logger)
		require.False(t, ok)
	}
	require.Equal(t, 2, opens)
	require.Equal(t, 1, ct.calls, "after a lookup failed, lookups rest")
	require.Equal(t, 1, logs.Len(), "logged once")

	n.retryAt = time.Now().Add(-time.Second)
	ct.err, ct.backend = nil, backend
	got, ok := n.backend(6, local, svc, &failed, logger)
	require.True(t, ok)
	require.Equal(t, backend, got)
	require.Equal(t, 2, ct.calls)
}
