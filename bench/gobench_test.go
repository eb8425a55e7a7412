//go:build bench

package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// goBenchPackages hold the Go benchmarks of the hot user-space paths.
var goBenchPackages = []string{"./internal/kernel/", "./internal/convert/"}

// TestBenchGo runs the packages' Go benchmarks (go test -bench) and reports
// every metric each prints, with allocations.
func TestBenchGo(t *testing.T) {
	testnet.RequireRoot(t) // the kernel package's benchmarks load programs
	const count = 5
	args := append([]string{"test", "-run", "^$", "-bench", ".", "-benchmem", "-count", strconv.Itoa(count)}, goBenchPackages...)
	cmd := exec.Command("go", args...)
	cmd.Dir = ".."
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	require.NoError(t, err, "go %s:\n%s", strings.Join(args, " "), out)

	type result struct {
		values map[string][]float64
		units  []string
	}
	results := map[string]*result{}
	var names []string
	line := regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$`)
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		r := results[m[1]]
		if r == nil {
			r = &result{values: map[string][]float64{}}
			results[m[1]] = r
			names = append(names, m[1])
		}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			require.NoError(t, err, sc.Text())
			if _, ok := r.values[f[i+1]]; !ok {
				r.units = append(r.units, f[i+1])
			}
			r.values[f[i+1]] = append(r.values[f[i+1]], v)
		}
	}
	require.NotEmpty(t, names, "no benchmark results in:\n%s", out)

	var b strings.Builder
	b.WriteString("## Go benchmarks of the hot user-space paths\n\n")
	fmt.Fprintf(&b, "Reproduce: `make bench` (or `go test -count=1 -tags bench -run TestBenchGo -v ./bench/`, which runs `go %s`).\n", strings.Join(args, " "))
	fmt.Fprintf(&b, "Median (min–max) of the %d runs of each; what each measures is in its doc comment. The drain's wall time is mostly the\n", count)
	b.WriteString("barrier's RCU grace period, a wait: `cpu-ns/op` is the CPU time of the thread that drains.\n\n")
	b.WriteString("| benchmark | ns/op | B/op | allocs/op | other |\n|---|---|---|---|---|\n")
	for _, name := range names {
		r := results[name]
		cell := func(unit string, prec int) string {
			if v, ok := r.values[unit]; ok {
				return summarize(v).format("", 1, prec)
			}
			return ""
		}
		var other []string
		for _, u := range r.units {
			if !slices.Contains([]string{"ns/op", "B/op", "allocs/op"}, u) {
				other = append(other, u+" "+cell(u, 0))
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", strings.TrimPrefix(name, "Benchmark"), cell("ns/op", 0), cell("B/op", 0),
			cell("allocs/op", 0), strings.Join(other, "; "))
	}
	addSection(b.String())
}
