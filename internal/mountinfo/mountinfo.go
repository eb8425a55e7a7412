// Package mountinfo reads /proc/self/mountinfo: where each filesystem is
// mounted, of what type, and from which root of it (the cgroup hierarchies
// are found there, never assumed at a path).
package mountinfo

import (
	"os"
	"slices"
	"strings"
)

// Mount is one line of mountinfo.
type Mount struct {
	Root   string   // the path within the filesystem mounted here
	Point  string   // where it is mounted
	FSType string   // cgroup2, cgroup, ...
	Super  []string // the super options (for cgroup v1: its controllers)
}

// HasOption reports whether the super options include o.
func (m Mount) HasOption(o string) bool { return slices.Contains(m.Super, o) }

// Parse parses mountinfo text:
//
//	36 35 0:30 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
//
// (optional fields may come before the "-").
func Parse(data string) []Mount {
	var out []Mount
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if sep < 5 || len(f) < sep+4 {
			continue
		}
		out = append(out, Mount{Root: f[3], Point: f[4], FSType: f[sep+1], Super: strings.Split(f[sep+3], ",")})
	}
	return out
}

// Self reads this process's mounts.
func Self() ([]Mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return Parse(string(b)), nil
}
