//go:build bench

package bench

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/ebpfnet/ebpfnet/internal/collectortest"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestBenchSizing: the memory a node agent needs by max_flows, at its
// worst: the ocb collector with the example agent's config and GOMEMLIMIT,
// and a flood that fills the flow table with new flows (random ports)
// every interval, for four intervals, to a live backend. Kernel = the BPF
// maps (the agent's start log); user = the process's peak RSS (VmHWM); the
// cgroup's peak is both, as a pod's limit is charged.
func TestBenchSizing(t *testing.T) {
	testnet.RequireRoot(t)
	agent := readExampleAgent(t)
	bin := collectortest.Build(t)
	node := testnet.NewNode(t, 98)
	pod := node.AddPod(t, 2)
	sink := &countingSink{addr: "127.0.0.1:0"}
	sink.start(t)
	t.Cleanup(sink.stop)

	var b strings.Builder
	b.WriteString("## Sizing: memory by max_flows under a flow flood\n\n")
	b.WriteString("Reproduce: `make bench` (or `go test -count=1 -timeout 30m -tags bench -run TestBenchSizing -v ./bench/`). The ocb collector\n")
	fmt.Fprintf(&b, "with the example agent's config (memory_limiter, batch, queues; no k8s_attributes) and GOMEMLIMIT=%s, in a memory\n", agent.goMemLimit)
	b.WriteString("cgroup without a limit; a pod sends max_flows new UDP flows (distinct ports, one frame each) every 10 s interval,\n")
	b.WriteString("for 4 intervals, to a live OTLP backend. Kernel = the BPF maps (the agent's start log, the kernel's accounting);\n")
	b.WriteString("user = the process's peak RSS (VmHWM); cgroup peak = both and the page cache, what a pod's limit is charged.\n")
	b.WriteString("Records lost = flows sent less flow records at the backend (the memory limiter's refusals, counted in\n")
	b.WriteString("otelcol_receiver_refused_log_records).\n\n")
	b.WriteString("| max_flows | kernel MiB | user (peak RSS) MiB | cgroup peak MiB | flows sent | flow records at the backend |\n|---|---|---|---|---|---|\n")
	for _, n := range []int{32768, 131072, 262144} {
		cfg := agent.benchConfig(t, node, sink.addr, 18889)
		var m map[string]any
		require.NoError(t, yaml.Unmarshal(cfg, &m))
		rcv := m["receivers"].(map[string]any)["ebpfnet"].(map[string]any)
		rcv["max_flows"] = n
		cfg, err := yaml.Marshal(m)
		require.NoError(t, err)
		cg := testnet.MemoryCgroup(t, fmt.Sprintf("ebpfnet-sizing-%d", n), 1<<40)
		col := agent.start(t, bin, cfg, cg)
		logs0 := sink.logs.Load()
		sent := 0
		for interval := 0; interval < 4; interval++ {
			start := time.Now()
			base := interval * n
			require.NoError(t, node.SendUDPFlows(pod, n, func(i int) (netip.Addr, uint16, uint16) {
				k := base + i
				return netip.AddrFrom4([4]byte{10, 99, byte(k >> 16), byte(k >> 8)}), uint16(1024 + k%60000), uint16(k)
			}))
			sent += n
			time.Sleep(10*time.Second - time.Since(start))
		}
		time.Sleep(15 * time.Second) // the last interval's drain and export
		hwm := statusMiB(col.Cmd.Process.Pid, "VmHWM")
		peak := memCgroupMiB(cg, "memory.peak", "memory.max_usage_in_bytes")
		col.Stop(t, 30*time.Second)
		kernel := kernelTotal(t, col.Output())
		got := sink.logs.Load() - logs0
		t.Logf("max_flows %d: kernel %.0f MiB, peak RSS %.0f MiB, cgroup peak %.0f MiB, sent %d, records %d", n, kernel, hwm, peak, sent, got)
		fmt.Fprintf(&b, "| %d | %.0f | %.0f | %.0f | %d | %d |\n", n, kernel, hwm, peak, sent, got)
	}
	addSection(b.String())
}

// kernelTotal is the maps' total the agent logged at start, in MiB.
func kernelTotal(t *testing.T, log string) float64 {
	m := regexp.MustCompile(`"total_bytes": (\d+)`).FindStringSubmatch(log)
	require.NotNil(t, m, "no kernel memory line in the agent's log")
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v / (1 << 20)
}
