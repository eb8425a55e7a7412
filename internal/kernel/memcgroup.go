package kernel

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/internal/mountinfo"
)

// settledMemoryCgroup is memoryCgroupLimit once the usage stops falling:
// the kernel frees a failed load's maps after RCU grace periods, in a work
// queue (at most a second).
func settledMemoryCgroup() (limit, usage uint64, ok bool) {
	limit, usage, ok = memoryCgroupLimit()
	for i := 0; ok && i < 20; i++ {
		time.Sleep(50 * time.Millisecond)
		_, u, _ := memoryCgroupLimit()
		if u+1<<20 > usage {
			return limit, min(u, usage), true
		}
		usage = u
	}
	return limit, usage, ok
}

// memoryCgroupLimit reads this process's memory cgroup limit and usage:
// cgroup v2 (memory.max, memory.current) or the v1 memory controller
// (memory.limit_in_bytes, memory.usage_in_bytes), found through
// /proc/self/cgroup and /proc/self/mountinfo. ok is false without a limit.
func memoryCgroupLimit() (limit, usage uint64, ok bool) {
	groups, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, 0, false
	}
	for _, line := range strings.Split(string(groups), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		v2 := parts[0] == "0" && parts[1] == ""
		v1 := false
		for _, c := range strings.Split(parts[1], ",") {
			v1 = v1 || c == "memory"
		}
		if !v1 && !v2 {
			continue
		}
		dir, found := cgroupDir(parts[2], v2)
		if !found {
			continue
		}
		limitFile, usageFile := "memory.limit_in_bytes", "memory.usage_in_bytes"
		if v2 {
			limitFile, usageFile = "memory.max", "memory.current"
		}
		l, lok := readUint(filepath.Join(dir, limitFile))
		u, uok := readUint(filepath.Join(dir, usageFile))
		if lok && uok && l < 1<<60 { // v1 says "unlimited" with a huge number
			return l, u, true
		}
	}
	return 0, 0, false
}

// cgroupDir finds the directory of cgroup path in the mount of its
// hierarchy (the cgroup2 mount, or the cgroup mount with the memory
// controller), whose root may be the path or an ancestor (cgroup
// namespaces).
func cgroupDir(path string, v2 bool) (string, bool) {
	mounts, err := mountinfo.Self()
	if err != nil {
		return "", false
	}
	for _, m := range mounts {
		if !(v2 && m.FSType == "cgroup2") && !(!v2 && m.FSType == "cgroup" && m.HasOption("memory")) {
			continue
		}
		rel, err := filepath.Rel(m.Root, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			rel = "." // the namespace's root is our cgroup
		}
		dir := filepath.Join(m.Point, rel)
		if _, err := os.Stat(dir); err == nil {
			return dir, true
		}
	}
	return "", false
}

func readUint(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil
}
