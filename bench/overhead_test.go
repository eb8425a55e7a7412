//go:build bench

package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

func reps() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_REPS")); err == nil && n > 0 {
		return n
	}
	return 5
}

func seconds() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_SECONDS")); err == nil && n > 0 {
		return n
	}
	return 5
}

// TestBenchOverhead: iperf3 between two pods on one bridge node, without the
// receiver and with its tcx flow programs on both pod veths (drained every
// second), interleaved; with kernel.bpf_stats_enabled, the per-run cost of
// each program under that load.
func TestBenchOverhead(t *testing.T) {
	testnet.RequireRoot(t)
	node := testnet.NewNode(t, 90)
	p1 := node.AddPod(t, 2)
	p2 := node.AddPod(t, 3)
	n, secs := reps(), seconds()

	type perMode struct {
		base, with []iperfResult
		empty      []iperfResult        // throughput with the empty program
		cost       map[string][]float64 // program -> ns/run per repetition
		floor      []float64            // empty program ns/run
	}
	results := make([]perMode, len(iperfModes))
	for i := range results {
		results[i].cost = map[string][]float64{}
	}
	iperf := func(m iperfMode) iperfResult { return runIperf(t, p1.NS, p2.NS, p2.IPv4.String(), 5201, secs, m) }

	// Throughput, interleaved in both orders (baseline, empty program,
	// receiver, then the reverse: a run's position, which favoured the
	// later runs, cancels out), with BPF run-time stats off (they add two
	// clock reads per program run).
	empty := emptyTCX(t)
	for rep := 0; rep < n; rep++ {
		for i, m := range iperfModes {
			r := &results[i]
			with := func() iperfResult {
				_, detach := attached(t, p1.Veth, p2.Veth)
				defer detach()
				return iperf(m)
			}
			withEmpty := func() iperfResult {
				defer attachHooks(t, empty, empty, p1.Veth, p2.Veth)()
				return iperf(m)
			}
			r.base = append(r.base, iperf(m))
			r.empty = append(r.empty, withEmpty())
			r.with = append(r.with, with(), with())
			r.empty = append(r.empty, withEmpty())
			r.base = append(r.base, iperf(m))
			for _, j := range []int{len(r.base) - 2, len(r.base) - 1} {
				t.Logf("rep %d %s: base %.4g empty %.4g with %.4g (%.4g / %.4g / %.4g pps)", rep, m.name, r.base[j].BitsPerSecond,
					r.empty[j].BitsPerSecond, r.with[j].BitsPerSecond, r.base[j].PacketsPerSec, r.empty[j].PacketsPerSec, r.with[j].PacketsPerSec)
			}
		}
	}
	// Per-run cost with stats on: our programs, and an empty program under
	// the same load as the floor of the measurement.
	statsOff, err := kernel.EnableStats()
	require.NoError(t, err)
	defer statsOff.Close()
	for rep := 0; rep < n; rep++ {
		for i, m := range iperfModes {
			d, detach := attached(t, p1.Veth, p2.Veth)
			for name, c := range runCosts(t, d, func() { iperf(m) }) {
				results[i].cost[name] = append(results[i].cost[name], c)
			}
			detach()
			results[i].floor = append(results[i].floor, emptyProgramCost(t, func() { iperf(m) }, p1.Veth, p2.Veth))
			t.Logf("rep %d %s: ingress %.0f egress %.0f empty %.0f ns/run", rep, m.name,
				results[i].cost["endpoint_ingress"][rep], results[i].cost["endpoint_egress"][rep], results[i].floor[rep])
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "## Per-program cost and throughput impact (iperf3 between two pods over a bridge)\n\n")
	fmt.Fprintf(&b, "Reproduce: `make bench` (or `BENCH_REPS=%d BENCH_SECONDS=%d go test -count=1 -timeout 30m -tags bench -run TestBenchOverhead -v ./bench/`).\n", n, secs)
	fmt.Fprintf(&b, "Two pods on one bridge, iperf3 client in pod A, server in pod B, %d s per run, %d repetitions; \"with\" = the tcx\n", secs, n)
	b.WriteString("`endpoint_ingress`/`endpoint_egress` programs on both pod veths (each packet passes two programs: A's ingress,\n")
	b.WriteString("B's egress, and the ACKs the other way) and the flow table drained every second. Cost = run_time_ns / run_cnt from\n")
	b.WriteString("`kernel.bpf_stats_enabled` over the \"with\" runs (includes the ~20–30 ns the kernel's own accounting adds).\n\n")
	b.WriteString("\"empty\" is a two-instruction tcx program (return TCX_NEXT) on the same hooks: the floor of both measurements.\n")
	b.WriteString("Throughput runs have the run-time stats off; each repetition runs baseline, empty, with, with, empty, baseline\n")
	b.WriteString("(later runs tended to be faster; both orders cancel that). Ratio = median (min–max) over the repetitions'\n")
	b.WriteString("two halves of with (or empty) / the baseline of the same half. The cost runs are separate runs with the stats on.\n\n")
	b.WriteString("| load | baseline | with receiver | ratio | empty program's ratio | endpoint_ingress ns/run | endpoint_egress ns/run | empty program ns/run |\n|---|---|---|---|---|---|---|---|\n")
	for i, m := range iperfModes {
		r := results[i]
		value := func(x iperfResult) float64 { return x.BitsPerSecond }
		unit, scale, prec := "Gbit/s", 1e9, 2
		if m.udp {
			value = func(x iperfResult) float64 { return x.PacketsPerSec }
			unit, scale, prec = "kpps", 1e3, 0
		}
		var base, with, ratios, emptyRatios []float64
		for j := range r.base {
			base = append(base, value(r.base[j]))
			with = append(with, value(r.with[j]))
			ratios = append(ratios, 100*value(r.with[j])/value(r.base[j]))
			emptyRatios = append(emptyRatios, 100*value(r.empty[j])/value(r.base[j]))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", m.name, summarize(base).format(unit, scale, prec), summarize(with).format(unit, scale, prec),
			ratioCell(summarize(ratios)), ratioCell(summarize(emptyRatios)), summarize(r.cost["endpoint_ingress"]).format("", 1, 0), summarize(r.cost["endpoint_egress"]).format("", 1, 0),
			summarize(r.floor).format("", 1, 0))
	}
	addSection(b.String())
}

// runCosts runs load and returns the ns/run of each of d's programs that
// ran under it (bpf_stats must be on).
func runCosts(t *testing.T, d *kernel.Datapath, load func()) map[string]float64 {
	before, err := d.ProgramStats()
	require.NoError(t, err)
	load()
	after, err := d.ProgramStats()
	require.NoError(t, err)
	out := map[string]float64{}
	for name, a := range after {
		if s := a.Sub(before[name]); s.Runs > 0 {
			out[name] = s.PerRun()
		}
	}
	return out
}

// ratioCell formats a summary of percentages.
func ratioCell(s stat) string { return fmt.Sprintf("%.1f%% (%.1f–%.1f)", s.med, s.min, s.max) }
