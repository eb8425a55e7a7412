package flow

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNATBackendsKnownAcrossIntervals: flow logs of a TCP connection to a
// ClusterIP ask conntrack once for as long as the connection has flows in
// consecutive intervals; a SYN (a new connection on the same addresses), an
// interval without its flows, or UDP asks again.
func TestNATBackendsKnownAcrossIntervals(t *testing.T) {
	ct := &fakeConntrack{backend: netip.MustParseAddrPort("10.244.1.5:8080")}
	local, svc := netip.MustParseAddrPort("10.244.0.2:40000"), netip.MustParseAddrPort("10.96.0.1:80")
	nat := &FlowNAT{IsService: func(a netip.Addr) bool { return a == svc.Addr() }, Backend: ct.lookup}
	// Both directions of one connection, with the TCP flags of the interval.
	tcpFlows := func(flags uint8) []Flow {
		return []Flow{
			{Src: local, Dst: svc, Protocol: ProtoTCP, Direction: Transmit, TCPFlags: flags},
			{Src: svc, Dst: local, Protocol: ProtoTCP, Direction: Receive, TCPFlags: flags},
		}
	}
	interval := func(flows []Flow) []Flow {
		b := Batch{Flows: flows}
		nat.Annotate(&b, true)
		return b.Flows
	}
	backends := func(flows []Flow) []netip.AddrPort {
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

	udp := []Flow{{Src: local, Dst: svc, Protocol: ProtoUDP, Direction: Transmit}}
	interval(udp)
	interval(udp)
	require.Equal(t, 5, ct.calls, "UDP: asked every interval (kube-proxy clears UDP entries of removed backends)")
}

// TestNATNamesResolverPods: a client's DNS lookup of a Service ClusterIP
// (kube-dns) gets the resolver pod conntrack names, with or without flow
// logs; with them, the lookup's UDP flow and the lookup share one request.
// A server's view and a lookup of a resolver that is not a Service are not
// asked.
func TestNATNamesResolverPods(t *testing.T) {
	coredns := netip.MustParseAddrPort("10.244.0.9:53")
	ct := &fakeConntrack{backend: coredns}
	client, kubeDNS := netip.MustParseAddrPort("10.244.0.2:41000"), netip.MustParseAddrPort("10.96.0.10:53")
	other := netip.MustParseAddrPort("10.244.0.7:53")
	nat := &FlowNAT{IsService: func(a netip.Addr) bool { return a == kubeDNS.Addr() }, Backend: ct.lookup}
	lookups := func() []DNSLookup {
		return []DNSLookup{
			{Side: DNSClient, Client: client, Server: kubeDNS, Protocol: ProtoUDP},
			{Side: DNSServer, Client: client, Server: coredns, Protocol: ProtoUDP},
			{Side: DNSClient, Client: client, Server: other, Protocol: ProtoUDP},
		}
	}
	b := Batch{DNS: lookups()}
	nat.Annotate(&b, false)
	require.Equal(t, 1, ct.calls)
	require.Equal(t, coredns, b.DNS[0].Backend)
	require.Equal(t, coredns, b.DNS[0].Peer(), "the pod that answered")
	require.Equal(t, kubeDNS, b.DNS[0].Service(), "the Service it asked")
	require.False(t, b.DNS[1].Backend.IsValid())
	require.Equal(t, client, b.DNS[1].Peer())
	require.False(t, b.DNS[2].Backend.IsValid())
	require.Equal(t, other, b.DNS[2].Peer())
	require.False(t, b.DNS[2].Service().IsValid())

	b = Batch{DNS: lookups(), Flows: []Flow{
		{Src: client, Dst: kubeDNS, Protocol: ProtoUDP, Direction: Transmit},
		{Src: kubeDNS, Dst: client, Protocol: ProtoUDP, Direction: Receive},
	}}
	nat.Annotate(&b, true)
	require.Equal(t, 2, ct.calls, "one request for the flow's two directions and its lookup")
	require.Equal(t, coredns, b.Flows[0].Backend)
	require.Equal(t, coredns, b.DNS[0].Backend)
}

// fakeConntrack answers every lookup with backend and counts the calls.
type fakeConntrack struct {
	calls   int
	backend netip.AddrPort
}

func (f *fakeConntrack) lookup(uint8, netip.AddrPort, netip.AddrPort) (netip.AddrPort, bool) {
	f.calls++
	return f.backend, true
}

// TestConnJoins: a client connection to a ClusterIP its socket saw
// untranslated gets the backend; one a socket-level LB rewrote (Dialed is
// not Remote), a server side or a non-Service peer is not asked; the cgroup
// names the pod.
func TestConnJoins(t *testing.T) {
	svc, backend := netip.MustParseAddrPort("10.96.0.1:80"), netip.MustParseAddrPort("10.244.1.5:8080")
	ct := &fakeConntrack{backend: backend}
	j := ConnJoins{
		Pod:       func(id uint64) (string, string) { return "uid-7", "ctr-7" },
		IsService: func(a netip.Addr) bool { return a == svc.Addr() },
		Backend:   ct.lookup,
	}
	local := netip.MustParseAddrPort("10.244.0.2:40000")
	c := Conn{Role: Client, Local: local, Remote: svc, CgroupID: 7}
	j.Join(&c)
	require.Equal(t, backend, c.Backend)
	require.Equal(t, "uid-7", c.PodUID)
	require.Equal(t, "ctr-7", c.ContainerID)
	for _, c := range []Conn{
		{Role: Server, Local: local, Remote: svc},
		{Role: Client, Local: local, Remote: backend, Dialed: svc},
		{Role: Client, Local: local, Remote: netip.MustParseAddrPort("10.244.3.3:80")},
	} {
		j.Join(&c)
		require.False(t, c.Backend.IsValid())
		require.Empty(t, c.PodUID, "cgroup id 0: no pod")
	}
	require.Equal(t, 1, ct.calls)
}
