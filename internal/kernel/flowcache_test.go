package kernel

import (
	"encoding/binary"
	"fmt"
	"github.com/ebpfnet/ebpfnet/internal/flow"
	"math/rand"
	"net/netip"
	"os/exec"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket/layers"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// onCPU runs f on the given CPU: BPF_PROG_TEST_RUN runs a program on the
// CPU of the calling thread, so this chooses whose flow_cache slot it uses.
func onCPU(t *testing.T, cpu int, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(0, &old))
	set.Set(cpu)
	require.NoError(t, unix.SchedSetaffinity(0, &set))
	defer func() { require.NoError(t, unix.SchedSetaffinity(0, &old)) }()
	f()
}

type flowID struct {
	sport     uint16
	direction uint8
}

type flowTotal struct {
	bytes, packets uint64
	flags          uint32
}

// TestFlowCacheIsExact: packets of a few flows in runs of varying length, on
// both endpoint programs (slots of their own) and on two CPUs (copies of
// each slot), more flows than slots, with drains at arbitrary points, so that drains find slots holding
// packets not yet in the table, and flows taking a slot from another. Every
// drain must return exactly the packets sent since the previous one, which
// the test counts itself. Both drains: batch, and the iteration of kernels
// without batch operations.
func TestFlowCacheIsExact(t *testing.T) {
	t.Run("batch", func(t *testing.T) { testFlowCacheIsExact(t, true) })
	t.Run("iterate", func(t *testing.T) { testFlowCacheIsExact(t, false) })
}

func testFlowCacheIsExact(t *testing.T, batch bool) {
	d := loadForTest(t, 64)
	d.tables.batchOK = batch
	ncpu := runtime.NumCPU()
	rng := rand.New(rand.NewSource(1))
	pkts := map[uint16][][]byte{}
	// More flows than a program has slots on a CPU: some share one.
	var ports []uint16
	for sport := uint16(40000); sport < 40020; sport++ {
		ports = append(ports, sport)
		pkts[sport] = [][]byte{
			packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(sport, 80, true, false)),
			packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(sport, 80, false, true), payload(int(sport-39000))),
		}
	}
	progs := []*ebpf.Program{d.objs.EndpointIngress, d.objs.EndpointEgress}
	dirs := []uint8{uint8(flow.Transmit), uint8(flow.Receive)}

	for interval := 0; interval < 40; interval++ {
		want := map[flowID]flowTotal{}
		for run := 0; run < 1+rng.Intn(30); run++ {
			sport := ports[rng.Intn(len(ports))]
			prog := rng.Intn(2)
			cpu := rng.Intn(ncpu)
			n := 1 + rng.Intn(5)
			onCPU(t, cpu, func() {
				for i := 0; i < n; i++ {
					p := pkts[sport][rng.Intn(2)]
					_, err := progs[prog].Run(&ebpf.RunOptions{Data: p})
					require.NoError(t, err)
					id := flowID{sport, dirs[prog]}
					w := want[id]
					w.bytes += uint64(len(p))
					w.packets++
					w.flags |= uint32(p[14+20+13]) // the TCP flags byte
					want[id] = w
				}
			})
		}
		flows, err := d.drainEntries(nil)
		require.NoError(t, err)
		got := map[flowID]flowTotal{}
		for _, f := range flows {
			id := flowID{f.Key.SrcPort, f.Key.Direction}
			_, dup := got[id]
			require.False(t, dup, "interval %d: flow %v drained twice", interval, id)
			got[id] = flowTotal{f.Counts.Bytes, f.Counts.Packets, f.Counts.TcpFlags}
			require.LessOrEqual(t, f.Counts.FirstSeenNs, f.Counts.LastSeenNs)
		}
		require.Equal(t, want, got, "interval %d", interval)
	}
	again, err := d.drainEntries(nil)
	require.NoError(t, err)
	require.Empty(t, again, "a drain after no packets returns nothing: no slot is counted twice")
}

// TestFlowCacheMapFull: a flow the full table has no room for takes no slot:
// each of its packets is counted as map full, also when a drain comes next,
// and the flow in the slot keeps its packets.
func TestFlowCacheMapFull(t *testing.T) {
	d := loadForTest(t, 1)
	a := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(1000, 53))
	b := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(2000, 53), payload(10))
	var flows []entry
	var counters flow.Counters
	onCPU(t, 0, func() { flows, counters = runPackets(t, d, a, a, b, b, b, a) })
	require.Len(t, flows, 1)
	require.Equal(t, uint16(1000), flows[0].Key.SrcPort)
	require.Equal(t, uint64(3), flows[0].Counts.Packets)
	require.Equal(t, uint64(3*len(a)), flows[0].Counts.Bytes)
	require.Equal(t, uint64(3), counters[flow.ReasonMapFull].Packets)
	require.Equal(t, uint64(3*len(b)), counters[flow.ReasonMapFull].Bytes)

	// Drained right after packets of the flow without room: they are not
	// waiting in a slot to become a flow the table never had.
	onCPU(t, 0, func() { flows, counters = runPackets(t, d, a, b, b) })
	require.Len(t, flows, 1)
	require.Equal(t, uint16(1000), flows[0].Key.SrcPort)
	require.Equal(t, uint64(1), flows[0].Counts.Packets)
	require.Equal(t, uint64(2), counters[flow.ReasonMapFull].Packets)
}

