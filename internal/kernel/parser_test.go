package kernel

import (
	"encoding/binary"
	"github.com/ebpfnet/ebpfnet/internal/flow"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	v4a  = netip.MustParseAddr("10.244.1.10")
	v4b  = netip.MustParseAddr("10.244.2.20")
	v6a  = netip.MustParseAddr("fd00:244::10")
	v6b  = netip.MustParseAddr("fd00:244::20")
)

// packet serializes layers with lengths and checksums computed by gopacket.
func packet(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	for _, l := range ls {
		if nl, ok := l.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			for _, n := range ls {
				if net, ok := n.(gopacket.NetworkLayer); ok {
					_ = nl.SetNetworkLayerForChecksum(net)
				}
			}
		}
	}
	require.NoError(t, gopacket.SerializeLayers(buf, opts, ls...))
	return append([]byte(nil), buf.Bytes()...)
}

func eth(typ layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: typ}
}

func ip4(proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: v4a.AsSlice(), DstIP: v4b.AsSlice()}
}

func ip6(next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: v6a.AsSlice(), DstIP: v6b.AsSlice()}
}

func tcp(sport, dport uint16, syn, ack bool) *layers.TCP {
	return &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), SYN: syn, ACK: ack, Window: 1024, Seq: 1}
}

func udp(sport, dport uint16) *layers.UDP {
	return &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
}

func payload(n int) gopacket.Payload { return make(gopacket.Payload, n) }

// ipv6Ext builds a generic extension header (hop-by-hop, routing, dest opts)
// of 8*(units+1) bytes followed by next.
func ipv6Ext(next layers.IPProtocol, units uint8) gopacket.Payload {
	h := make([]byte, 8*(int(units)+1))
	h[0] = byte(next)
	h[1] = units
	if next == 0 { // keep the padding a valid PadN option
		h[2] = 1
		h[3] = byte(len(h) - 4)
	}
	return h
}

func ipv6Frag(next layers.IPProtocol, offset uint16, more bool) gopacket.Payload {
	h := make([]byte, 8)
	h[0] = byte(next)
	fo := offset << 3
	if more {
		fo |= 1
	}
	h[2], h[3] = byte(fo>>8), byte(fo)
	h[7] = 42
	return h
}

