package mountinfo

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestParse: a hybrid host's lines (optional fields before the "-", a v1
// controller's options, a cgroup namespace's root) and a malformed one.
func TestParse(t *testing.T) {
	got := Parse(`34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid shared:10 master:2 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:32 /process_api/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
not a mount line`)
	require.Equal(t, []Mount{
		{Root: "/", Point: "/sys/fs/cgroup/unified", FSType: "cgroup2", Super: []string{"rw", "nsdelegate"}},
		{Root: "/process_api/abc", Point: "/sys/fs/cgroup/memory", FSType: "cgroup", Super: []string{"rw", "memory"}},
	}, got)
	require.True(t, got[1].HasOption("memory"))
	require.False(t, got[0].HasOption("memory"))
	self, err := Self()
	require.NoError(t, err)
	require.NotEmpty(t, self)
}
