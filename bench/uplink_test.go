//go:build bench

package bench

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// uplinkLoad is one direction of traffic across a routed node's uplink.
type uplinkLoad struct {
	name string
	mode iperfMode
	// run runs iperf3 for secs between the node's remote host, a pod and
	// the node itself.
	run func(t *testing.T, n *testnet.Node, pod *testnet.Pod, secs int, m iperfMode) iperfResult
}

var uplinkLoads = []uplinkLoad{
	{"remote → pod, TCP", iperfModes[0], func(t *testing.T, n *testnet.Node, p *testnet.Pod, secs int, m iperfMode) iperfResult {
		return runIperf(t, n.Remote.NS, p.NS, p.IPv4.String(), 5202, secs, m)
	}},
	{"pod → remote, TCP", iperfModes[0], func(t *testing.T, n *testnet.Node, p *testnet.Pod, secs int, m iperfMode) iperfResult {
		return runIperf(t, p.NS, n.Remote.NS, n.Remote.IPv4.String(), 5202, secs, m)
	}},
	{"remote → pod, UDP 64 B", iperfModes[2], func(t *testing.T, n *testnet.Node, p *testnet.Pod, secs int, m iperfMode) iperfResult {
		return runIperf(t, n.Remote.NS, p.NS, p.IPv4.String(), 5202, secs, m)
	}},
	{"remote → node (host traffic), TCP", iperfModes[0], func(t *testing.T, n *testnet.Node, _ *testnet.Pod, secs int, m iperfMode) iperfResult {
		return runIperf(t, n.Remote.NS, hostNS, fmt.Sprintf("10.251.%d.1", n.ID), 5202, secs, m)
	}},
}

// hostNS is the test process's own namespace (the node): inNetns.
var hostNS *testnet.Netns

// attachedNode loads the datapath with the pods' veths as endpoints (ports
// of the node's bridge) and the uplink as the uplink, drained every second.
func attachedNode(t *testing.T, n *testnet.Node) (*kernel.Datapath, func()) {
	d, stop := attached(t)
	br := linkIndex(t, n.Bridge)
	for _, p := range n.Pods {
		require.NoError(t, d.Attach(linkIndex(t, p.Veth), p.Veth, kernel.RoleEndpoint, br))
	}
	require.NoError(t, d.Attach(linkIndex(t, n.Uplink), n.Uplink, kernel.RoleUplink, 0))
	return d, stop
}

// TestBenchUplink: a routed node (pods on a bridge, an uplink veth to a
// remote host that routes the pod subnet through the node): iperf3 between
// the remote host and a pod, both ways, and between the remote host and the
// node itself, without and with the receiver's programs (endpoints on the
// pod veths, the uplink programs on the uplink), interleaved; per-run cost
// of each program from bpf_stats under each load.
func TestBenchUplink(t *testing.T) {
	testnet.RequireRoot(t)
	node := testnet.NewNode(t, 99)
	pod := node.AddPod(t, 2)
	n, secs := reps(), seconds()
	type perLoad struct {
		base, with []iperfResult
		cost       map[string][]float64
		floorIn    []float64 // the empty program on the uplink's ingress, egress
		floorEg    []float64
	}
	results := make([]perLoad, len(uplinkLoads))
	for i := range results {
		results[i].cost = map[string][]float64{}
	}
	for rep := 0; rep < n; rep++ {
		for i, l := range uplinkLoads {
			r := &results[i]
			with := func() iperfResult {
				_, stop := attachedNode(t, node)
				defer stop()
				return l.run(t, node, pod, secs, l.mode)
			}
			r.base = append(r.base, l.run(t, node, pod, secs, l.mode))
			r.with = append(r.with, with(), with())
			r.base = append(r.base, l.run(t, node, pod, secs, l.mode))
		}
	}
	statsOff, err := kernel.EnableStats()
	require.NoError(t, err)
	defer statsOff.Close()
	for rep := 0; rep < n; rep++ {
		for i, l := range uplinkLoads {
			d, stop := attachedNode(t, node)
			for name, c := range runCosts(t, d, func() { l.run(t, node, pod, secs, l.mode) }) {
				results[i].cost[name] = append(results[i].cost[name], c)
			}
			stop()
			in, eg := emptyHookCosts(t, func() { l.run(t, node, pod, secs, l.mode) }, node.Uplink)
			results[i].floorIn, results[i].floorEg = append(results[i].floorIn, in), append(results[i].floorEg, eg)
			t.Logf("rep %d %s: %v, empty program %.0f/%.0f", rep, l.name, results[i].cost, in, eg)
		}
	}
	programs := []string{"uplink_ingress", "uplink_egress", "endpoint_ingress", "endpoint_egress"}
	var b strings.Builder
	b.WriteString("## The uplink path (a routed node: remote host ↔ pod, remote host ↔ node)\n\n")
	fmt.Fprintf(&b, "Reproduce: `make bench` (or `BENCH_REPS=%d BENCH_SECONDS=%d go test -count=1 -timeout 30m -tags bench -run TestBenchUplink -v ./bench/`).\n", n, secs)
	b.WriteString("A node of the test network: a pod on a bridge, an uplink veth to a remote host that routes the pod subnet through\n")
	b.WriteString("the node. \"with\" = the endpoint programs on the pod's veth (a port of the bridge) and `uplink_ingress`/`uplink_egress`\n")
	b.WriteString("on the uplink, drained every second. The uplink programs skip what a pod endpoint counts (a packet the node routes to\n")
	b.WriteString("or from a pod) and count the node's own traffic. iperf3 for " + fmt.Sprint(secs) + " s per run, " + fmt.Sprint(n) + " repetitions of baseline, with, with,\n")
	b.WriteString("baseline; ratio = median (min–max) of with / the baseline of the same half. Cost = bpf_stats run_time_ns / run_cnt in\n")
	b.WriteString("separate runs; \"empty\" is the two-instruction program on the uplink's hooks under the same load, the floor of the\n")
	b.WriteString("measurement (the kernel's own accounting, the hook). The endpoint programs see only the pod's side of each load.\n\n")
	b.WriteString("| load | baseline | with receiver | ratio |")
	for _, p := range programs {
		fmt.Fprintf(&b, " %s ns/run |", p)
	}
	b.WriteString(" empty program on the uplink, ingress / egress ns/run |")
	b.WriteString("\n|---|---|---|---|" + strings.Repeat("---|", len(programs)+1) + "\n")
	for i, l := range uplinkLoads {
		r := results[i]
		value := func(x iperfResult) float64 { return x.BitsPerSecond }
		unit, scale, prec := "Gbit/s", 1e9, 2
		if l.mode.udp {
			value = func(x iperfResult) float64 { return x.PacketsPerSec }
			unit, scale, prec = "kpps", 1e3, 0
		}
		var base, with, ratios []float64
		for j := range r.base {
			base = append(base, value(r.base[j]))
			with = append(with, value(r.with[j]))
			ratios = append(ratios, 100*value(r.with[j])/value(r.base[j]))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |", l.name, summarize(base).format(unit, scale, prec), summarize(with).format(unit, scale, prec),
			ratioCell(summarize(ratios)))
		for _, p := range programs {
			cell := "—"
			if len(r.cost[p]) > 0 {
				cell = summarize(r.cost[p]).format("", 1, 0)
			}
			fmt.Fprintf(&b, " %s |", cell)
		}
		fmt.Fprintf(&b, " %s / %s |\n", summarize(r.floorIn).format("", 1, 0), summarize(r.floorEg).format("", 1, 0))
	}
	addSection(b.String())
}
