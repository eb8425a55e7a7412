package k8s

import (
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Cgroups maps a cgroup v2 id (what bpf_get_current_cgroup_id returns: the
// inode of the cgroup's directory) to the pod and container its path names.
// A scan of the hierarchy under root records every cgroup, a pod's or not,
// so only an id the last scan did not see can miss. Such an id rescans:
// soon (newRescan) when it is newer than every id of the last scan (the
// kernel numbers cgroups in creation order: a container started since),
// else at most once per minRescan (an id of a cgroup gone meanwhile), so
// a container is found on its first connection while a flood of unknown
// ids costs one walk per period.
type Cgroups struct {
	root      string
	minRescan time.Duration
	newRescan time.Duration

	mu       sync.Mutex
	byID     map[uint64]CgroupIdentity // every cgroup of the last scan; zero: not a pod's
	maxID    uint64
	lastScan time.Time
}

// NewCgroups reads the hierarchy mounted at root (a cgroup2 mount).
func NewCgroups(root string) *Cgroups {
	return &Cgroups{root: root, minRescan: time.Second, newRescan: 20 * time.Millisecond, byID: map[uint64]CgroupIdentity{}}
}

// Lookup returns the identity of cgroup id (zero when it is not a pod's).
func (c *Cgroups) Lookup(id uint64) CgroupIdentity {
	if id == 0 {
		return CgroupIdentity{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.byID[id]; ok {
		return v
	}
	wait := c.minRescan
	if id > c.maxID {
		wait = c.newRescan
	}
	if time.Since(c.lastScan) < wait {
		return CgroupIdentity{}
	}
	c.scanLocked()
	return c.byID[id]
}

// scanLocked rebuilds the map from the hierarchy: cgroups that are gone
// are forgotten, so the map is bounded by the cgroups that exist.
func (c *Cgroups) scanLocked() {
	c.lastScan = time.Now()
	byID := make(map[uint64]CgroupIdentity, len(c.byID))
	var maxID uint64
	_ = filepath.WalkDir(c.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil // a cgroup removed during the walk
		}
		rel, _ := filepath.Rel(c.root, path)
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			byID[st.Ino] = ParseCgroupPath("/" + rel) // zero for a cgroup of no pod
			maxID = max(maxID, st.Ino)
		}
		return nil
	})
	c.byID, c.maxID = byID, maxID
}