// TestFlowCacheSlotWithoutFlow: should a slot hold packets of a flow its
// table does not have, the drain reports them as a flow of their own rather
// than dropping them.
func TestFlowCacheSlotWithoutFlow(t *testing.T) {
	d := loadForTest(t, 8)
	slots := make([]cacheSlot, d.tables.ncpu)
	slots[0].Key = FlowKey{SrcPort: 7, DstPort: 9, Protocol: 17, Family: 4}
	slots[0].Delta = rawCounts{Bytes: 700, Packets: 5}
	require.NoError(t, d.objs.FlowCache.Put(uint32(d.tables.active)*d.objs.FlowCache.MaxEntries()/2, slots))
	flows, err := d.drainEntries(nil)
	require.NoError(t, err)
	require.Len(t, flows, 1)
	require.Equal(t, uint16(7), flows[0].Key.SrcPort)
	require.Equal(t, uint64(5), flows[0].Counts.Packets)
	require.Equal(t, uint64(700), flows[0].Counts.Bytes)
}

// flowWay mirrors flow_way in bpf/flow.h: which of its program's slots a
// flow uses.
func flowWay(k FlowKey) uint32 {
	w3 := binary.LittleEndian.Uint32(k.SrcAddr[12:])
	w7 := binary.LittleEndian.Uint32(k.DstAddr[12:])
	w8 := uint32(k.SrcPort) | uint32(k.DstPort)<<16
	return ((w3 ^ w7 ^ w8 ^ k.Ifindex) * 0x9E3779B1) >> (32 - flowCacheWayBits)
}

// TestFlowCacheDrainForgetsFlows: a drain removes the table's flows, so no
// slot may still name one, even a slot holding no packets (its flow's packet
// went to the table). Otherwise, when the table is active again, a packet of
// that flow lands in the slot without its flow in the table, and the next
// flow to take the slot finds nothing to add it to.
func TestFlowCacheDrainForgetsFlows(t *testing.T) {
	d := loadForTest(t, 64)
	a := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(1000, 53))
	var flows []entry
	var counters flow.Counters
	// A flow of the same slot as a.
	ka := keyOf(t, d, a)
	kb := ka
	for kb.SrcPort = 1001; flowWay(kb) != flowWay(ka); kb.SrcPort++ {
	}
	b := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(kb.SrcPort, 53))

	_, err := d.drainEntries(nil) // back to the first table
	require.NoError(t, err)
	onCPU(t, 0, func() {
		before, err := d.Counters()
		require.NoError(t, err)
		for _, p := range [][]byte{a, b} {
			_, err := d.objs.EndpointIngress.Run(&ebpf.RunOptions{Data: p})
			require.NoError(t, err)
		}
		// b did take a's slot: the mirror of flow_way is right.
		slots := make([]cacheSlot, d.tables.ncpu)
		idx := ((uint32(d.tables.active)*2+uint32(uint8(ebpfnetFlowObserverOBSERVER_ENDPOINT)))*2+uint32(uint8(flow.Transmit)))<<flowCacheWayBits + flowWay(kb)
		require.NoError(t, d.objs.FlowCache.Lookup(idx, slots))
		require.Equal(t, kb, slots[0].Key)
		flows, err = d.drainEntries(nil)
		require.NoError(t, err)
		after, err := d.Counters()
		require.NoError(t, err)
		counters[flow.ReasonMapFull].Packets = after[flow.ReasonMapFull].Packets - before[flow.ReasonMapFull].Packets
	})
	got := map[uint16]uint64{}
	for _, f := range flows {
		got[f.Key.SrcPort] += f.Counts.Packets
	}
	require.Equal(t, map[uint16]uint64{1000: 1, kb.SrcPort: 1}, got)
	require.Zero(t, counters[flow.ReasonMapFull].Packets)
}