func concat(parts ...[]byte) gopacket.Payload {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

type wantFlow struct {
	src, dst netip.Addr
	sport    uint16
	dport    uint16
	proto    uint8
	family   uint8
	tcpFlags uint32
}

// runPackets runs each packet through endpoint_ingress with BPF_PROG_TEST_RUN
// and returns the drained flows and the counter deltas.
func runPackets(t *testing.T, d *Datapath, pkts ...[]byte) ([]entry, flow.Counters) {
	t.Helper()
	before, err := d.Counters()
	require.NoError(t, err)
	for _, p := range pkts {
		ret, err := d.objs.EndpointIngress.Run(&ebpf.RunOptions{Data: p})
		require.NoError(t, err)
		require.Equal(t, uint32(0xffffffff), ret, "program must return TCX_NEXT / TC_ACT_UNSPEC")
	}
	flows, err := d.drainEntries(nil)
	require.NoError(t, err)
	after, err := d.Counters()
	require.NoError(t, err)
	var delta flow.Counters
	for i := range after {
		delta[i].Packets = after[i].Packets - before[i].Packets
		delta[i].Bytes = after[i].Bytes - before[i].Bytes
	}
	return flows, delta
}

func loadForTest(t *testing.T, maxFlows uint32) *Datapath {
	t.Helper()
	testnet.RequireRoot(t)
	d, err := Load(Options{MaxFlows: maxFlows})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	return d
}

func TestParserFlows(t *testing.T) {
	d := loadForTest(t, 64)

	ipv4Opts := ip4(layers.IPProtocolUDP)
	ipv4Opts.IHL = 0 // FixLengths computes it from the options
	ipv4Opts.Options = []layers.IPv4Option{{OptionType: 0x94, OptionLength: 4, OptionData: []byte{0, 0}}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}

	firstFrag4 := ip4(layers.IPProtocolUDP)
	firstFrag4.Flags = layers.IPv4MoreFragments

	cases := []struct {
		name string
		pkt  []byte
		want wantFlow
	}{
		{"ipv4 tcp syn", packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(40000, 80, true, false)),
			wantFlow{v4a, v4b, 40000, 80, 6, 4, 0x02}},
		{"ipv4 udp", packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(5353, 53), payload(100)),
			wantFlow{v4a, v4b, 5353, 53, 17, 4, 0}},
		{"ipv4 options", packet(t, eth(layers.EthernetTypeIPv4), ipv4Opts, udp(1000, 2000), payload(10)),
			wantFlow{v4a, v4b, 1000, 2000, 17, 4, 0}},
		{"ipv4 first fragment", packet(t, eth(layers.EthernetTypeIPv4), firstFrag4, udp(1001, 2001), payload(64)),
			wantFlow{v4a, v4b, 1001, 2001, 17, 4, 0}},
		{"icmp echo", packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 7, Seq: 1}, payload(56)),
			wantFlow{v4a, v4b, 8, 0, 1, 4, 0}},
		{"vlan 802.1q ipv4", packet(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeIPv4},
			ip4(layers.IPProtocolTCP), tcp(1234, 443, false, true), payload(20)),
			wantFlow{v4a, v4b, 1234, 443, 6, 4, 0x10}},
		{"qinq 802.1ad ipv6", packet(t, eth(layers.EthernetTypeQinQ), &layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 20, Type: layers.EthernetTypeIPv6}, ip6(layers.IPProtocolUDP), udp(7, 9), payload(8)),
			wantFlow{v6a, v6b, 7, 9, 17, 6, 0}},
		{"ipv6 tcp", packet(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolTCP), tcp(50000, 8080, true, true)),
			wantFlow{v6a, v6b, 50000, 8080, 6, 6, 0x12}},
		{"ipv6 hop-by-hop routing dstopts", packet(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6HopByHop),
			concat(ipv6Ext(layers.IPProtocolIPv6Routing, 0), ipv6Ext(layers.IPProtocolIPv6Destination, 2), ipv6Ext(layers.IPProtocolUDP, 1)),
			udp(4000, 4001), payload(30)),
			wantFlow{v6a, v6b, 4000, 4001, 17, 6, 0}},
		{"ipv6 first fragment", packet(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6Fragment),
			concat(ipv6Frag(layers.IPProtocolUDP, 0, true)), udp(6000, 6001), payload(40)),
			wantFlow{v6a, v6b, 6000, 6001, 17, 6, 0}},
		{"icmpv6 echo", packet(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolICMPv6),
			gopacket.Payload{128, 0, 0, 0, 0, 1, 0, 1}),
			wantFlow{v6a, v6b, 128, 0, 58, 6, 0}},
		{"ipv4 other protocol", packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolGRE), payload(24)),
			wantFlow{v4a, v4b, 0, 0, 47, 4, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			flows, counters := runPackets(t, d, tc.pkt)
			for i, c := range counters {
				require.Zerof(t, c.Packets, "counter %d", i)
			}
			require.Len(t, flows, 1)
			f := flows[0]
			require.Equal(t, tc.want.src.As16(), f.Key.SrcAddr, "src")
			require.Equal(t, tc.want.dst.As16(), f.Key.DstAddr, "dst")
			require.Equal(t, tc.want.sport, f.Key.SrcPort)
			require.Equal(t, tc.want.dport, f.Key.DstPort)
			require.Equal(t, tc.want.proto, f.Key.Protocol)
			require.Equal(t, tc.want.family, f.Key.Family)
			require.Equal(t, uint8(flow.Transmit), f.Key.Direction)
			require.Equal(t, uint8(ebpfnetFlowObserverOBSERVER_ENDPOINT), f.Key.Observer)
			require.Equal(t, uint64(len(tc.pkt)), f.Counts.Bytes)
			require.Equal(t, uint64(1), f.Counts.Packets)
			require.Equal(t, tc.want.tcpFlags, f.Counts.TcpFlags)
			require.NotZero(t, f.Counts.FirstSeenNs)
			require.Equal(t, f.Counts.FirstSeenNs, f.Counts.LastSeenNs)
		})
	}
}

func TestParserAggregates(t *testing.T) {
	d := loadForTest(t, 64)
	syn := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(40000, 80, true, false))
	data := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(40000, 80, false, true), payload(1000))
	fin := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), &layers.TCP{SrcPort: 40000, DstPort: 80, FIN: true, ACK: true, Window: 1})
	other := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(40001, 80, true, false))
	flows, _ := runPackets(t, d, syn, data, data, fin, other)
	require.Len(t, flows, 2)
	byPort := map[uint16]entry{}
	for _, f := range flows {
		byPort[f.Key.SrcPort] = f
	}
	f := byPort[40000]
	require.Equal(t, uint64(len(syn)+2*len(data)+len(fin)), f.Counts.Bytes)
	require.Equal(t, uint64(4), f.Counts.Packets)
	require.Equal(t, uint32(0x02|0x10|0x01), f.Counts.TcpFlags)
	require.LessOrEqual(t, f.Counts.FirstSeenNs, f.Counts.LastSeenNs)
	require.Equal(t, uint64(1), byPort[40001].Counts.Packets)

	// The drained table is empty: a second drain returns nothing.
	again, err := d.drainEntries(nil)
	require.NoError(t, err)
	require.Empty(t, again)
}

