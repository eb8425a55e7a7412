//go:build bench

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The report: each scenario adds a section; TestMain writes them all to
// docs/BENCHMARKS.md after the run.
var (
	reportMu sync.Mutex
	sections []string
)

func addSection(s string) {
	reportMu.Lock()
	defer reportMu.Unlock()
	sections = append(sections, s)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if len(sections) > 0 {
		if err := writeReport(); err != nil {
			fmt.Fprintln(os.Stderr, "write report:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func writeReport() error {
	var b strings.Builder
	kernel, _ := exec.Command("uname", "-r").Output()
	cpu := "unknown"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` (`go test -tags bench ./bench/`) on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Machine: Linux %s, %d CPUs (%s), %s.\n", strings.TrimSpace(string(kernel)), runtime.NumCPU(), cpu, runtime.Version())
	b.WriteString("Every figure comes from this run; ratios compare against the baseline measured in the same run,\n")
	b.WriteString("interleaved (baseline, then with the receiver, repeated). Medians with the spread (min–max) over the repetitions.\n\n")
	for _, s := range sections {
		b.WriteString(s)
		b.WriteString("\n")
	}
	path := filepath.Join("..", "docs", "BENCHMARKS.md")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

type stat struct{ med, min, max float64 }

func summarize(xs []float64) stat {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return stat{}
	}
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{med, s[0], s[len(s)-1]}
}

func (s stat) format(unit string, scale float64, prec int) string {
	f := "%." + fmt.Sprint(prec) + "f"
	return fmt.Sprintf(f+" %s ("+f+"–"+f+")", s.med/scale, unit, s.min/scale, s.max/scale)
}
