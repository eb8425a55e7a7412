package ebpfnetreceiver

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/k8s"
	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver/internal/metadata"
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

// TestNATBackendsKnownAcrossIntervals: flow logs of a TCP connection to a
// ClusterIP ask conntrack once for as long as the connection has flows in
// consecutive intervals; a SYN (a new connection on the same addresses), an
// interval without its flows, or UDP asks again.
func TestNATBackendsKnownAcrossIntervals(t *testing.T) {
	client := fake.NewClientset(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", ClusterIPs: []string{"10.96.0.1"}}})
	r, err := k8s.New(client, zap.NewNop())
	require.NoError(t, err)
	r.Start()
	defer r.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.True(t, r.WaitSynced(ctx))

	ct := &fakeConntrack{backend: netip.MustParseAddrPort("10.244.1.5:8080")}
	p := &pipeline{peerMemo: k8s.NewMemo(r), set: receivertest.NewNopSettings(metadata.Type)}
	p.flowNAT.open = func() (conntracker, error) { return ct, nil }
	local, svc := netip.MustParseAddrPort("10.244.0.2:40000"), netip.MustParseAddrPort("10.96.0.1:80")
	// Both directions of one connection, with the TCP flags of the interval.
	tcpFlows := func(flags uint8) []flow.Flow {
		return []flow.Flow{
			{Src: local, Dst: svc, Protocol: flow.ProtoTCP, Direction: flow.Transmit, TCPFlags: flags},
			{Src: svc, Dst: local, Protocol: flow.ProtoTCP, Direction: flow.Receive, TCPFlags: flags},
		}
	}
	interval := func(flows []flow.Flow) []flow.Flow {
		p.peerMemo.Reset()
		b := flow.Batch{Flows: flows}
		p.annotateNATBackends(&b)
		return b.Flows
	}
	backends := func(flows []flow.Flow) []netip.AddrPort {
		var out []netip.AddrPort
		for _, f := range flows {
			out = append(out, f.Backend)
		}
		return out
	}

	first := ct.backend
	require.Equal(t, []netip.AddrPort{first, first}, backends(interval(tcpFlows(0x02|0x10))))
	require.Equal(t, 1, ct.calls, "one request for both directions")
	ct.backend = netip.MustParseAddrPort("10.244.1.6:8080") // what conntrack would say of a new connection
	for range 3 {
		require.Equal(t, []netip.AddrPort{first, first}, backends(interval(tcpFlows(0x10))))
	}
	require.Equal(t, 1, ct.calls, "an established connection keeps its backend")

	second := ct.backend
	require.Equal(t, []netip.AddrPort{second, second}, backends(interval(tcpFlows(0x02|0x10))))
	require.Equal(t, 2, ct.calls, "a SYN: a new connection, asked again")

	interval(nil) // no flows of it for an interval: forgotten
	require.Equal(t, []netip.AddrPort{second, second}, backends(interval(tcpFlows(0x10))))
	require.Equal(t, 3, ct.calls)

	udp := []flow.Flow{{Src: local, Dst: svc, Protocol: flow.ProtoUDP, Direction: flow.Transmit}}
	interval(udp)
	interval(udp)
	require.Equal(t, 5, ct.calls, "UDP: asked every interval (kube-proxy clears UDP entries of removed backends)")
}