func TestParserErrorCounters(t *testing.T) {
	d := loadForTest(t, 64)

	badIHL := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(1, 2))
	badIHL[14] = 0x44 // version 4, IHL 4 (< 5)
	badDoff := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(1, 2, true, false))
	badDoff[14+20+12] = 0x40 // data offset 4 (< 5)
	shortTotal := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(1, 2))
	binary.BigEndian.PutUint16(shortTotal[14+2:], 19) // total length shorter than the 20-byte header
	badVersion := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(1, 2))
	badVersion[14] = 0x65 // version 6 in an IPv4 ethertype
	tooManyTags := packet(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{Type: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{Type: layers.EthernetTypeIPv4}, ip4(layers.IPProtocolUDP), udp(1, 2))

	frag4 := ip4(layers.IPProtocolUDP)
	frag4.FragOffset = 185
	nonFirst4 := packet(t, eth(layers.EthernetTypeIPv4), frag4, payload(64))
	nonFirst6 := packet(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6Fragment),
		concat(ipv6Frag(layers.IPProtocolUDP, 185, false)), payload(64))

	var chain [][]byte
	for i := 0; i < MaxIPv6ExtForTest+1; i++ {
		next := layers.IPProtocolIPv6Destination
		if i == MaxIPv6ExtForTest {
			next = layers.IPProtocolUDP
		}
		chain = append(chain, ipv6Ext(next, 0))
	}
	longChain := packet(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6Destination), concat(chain...), udp(1, 2))

	arp := packet(t, eth(layers.EthernetTypeARP), &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: 1, SourceHwAddress: macA, SourceProtAddress: v4a.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: v4b.AsSlice()})

	cases := []struct {
		name   string
		pkt    []byte
		reason flow.Reason
	}{
		{"ipv4 ihl below 5", badIHL, flow.ReasonMalformed},
		{"ipv4 total length below its header", shortTotal, flow.ReasonMalformed},
		{"tcp data offset below 5", badDoff, flow.ReasonMalformed},
		{"ip version mismatch", badVersion, flow.ReasonMalformed},
		{"three vlan tags", tooManyTags, flow.ReasonMalformed},
		{"ipv4 non-first fragment", nonFirst4, flow.ReasonFragment},
		{"ipv6 non-first fragment", nonFirst6, flow.ReasonFragment},
		{"ipv6 extension chain too long", longChain, flow.ReasonExtHdrLimit},
		{"arp", arp, flow.ReasonNonIP},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			flows, counters := runPackets(t, d, tc.pkt)
			require.Empty(t, flows, "a packet counted as %d must not be in a flow", tc.reason)
			for i, c := range counters {
				if flow.Reason(i) == tc.reason {
					require.Equal(t, flow.Count{Packets: 1, Bytes: uint64(len(tc.pkt))}, c)
				} else {
					require.Zerof(t, c.Packets, "counter %d", i)
				}
			}
		})
	}
}

