//go:build bench

package bench

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// The steps of bpf/bench/breakdown.c, each adding one to the one before.
var breakdownSteps = []string{"parse", "account_jiffies", "account_coarse", "account_slot", "account_common"}

// TestBenchBreakdown: under the iperf3 loads of TestBenchOverhead, the
// per-run cost of an empty program, of the receiver's parse alone, of parse
// and accounting in one per-CPU hash (with the receiver's value, and with
// the previous design's), and of the receiver's endpoint programs,
// interleaved in each repetition.
func TestBenchBreakdown(t *testing.T) {
	testnet.RequireRoot(t)
	node := testnet.NewNode(t, 91)
	p1 := node.AddPod(t, 2)
	p2 := node.AddPod(t, 3)
	// Two instances of each step program, sharing their maps as the
	// receiver's ingress and egress programs do: costs per hook.
	spec := compileBenchSpec(t, "breakdown")
	collIn := loadBench(t, spec, nil)
	shared := map[string]*ebpf.Map{}
	for name, m := range collIn.Maps {
		if name != "breakdown_slot" { // one slot per hook, as the receiver has
			shared[name] = m
		}
	}
	collEg := loadBench(t, spec, shared)
	statsOff, err := kernel.EnableStats()
	require.NoError(t, err)
	defer statsOff.Close()
	n, secs := reps(), seconds()

	cols := append(append([]string{"empty"}, breakdownSteps...), "receiver")
	hooks := []string{"ingress", "egress"}
	// mode -> "column hook" -> ns/run per repetition
	cost := make([]map[string][]float64, len(iperfModes))
	for rep := 0; rep < n; rep++ {
		for i, m := range iperfModes {
			if cost[i] == nil {
				cost[i] = map[string][]float64{}
			}
			c := cost[i]
			load := func() { runIperf(t, p1.NS, p2.NS, p2.IPv4.String(), 5201, secs, m) }
			add := func(col string, in, eg float64) {
				c[col+" ingress"] = append(c[col+" ingress"], in)
				c[col+" egress"] = append(c[col+" egress"], eg)
			}
			in, eg := emptyHookCosts(t, load, p1.Veth, p2.Veth)
			add("empty", in, eg)
			for _, name := range breakdownSteps {
				in, eg := hookCosts(t, collIn.Programs[name], collEg.Programs[name], load, p1.Veth, p2.Veth)
				add(name, in, eg)
			}
			d, detach := attached(t, p1.Veth, p2.Veth)
			before, err := d.ProgramStats()
			require.NoError(t, err)
			load()
			after, err := d.ProgramStats()
			require.NoError(t, err)
			detach()
			add("receiver", after["endpoint_ingress"].Sub(before["endpoint_ingress"]).PerRun(),
				after["endpoint_egress"].Sub(before["endpoint_egress"]).PerRun())
			line := fmt.Sprintf("rep %d %s:", rep, m.name)
			for _, col := range cols {
				line += fmt.Sprintf(" %s %.0f/%.0f", col, c[col+" ingress"][rep], c[col+" egress"][rep])
			}
			t.Log(line)
		}
	}

	var b strings.Builder
	b.WriteString("## Where the per-run cost of the tcx flow programs goes\n\n")
	fmt.Fprintf(&b, "Reproduce: `make bench` (or `BENCH_REPS=%d BENCH_SECONDS=%d go test -count=1 -timeout 30m -tags bench -run TestBenchBreakdown -v ./bench/`).\n", n, secs)
	b.WriteString("The loads of the first section (iperf3 between two pods, both pod veths, both tcx hooks), one program at a\n")
	fmt.Fprintf(&b, "time, %d s each, all of them once per repetition, %d repetitions; ns/run from bpf_stats (included, as in the\n", secs, n)
	b.WriteString("budget). The steps are programs of `bpf/bench/breakdown.c`, each adding one thing to the one before: parse = the\n")
	b.WriteString("receiver's parser into its flow key, nothing stored; account = parse, then the receiver's `account_in` on a\n")
	b.WriteString("per-CPU hash (lookup, add in place, insert on a miss) with its 32-byte value stamped with jiffies; previous =\n")
	b.WriteString("the same with the value of the previous design, 40 bytes stamped with `bpf_ktime_get_coarse_ns()`; slot =\n")
	b.WriteString("account behind the receiver's per-CPU slots (`account_cached`, 16 per hook, picked by a hash of the key: a\n")
	b.WriteString("packet of the slot's flow is added to the slot, any other goes to the hash and takes the slot); common = slot\n")
	b.WriteString("with the receiver's short way in front (`parse_common`, `slot_holds`: a packet of untagged IPv4 without options,\n")
	b.WriteString("TCP or UDP, is read into registers and compared with its slot's key, without building its own key); receiver =\n")
	b.WriteString("the receiver's `endpoint_ingress` / `endpoint_egress` (common, plus the choice of the active table). Each program is\n")
	b.WriteString("loaded twice, one instance on the ingress hooks and one on the egress hooks (sharing their maps but the slots), so\n")
	b.WriteString("that each hook has its own figure: ingress (the host side's receive: what the pod sent) runs first on a packet,\n")
	b.WriteString("with colder caches.\n\n")
	b.WriteString("| load | hook | empty | parse | account | account, previous value and clock | slot | common | receiver |\n|---|---|---|---|---|---|---|---|---|\n")
	for i, m := range iperfModes {
		for _, h := range hooks {
			fmt.Fprintf(&b, "| %s | %s |", m.name, h)
			for _, col := range cols {
				fmt.Fprintf(&b, " %s |", summarize(cost[i][col+" "+h]).format("", 1, 0))
			}
			b.WriteString("\n")
		}
	}
	// The range over loads and hooks of f (a median, or a difference of
	// medians), and the median of those values.
	span := func(f func(i int, h string) float64) string {
		var vs []float64
		for i := range iperfModes {
			for _, h := range hooks {
				vs = append(vs, f(i, h))
			}
		}
		st := summarize(vs)
		// Rounded first, so that -0.4 reads 0, not -0.
		r := func(x float64) float64 { return math.Round(x) + 0 }
		return fmt.Sprintf("from %.0f to %.0f ns (median %.0f)", r(st.min), r(st.max), r(st.med))
	}
	med := func(i int, col, h string) float64 { return summarize(cost[i][col+" "+h]).med }
	diff := func(a, b string) func(int, string) float64 {
		return func(i int, h string) float64 { return med(i, a, h) - med(i, b, h) }
	}
	b.WriteString("\nWhat it shows (differences of the medians above, over the loads and hooks):\n\n")
	fmt.Fprintf(&b, "- The floor, an empty program (the dispatch and bpf_stats' two clock reads), is %s\n",
		span(func(i int, h string) float64 { return med(i, "empty", h) }))
	b.WriteString("  of the 100 ns budget.\n")
	fmt.Fprintf(&b, "- Parsing adds %s; the per-CPU hash (lookup, add in place)\n", span(diff("parse", "empty")))
	fmt.Fprintf(&b, "  %s, most of the program and most under TCP, whose copies leave the caches\n", span(diff("account_jiffies", "parse")))
	b.WriteString("  cold between packets: its bucket, key and value are memory reads (the map-type study below has the same\n")
	b.WriteString("  hash at 100k flows at twice its one-flow cost).\n")
	b.WriteString("- The previous value and clock (a helper call for the coarse clock, 40 bytes) against jiffies (one inlined\n")
	fmt.Fprintf(&b, "  load) in 32 bytes, which the receiver's programs now use: %s more per run.\n", span(diff("account_coarse", "account_jiffies")))
	fmt.Fprintf(&b, "- The per-CPU slots in front of the hash save %s per run against\n", span(diff("account_jiffies", "account_slot")))
	b.WriteString("  account alone: under these loads consecutive packets on a hook and CPU are mostly of flows that hold a slot, so\n")
	b.WriteString("  a compare in this CPU's own memory replaces the hash lookup. Where packets of many flows interleave, each packet\n")
	b.WriteString("  misses its slot and pays the compare and the slot write on top of the hash (the map-type study's \"ours\" with\n")
	b.WriteString("  100k flows, against its per-CPU hash).\n")
	fmt.Fprintf(&b, "- The short way for common packets saves %s per run against slot: the\n", span(diff("account_slot", "account_common")))
	b.WriteString("  flow key (zeroed, filled field by field on the stack, read back for the slot's hash and the compare) is\n")
	b.WriteString("  not built for a packet of the flow in its slot; all of these loads' packets are common ones.\n")
	b.WriteString("- Choosing the active table (a global read, two inlined copies of the accounting) adds\n")
	fmt.Fprintf(&b, "  %s to common.\n", span(diff("receiver", "account_common")))
	addSection(b.String())
}
