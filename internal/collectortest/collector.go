// Package collectortest builds the project's ocb collector and runs it as
// a process of a test (the end-to-end tests and the benchmarks).
package collectortest

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Build builds the ocb distribution (make build: rebuilt only when sources
// changed) and returns the binary.
func Build(tb testing.TB) string {
	tb.Helper()
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(self), "..", "..")
	out, err := exec.Command("make", "-C", root, "build").CombinedOutput()
	require.NoError(tb, err, "make build:\n%s", out)
	return filepath.Join(root, "dist", "otelcol-ebpfnet", "otelcol-ebpfnet")
}

// Collector is a running collector process; its output is kept.
type Collector struct {
	Cmd *exec.Cmd
	mu  sync.Mutex
	out strings.Builder
}

func (c *Collector) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

// Output is what the collector printed so far.
func (c *Collector) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// Start runs bin with config, setup (nil: none) adjusting the command
// first (its environment, a cgroup), and returns once the collector says
// it is ready. At the test's end it is SIGTERMed if still running, and its
// output logged if the test failed.
func Start(tb testing.TB, bin, config string, setup func(*exec.Cmd)) *Collector {
	tb.Helper()
	c := &Collector{Cmd: exec.Command(bin, "--config", config)}
	c.Cmd.Stdout, c.Cmd.Stderr = c, c
	if setup != nil {
		setup(c.Cmd)
	}
	require.NoError(tb, c.Cmd.Start())
	tb.Cleanup(func() {
		if c.Cmd.ProcessState == nil {
			_ = c.Cmd.Process.Signal(syscall.SIGTERM)
			_ = c.Cmd.Wait()
		}
		if tb.Failed() {
			tb.Logf("collector %s output:\n%s", filepath.Base(config), c.Output())
		}
	})
	require.Eventually(tb, func() bool { return strings.Contains(c.Output(), "Everything is ready") }, 30*time.Second, 50*time.Millisecond,
		"collector did not start:\n%s", c.Output())
	return c
}

// Stop SIGTERMs the collector and returns its exit code; it fails the test
// if the collector has not exited within timeout.
func (c *Collector) Stop(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	require.NoError(tb, c.Cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- c.Cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(timeout):
		_ = c.Cmd.Process.Kill()
		<-done
		tb.Fatalf("collector did not exit %s after SIGTERM:\n%s", timeout, c.Output())
	}
	return c.Cmd.ProcessState.ExitCode()
}