// TestParserTruncatedAtEveryBoundary cuts packets at every header boundary
// (and one byte before it): each cut must land in the truncated counter,
// never in a flow. BPF_PROG_TEST_RUN refuses untagged IPv4/IPv6 frames whose
// IP header is incomplete before our program runs, so cuts inside the IP
// header are made on VLAN-tagged frames, which it does not inspect.
func TestParserTruncatedAtEveryBoundary(t *testing.T) {
	d := loadForTest(t, 64)
	vlan := func(typ layers.EthernetType) gopacket.SerializableLayer {
		return &layers.Dot1Q{VLANIdentifier: 5, Type: typ}
	}
	type shape struct {
		name       string
		pkt        []byte
		boundaries []int // header ends, in bytes from the frame start; the last is the L4 header's
	}
	shapes := []shape{
		{"ipv4 tcp", packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(1, 2, true, false)), []int{54}},
		{"ipv4 udp", packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(1, 2)), []int{42}},
		{"ipv4 icmp", packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolICMPv4), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)}), []int{38}},
		{"vlan ipv4 tcp", packet(t, eth(layers.EthernetTypeDot1Q), vlan(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(1, 2, true, false)), []int{16, 18, 38, 58}},
		{"qinq ipv4 udp", packet(t, eth(layers.EthernetTypeQinQ), vlan(layers.EthernetTypeDot1Q), vlan(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(1, 2)), []int{18, 22, 42, 50}},
		{"ipv6 tcp", packet(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolTCP), tcp(1, 2, true, false)), []int{74}},
		{"vlan ipv6 udp", packet(t, eth(layers.EthernetTypeDot1Q), vlan(layers.EthernetTypeIPv6), ip6(layers.IPProtocolUDP), udp(1, 2)), []int{18, 58, 66}},
		{"ipv6 hbh frag udp", packet(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6HopByHop),
			concat(ipv6Ext(layers.IPProtocolIPv6Fragment, 0), ipv6Frag(layers.IPProtocolUDP, 0, false)), udp(1, 2)), []int{56, 62, 70, 78}},
	}
	for _, s := range shapes {
		for i, b := range s.boundaries {
			cuts := []int{b - 1} // inside the header that ends at b
			if i < len(s.boundaries)-1 {
				cuts = append(cuts, b) // the next header is missing
			}
			for _, cut := range cuts {
				if cut <= 14 || cut >= len(s.pkt) {
					continue
				}
				pkt := s.pkt[:cut]
				flows, counters := runPackets(t, d, pkt)
				require.Emptyf(t, flows, "%s cut at %d", s.name, cut)
				require.Equalf(t, flow.Count{Packets: 1, Bytes: uint64(cut)}, counters[flow.ReasonTruncated], "%s cut at %d", s.name, cut)
			}
		}
	}
}

func TestMapFullIsCounted(t *testing.T) {
	d := loadForTest(t, 4)
	var pkts [][]byte
	for port := uint16(1); port <= 10; port++ {
		pkts = append(pkts, packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(port, 53)))
	}
	flows, counters := runPackets(t, d, pkts...)
	var inFlows uint64
	for _, f := range flows {
		inFlows += f.Counts.Packets
	}
	require.Equal(t, uint64(len(pkts)), inFlows+counters[flow.ReasonMapFull].Packets, "every packet is in a flow or counted as map full")
	require.NotZero(t, counters[flow.ReasonMapFull].Packets)
	require.LessOrEqual(t, len(flows), 4)
}

// TestThreeVLANTagsOnARealInterface: a frame with three VLAN tags reaches
// the host side of a veth with its outermost tag moved into the skb's
// metadata (the stack untags the first tag before tc ingress): it is still
// malformed, like three tags in the data, not a flow.
func TestThreeVLANTagsOnARealInterface(t *testing.T) {
	testnet.RequireRoot(t)
	d := loadForTest(t, 64)
	ns := &testnet.Netns{Name: "ebtvlan"}
	_ = exec.Command("ip", "netns", "del", ns.Name).Run() // left by an interrupted run
	testnet.Must(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns.Name).Run() })
	testnet.Must(t, "ip", "link", "add", "ebtvlan0", "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", "ebtvlan0").Run() })
	testnet.Must(t, "ip", "netns", "exec", ns.Name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	testnet.Must(t, "ip", "netns", "exec", ns.Name, "ip", "link", "set", "eth0", "up")
	testnet.Must(t, "ip", "link", "set", "ebtvlan0", "up")
	host, err := net.InterfaceByName("ebtvlan0")
	require.NoError(t, err)
	_, err = d.SetMode(AttachTCX)
	require.NoError(t, err)
	require.NoError(t, d.Attach(host.Index, "ebtvlan0", RoleEndpoint, 0))
	frame := packet(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 20, Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{VLANIdentifier: 30, Type: layers.EthernetTypeIPv4},
		ip4(layers.IPProtocolUDP), udp(1, 9))
	before, err := d.Counters()
	require.NoError(t, err)
	require.NoError(t, testnet.SendFrames(ns, "eth0", net.HardwareAddr(frame[:6]), 5, func(int, []byte) []byte { return frame }))
	time.Sleep(100 * time.Millisecond)
	flows, err := d.drainEntries(nil)
	require.NoError(t, err)
	after, err := d.Counters()
	require.NoError(t, err)
	for _, f := range flows {
		require.NotEqual(t, uint16(9), f.Key.DstPort, "a three-tag frame became a flow: %+v", f.Key)
	}
	require.Equal(t, uint64(5), after[flow.ReasonMalformed].Packets-before[flow.ReasonMalformed].Packets, "the five frames")
}
