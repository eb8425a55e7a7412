package k8stest

import (
	"bufio"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The test node owns, on this machine: the pods' processes (in kubepods
// cgroups), containerd's shims for sockets under /tmp/ebn*, the mounts the
// kubelet makes there, the CNI's network namespaces (cni-*) and bridge
// (cni0), and kube-proxy's iptables rules. sweepNode removes all of them: at
// the end of every test that started a node, and before a node starts (what
// a killed run left behind).
func sweepNode(kube string) {
	killCgroupProcs()
	killProcs(func(cmd string) bool {
		return strings.Contains(cmd, "containerd-shim") && strings.Contains(cmd, "-address /tmp/ebn")
	})
	unmountUnder("/tmp/ebn")
	if entries, err := os.ReadDir("/var/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "cni-") {
				_ = exec.Command("ip", "netns", "del", e.Name()).Run()
			}
		}
	}
	_ = exec.Command("ip", "link", "del", "cni0").Run()
	if kube != "" {
		_ = exec.Command(kube, "kube-proxy", "--cleanup").Run()
	}
	removeCgroups()
}

// kubepodsDirs are the kubelet's cgroup trees in every hierarchy.
func kubepodsDirs() []string {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	if _, err := os.Stat("/sys/fs/cgroup/kubepods"); err == nil {
		dirs = append(dirs, "/sys/fs/cgroup/kubepods") // a cgroup2-only host
	}
	return dirs
}

func killCgroupProcs() {
	for _, root := range kubepodsDirs() {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
	}
}

// sweepDeadNode ends the processes of a node whose test was killed: its
// containerd, node components and API server (StartNode holds the node lock,
// so no live node has any).
func sweepDeadNode() {
	killProcs(func(cmd string) bool {
		f := strings.Fields(cmd)
		if len(f) < 2 {
			return false
		}
		switch {
		case f[0] == "containerd" && strings.Contains(cmd, "--config /tmp/ebn"):
			return true
		case strings.Contains(f[0], "/kube-v"):
			return f[1] != "kube-apiserver" || strings.Contains(cmd, "--advertise-address="+NodeAddr.String())
		}
		return false
	})
}

// killProcs kills the processes whose command line (arguments joined by
// spaces) match.
func killProcs(match func(cmd string) bool) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if cmd := strings.ReplaceAll(string(b), "\x00", " "); match(cmd) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// unmountUnder detaches every mount below prefix, deepest first.
func unmountUnder(prefix string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], prefix) {
			points = append(points, fields[4])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		_ = unix.Unmount(p, unix.MNT_DETACH)
	}
}

// removeCgroups removes the kubepods trees, leaves first (a cgroup
// directory is removed with rmdir once it has no processes).
func removeCgroups() {
	for _, root := range kubepodsDirs() {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
}
