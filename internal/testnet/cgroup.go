package testnet

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/mountinfo"
)

// MemoryCgroup makes a memory cgroup with a limit, removed at the end of
// the test: cgroup v2 where its memory controller is enabled, else the v1
// memory hierarchy (found in /proc/self/mountinfo, not assumed). A process
// joins it by writing its PID to the directory's cgroup.procs (InCgroup).
func MemoryCgroup(t testing.TB, name string, limit int64) string {
	mounts, err := mountinfo.Self()
	require.NoError(t, err)
	var v1, v2 string
	for _, m := range mounts {
		switch {
		case m.FSType == "cgroup2":
			if c, err := os.ReadFile(filepath.Join(m.Point, "cgroup.subtree_control")); err == nil && strings.Contains(string(c), "memory") {
				v2 = m.Point
			}
		case m.FSType == "cgroup" && m.HasOption("memory"):
			v1 = m.Point
		}
	}
	dir, limitFile := filepath.Join(v2, name), "memory.max"
	if v2 == "" {
		require.NotEmpty(t, v1, "no memory cgroup controller on this machine")
		dir, limitFile = filepath.Join(v1, name), "memory.limit_in_bytes"
	}
	_ = os.Remove(dir) // a previous run's
	require.NoError(t, os.Mkdir(dir, 0o755))
	t.Cleanup(func() { _ = os.Remove(dir) })
	require.NoError(t, os.WriteFile(filepath.Join(dir, limitFile), []byte(strconv.FormatInt(limit, 10)), 0o644))
	return dir
}

// InCgroup makes cmd run in cgroup dir from its first instruction (a shell
// joins it, then execs the command).
func InCgroup(dir string, cmd *exec.Cmd) {
	args := append([]string{"-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, dir, cmd.Path}, cmd.Args[1:]...)
	cmd.Path, cmd.Args = "/bin/sh", append([]string{"sh"}, args...)
}

// LimitHits is how many times the memory cgroup dir (MemoryCgroup) reached
// its limit, by the kernel's count: v1 memory.failcnt, v2 memory.events max.
func LimitHits(t testing.TB, dir string) int {
	if b, err := os.ReadFile(filepath.Join(dir, "memory.failcnt")); err == nil {
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		require.NoError(t, err)
		return n
	}
	b, err := os.ReadFile(filepath.Join(dir, "memory.events"))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "max "); ok {
			n, err := strconv.Atoi(v)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("no max count in %s/memory.events", dir)
	return 0
}
