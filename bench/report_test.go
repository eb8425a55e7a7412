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
	// Each section says when it was measured: a partial run keeps the
	// sections of earlier runs (mergeSections).
	head, rest, _ := strings.Cut(s, "\n")
	// And on what: absolute times differ by 1.5-3x between VMs of the
	// same shape.
	s = head + "\n\n_Measured " + time.Now().UTC().Format("2006-01-02 15:04 UTC") + " on " + machine() + "._\n" + rest
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

// cpuModel is /proc/cpuinfo's first model name.
func cpuModel() string {
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
			}
		}
	}
	return "unknown"
}

// machine names the CPUs a section ran on.
func machine() string { return fmt.Sprintf("%d CPUs (%s)", runtime.NumCPU(), cpuModel()) }

func writeReport() error {
	var b strings.Builder
	kernel, _ := exec.Command("uname", "-r").Output()
	cpu := cpuModel()
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` (`go test -count=1 -tags bench ./bench/`); last written %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Machine: Linux %s, %d CPUs (%s), %s.\n", strings.TrimSpace(string(kernel)), runtime.NumCPU(), cpu, runtime.Version())
	b.WriteString("Each section comes from one run (its date, and since 2026-12-02 its CPUs, are under its heading: a section that names\n")
	b.WriteString("none ran on another 2-CPU VM, Intel or AMD, and absolute times differ by 1.5-3x between such VMs; compare within a\n")
	b.WriteString("section); ratios compare against the baseline measured in the same run,\n")
	b.WriteString("interleaved (baseline, then with the receiver, repeated). Medians with the spread (min–max) over the repetitions.\n\n")
	path := filepath.Join("..", "docs", "BENCHMARKS.md")
	old, _ := os.ReadFile(path)
	for _, s := range mergeSections(string(old), sections) {
		b.WriteString(s)
		b.WriteString("\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// mergeSections keeps the sections ("## " headings) of the previous report
// that this run did not measure, so running one scenario does not erase
// the others; a section this run measured replaces its old version in place.
func mergeSections(old string, fresh []string) []string {
	title := func(s string) string { t, _, _ := strings.Cut(s, "\n"); return t }
	byTitle := make(map[string]string, len(fresh))
	for _, s := range fresh {
		byTitle[title(s)] = s
	}
	var out []string
	if i := strings.Index(old, "\n## "); i >= 0 {
		for _, s := range strings.Split(old[i+1:], "\n## ") {
			s = "## " + strings.TrimPrefix(strings.TrimRight(s, "\n"), "## ") + "\n"
			if f, ok := byTitle[title(s)]; ok {
				s = f
				delete(byTitle, title(s))
			}
			out = append(out, s)
		}
	}
	for _, s := range fresh {
		if _, ok := byTitle[title(s)]; ok {
			out = append(out, s)
		}
	}
	return out
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
	if unit != "" {
		unit = " " + unit
	}
	return fmt.Sprintf(f+"%s ("+f+"–"+f+")", s.med/scale, unit, s.min/scale, s.max/scale)
}
