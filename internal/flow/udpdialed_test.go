package flow

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDialedIndexAnnotate: a UDP flow gets the Service its socket sent to
// only when a socket-level LB rewrote it (the peer is not what was sent to)
// and the peer backs exactly one dialed Service.
func TestDialedIndexAnnotate(t *testing.T) {
	dns := ep("10.96.0.10", 53)          // Service kube-dns
	metricsSvc := ep("10.96.0.20", 8125) // Service statsd
	otherSvc := ep("10.96.0.30", 53)     // a second Service backed by the same pod
	backend := ep("10.244.1.5", 53)      // backs kube-dns (and otherSvc)
	stranger := ep("10.244.9.9", 53)     // backs nothing
	backs := map[[2]netip.Addr]bool{
		{dns.Addr(), backend.Addr()}: true, {otherSvc.Addr(), backend.Addr()}: true,
	}
	backsFn := func(svc, b netip.Addr) bool { return backs[[2]netip.Addr{svc, b}] }
	x := NewDialedIndex([]UDPDialed{
		{LocalPort: 40001, Dialed: dns},
		{LocalPort: 40002, Dialed: dns}, {LocalPort: 40002, Dialed: backend}, // also sent to the backend itself
		{LocalPort: 40003, Dialed: dns}, {LocalPort: 40003, Dialed: otherSvc}, // two Services the backend backs
		{LocalPort: 40004, Dialed: metricsSvc},
		{LocalPort: 40005, Dialed: dns},
	})
	pod := ep("10.244.0.7", 0).Addr()
	udp := func(local uint16, peer netip.AddrPort, d Direction) Flow {
		f := Flow{Protocol: ProtoUDP, Direction: d, Src: netip.AddrPortFrom(pod, local), Dst: peer}
		if d == Receive {
			f.Src, f.Dst = peer, netip.AddrPortFrom(pod, local)
		}
		return f
	}
	b := &Batch{Flows: []Flow{
		udp(40001, backend, Transmit),  // 0: rewritten query: kube-dns
		udp(40001, backend, Receive),   // 1: its answer: kube-dns
		udp(40002, backend, Transmit),  // 2: the port also sent to the backend directly: not rewritten
		udp(40003, backend, Transmit),  // 3: ambiguous: none
		udp(40004, backend, Transmit),  // 4: the backend does not back what was sent to: none
		udp(40005, stranger, Transmit), // 5: the peer backs nothing: none
		udp(40009, backend, Transmit),  // 6: port never sent to: none
		udp(40001, dns, Transmit),      // 7: kube-proxy: the flow's peer is the ClusterIP: none
		{Protocol: ProtoTCP, Direction: Transmit, Src: netip.AddrPortFrom(pod, 40001), Dst: backend}, // 8: not UDP
	}}
	x.Annotate(b, backsFn)
	want := map[int]netip.AddrPort{0: dns, 1: dns}
	for i, f := range b.Flows {
		require.Equal(t, want[i], f.Dialed, "flow %d", i)
	}
	// Without Kubernetes there is no Service to check against: nothing.
	b.Flows[0].Dialed = netip.AddrPort{}
	x.Annotate(b, nil)
	require.False(t, b.Flows[0].Dialed.IsValid())
}