// TestFlowCacheTellsSlotFlowsApart: flows that differ from a first one in
// one field each and take its slot (the same way) must stay flows of their
// own when their packets alternate with its packets: the slot's compare
// (the full key's, and the short one of common packets) looks at every
// field. The IPv6 flow has a's addresses as IPv4-mapped IPv6 ones: only
// the family tells them apart.
func TestFlowCacheTellsSlotFlowsApart(t *testing.T) {
	d := loadForTest(t, 64)
	ip := func(proto layers.IPProtocol, src, dst netip.Addr) *layers.IPv4 {
		l := ip4(proto)
		l.SrcIP, l.DstIP = src.AsSlice(), dst.AsSlice()
		return l
	}
	a := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(1000, 53))
	ka := keyOf(t, d, a)
	// same finds a value of one field for which the key shares a's way.
	same := func(set func(k *FlowKey, i int)) FlowKey {
		for i := 1; ; i++ {
			k := ka
			set(&k, i)
			if flowWay(k) == flowWay(ka) {
				return k
			}
		}
	}
	srcPort := same(func(k *FlowKey, i int) { k.SrcPort = 1000 + uint16(i) }).SrcPort
	dstPort := same(func(k *FlowKey, i int) { k.DstPort = 53 + uint16(i) }).DstPort
	src := same(func(k *FlowKey, i int) { k.SrcAddr[15] += byte(i) }).SrcAddr
	dst := same(func(k *FlowKey, i int) { k.DstAddr[15] += byte(i) }).DstAddr
	mapped := func(a netip.Addr) []byte { b := a.As16(); return b[:] } // ::ffff:a.b.c.d
	v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: mapped(v4a), DstIP: mapped(v4b)}
	others := map[string][]byte{
		"source port":         packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(srcPort, 53)),
		"destination port":    packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(1000, dstPort)),
		"source address":      packet(t, eth(layers.EthernetTypeIPv4), ip(layers.IPProtocolUDP, netip.AddrFrom16(src).Unmap(), v4b), udp(1000, 53)),
		"destination address": packet(t, eth(layers.EthernetTypeIPv4), ip(layers.IPProtocolUDP, v4a, netip.AddrFrom16(dst).Unmap()), udp(1000, 53)),
		"protocol":            packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(1000, 53, false, true)),
		"family":              packet(t, eth(layers.EthernetTypeIPv6), v6, udp(1000, 53)),
	}
	for name, b := range others {
		t.Run(name, func(t *testing.T) {
			var flows []entry
			onCPU(t, 0, func() { flows, _ = runPackets(t, d, a, b, a, a, b, b, a, b) })
			got := map[bool]flowTotal{} // by whether it is a's flow
			for _, f := range flows {
				got[f.Key == ka] = flowTotal{bytes: f.Counts.Bytes, packets: f.Counts.Packets}
			}
			require.Equal(t, map[bool]flowTotal{true: {bytes: uint64(4 * len(a)), packets: 4}, false: {bytes: uint64(4 * len(b)), packets: 4}}, got)
		})
	}
}

// TestFlowCacheTellsInterfacesApart: the same packets on two interfaces
// whose flows take the same slot are two flows. The slot hash spreads
// nearby interface indexes over different slots, so the test makes two
// interfaces with indexes that share one. (BPF_PROG_TEST_RUN puts the
// packet on the interface its context names.)
func TestFlowCacheTellsInterfacesApart(t *testing.T) {
	d := loadForTest(t, 64)
	a := packet(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp(1000, 53))
	k := keyOf(t, d, a)
	on := func(ifindex uint32) FlowKey { k := k; k.Ifindex = ifindex; return k }
	ifindex := [2]uint32{0x7eb00000, 0x7eb00001}
	for flowWay(on(ifindex[0])) != flowWay(on(ifindex[1])) {
		ifindex[1]++
	}
	// A veth pair: no dummy driver on every kernel.
	_, _ = exec.Command("ip", "link", "del", "ebtslot0").CombinedOutput() // left by an interrupted run
	testnet.Must(t, "ip", "link", "add", "ebtslot0", "index", fmt.Sprint(ifindex[0]), "type", "veth",
		"peer", "name", "ebtslot1", "index", fmt.Sprint(ifindex[1]))
	t.Cleanup(func() { _, _ = exec.Command("ip", "link", "del", "ebtslot0").CombinedOutput() })
	// struct __sk_buff up to ifindex; the kernel wants the other fields zero.
	type skbContext struct {
		_       [10]uint32
		Ifindex uint32
	}
	var flows []entry
	onCPU(t, 0, func() {
		for _, i := range []int{0, 1, 0, 0, 1, 1, 0, 1} {
			_, err := d.objs.EndpointIngress.Run(&ebpf.RunOptions{Data: a, Context: skbContext{Ifindex: ifindex[i]}})
			require.NoError(t, err)
		}
		var err error
		flows, err = d.drainEntries(nil)
		require.NoError(t, err)
	})
	got := map[uint32]uint64{}
	for _, f := range flows {
		got[f.Key.Ifindex] += f.Counts.Packets
	}
	require.Equal(t, map[uint32]uint64{ifindex[0]: 4, ifindex[1]: 4}, got)
}

// keyOf runs p through endpoint_ingress on CPU 0 and returns the key of the
// flow the drain then returns.
func keyOf(t *testing.T, d *Datapath, p []byte) FlowKey {
	t.Helper()
	var flows []entry
	onCPU(t, 0, func() { flows, _ = runPackets(t, d, p) })
	require.Len(t, flows, 1)
	return flows[0].Key
}
