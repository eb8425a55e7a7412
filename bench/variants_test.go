//go:build bench

package bench

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// compileReceiver compiles bpf/ebpfnet.c as go generate does, with extra
// flags, and sizes the flow tables as the receiver's default max_flows.
func compileReceiver(t *testing.T, extra string) *ebpf.CollectionSpec {
	spec := compileBPF(t, "../bpf/ebpfnet.c", strings.Fields(extra)...)
	for _, name := range []string{"flows_a", "flows_b"} {
		spec.Maps[name].MaxEntries = 131072
	}
	spec.Maps["drain_barrier"].InnerMap.MaxEntries = 131072
	return spec
}

// TestBenchVariants compares the receiver's endpoint programs as built with
// variants of the build, given as clang flags (e.g. -DNAME) separated by
// ";" in BENCH_VARIANTS, side by side: in each repetition, under the same
// iperf3 load of TestBenchOverhead, the empty program, the receiver as built
// and each variant, ns/run from bpf_stats on the tcx hooks of both pod veths.
// By default the variant is the build without branch hints, which writes
// its section; with BENCH_VARIANTS set it only logs (a tool for changes).
func TestBenchVariants(t *testing.T) {
	flags := os.Getenv("BENCH_VARIANTS")
	report := flags == ""
	if report {
		flags = "-DEBPFNET_NO_BRANCH_HINTS"
	}
	testnet.RequireRoot(t)
	node := testnet.NewNode(t, 93)
	p1 := node.AddPod(t, 2)
	p2 := node.AddPod(t, 3)
	names := append([]string{"as built"}, strings.Split(flags, ";")...)
	var colls []*ebpf.Collection
	for i := range names {
		extra := ""
		if i > 0 {
			extra = names[i]
		}
		colls = append(colls, loadBench(t, compileReceiver(t, extra), nil))
	}
	statsOff, err := kernel.EnableStats()
	require.NoError(t, err)
	defer statsOff.Close()
	n, secs := reps(), seconds()
	t.Logf("columns: empty | %s (ingress / egress ns/run)", strings.Join(names, " | "))
	var b strings.Builder
	b.WriteString("## Build variants side by side: branch hints\n\n")
	fmt.Fprintf(&b, "Reproduce: `make bench` (or `BENCH_REPS=%d BENCH_SECONDS=%d go test -count=1 -tags bench -run TestBenchVariants -v ./bench/`). The\n", n, secs)
	b.WriteString("receiver's endpoint programs as built and built with `-DEBPFNET_NO_BRANCH_HINTS` (no likely/unlikely in\n")
	b.WriteString("bpf/flow.h), each with its own maps, on the tcx hooks of both pod veths in turn under the iperf3 loads of the\n")
	fmt.Fprintf(&b, "first section, %d s per run, %d repetitions, with the empty program as the floor; ns/run from bpf_stats, ingress / egress.\n", secs, n)
	b.WriteString("Each repetition runs the builds in one order and then in the reverse one (a repetition's value is the mean of the\n")
	b.WriteString("two): with one order only, whichever build ran later measured 2-5 ns/run faster.\n")
	b.WriteString("`BENCH_VARIANTS='-DA;-DB'` compares other builds (logged, no section).\n\n")
	b.WriteString("| load | empty program | as built | without branch hints |\n|---|---|---|---|\n")
	for _, m := range iperfModes {
		res := make([][2][]float64, len(colls)+1) // empty, then each build
		for rep := 0; rep < n; rep++ {
			load := func() { runIperf(t, p1.NS, p2.NS, p2.IPv4.String(), 5201, secs, m) }
			in, eg := emptyHookCosts(t, load, p1.Veth, p2.Veth)
			res[0][0], res[0][1] = append(res[0][0], in), append(res[0][1], eg)
			// The builds in one order, then in the reverse one: runs
			// later in a repetition tended to be faster, which favoured
			// the variants when they always came after the build as is.
			sum := make([][2]float64, len(colls))
			for pass := 0; pass < 2; pass++ {
				for j := range colls {
					i := j
					if pass == 1 {
						i = len(colls) - 1 - j
					}
					c := colls[i]
					in, eg := hookCosts(t, c.Programs["endpoint_ingress"], c.Programs["endpoint_egress"], load, p1.Veth, p2.Veth)
					sum[i][0] += in / 2
					sum[i][1] += eg / 2
				}
			}
			for i := range colls {
				res[i+1][0], res[i+1][1] = append(res[i+1][0], sum[i][0]), append(res[i+1][1], sum[i][1])
			}
			line := fmt.Sprintf("rep %d %s:", rep, m.name)
			for _, r := range res {
				line += fmt.Sprintf(" | %.0f / %.0f", r[0][rep], r[1][rep])
			}
			t.Log(line)
		}
		line, row := m.name+":", "| "+m.name
		for _, r := range res {
			cell := summarize(r[0]).format("", 1, 0) + " / " + summarize(r[1]).format("", 1, 0)
			line += " | " + cell
			row += " | " + cell
		}
		t.Log(line)
		b.WriteString(row + " |\n")
	}
	if report {
		addSection(b.String())
	}
}
