package kernel

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestPlanMemoryMatchesKernel: the plan made before Load is what the
// kernel charges for every map once loaded (fdinfo memlock), at the
// defaults and at large sizes.
func TestPlanMemoryMatchesKernel(t *testing.T) {
	testnet.RequireRoot(t)
	for _, o := range []Options{{MaxFlows: 131072}, {MaxFlows: 1 << 20, MaxConns: 1 << 18, RingSize: 1 << 24}, {MaxFlows: 100000, MaxConns: 3000}} {
		plan, err := PlanMemory(o)
		require.NoError(t, err)
		d := loadOpts(t, o)
		got, err := d.Memory()
		require.NoError(t, err)
		require.Len(t, plan.Maps, len(got.Maps))
		for _, m := range got.Maps {
			require.NotZero(t, m.Bytes, m.Name)
			require.InEpsilon(t, m.Bytes, plan.Bytes(m.Name), 0.001, "%s at %d entries", m.Name, m.Entries)
		}
		// The flow tables' entries do not grow with the CPU count: the
		// whole of a table is within 2% of entries x (its two-entry cost).
		per := float64(got.Bytes(ebpfnetMapFlowsA)) / float64(roundPow2(o.MaxFlows))
		require.Less(t, per, 200.0, "bytes per flow table entry")
	}
}

func loadOpts(t *testing.T, o Options) *Datapath {
	d, err := Load(o)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	return d
}

// TestHelperLoadSized is not a test: run by TestMemoryLimitSaysWhatFits in
// a memory cgroup, it loads with $EBPFNET_MAX_FLOWS and prints the result.
func TestHelperLoadSized(t *testing.T) {
	n, err := strconv.ParseUint(os.Getenv("EBPFNET_MAX_FLOWS"), 10, 32)
	if err != nil {
		t.Skip("helper process for TestMemoryLimitSaysWhatFits, not a test of its own; skipped unless run by it (privileged tests)")
	}
	d, err := Load(Options{MaxFlows: uint32(n)})
	if err != nil {
		fmt.Printf("RESULT %v\n", err)
		return
	}
	d.Close()
	fmt.Println("RESULT OK")
}

// TestMemoryLimitSaysWhatFits: in a memory cgroup too small for the maps
// (as a pod's limit), Load fails naming max_flows and a value that fits,
// before the cgroup ever reaches its limit (there, the kernel may OOM-kill
// the process instead of failing the allocation); the kernel then loads
// that value in the same cgroup.
func TestMemoryLimitSaysWhatFits(t *testing.T) {
	testnet.RequireRoot(t)
	cg := testnet.MemoryCgroup(t, "ebpfnet-memtest", 160<<20)
	out := runInCgroup(t, cg, 1<<20)
	require.Zero(t, testnet.LimitHits(t, cg), "the refusal came after the cgroup reached its limit")
	require.Contains(t, out, "not enough memory for the BPF maps")
	require.Contains(t, out, "max_flows 1048576")
	m := regexp.MustCompile(`max_flows (\d+) would fit \(lower it by (\d+)\)`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	fit, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	require.Greater(t, fit, 16)
	require.Equal(t, "RESULT OK", runInCgroup(t, cg, fit), "the value the error names loads")
}

// runInCgroup runs TestHelperLoadSized in cgroup cg and returns its line.
func runInCgroup(t *testing.T, cg string, maxFlows int) string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperLoadSized$", "-test.count=1")
	testnet.InCgroup(cg, cmd)
	cmd.Env = append(os.Environ(), fmt.Sprintf("EBPFNET_MAX_FLOWS=%d", maxFlows))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, line := range strings.Split(string(out), "\n") {
		if r, ok := strings.CutPrefix(line, "RESULT "); ok {
			return "RESULT " + r
		}
	}
	t.Fatalf("no result:\n%s", out)
	return ""
}
