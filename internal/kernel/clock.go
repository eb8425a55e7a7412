package kernel

import (
	"time"

	"golang.org/x/sys/unix"
)

// MonotonicNow returns CLOCK_MONOTONIC in nanoseconds: the clock of
// bpf_ktime_get_ns, which the programs stamp flows with.
func MonotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// WallClockOffset returns what to add to a CLOCK_MONOTONIC timestamp to get
// wall-clock time now. It changes when the wall clock is stepped, so callers
// read it again periodically (every drain), not once. The wall-clock read is
// bracketed by two monotonic reads, and the tightest of a few tries is kept,
// so that a preemption between the reads does not skew it.
func WallClockOffset() time.Duration {
	best, bestGap := time.Duration(0), uint64(1<<63)
	for i := 0; i < 5; i++ {
		m1 := MonotonicNow()
		wall := time.Now().UnixNano()
		m2 := MonotonicNow()
		if gap := m2 - m1; gap < bestGap {
			bestGap = gap
			best = time.Duration(wall - int64(m1+gap/2))
		}
	}
	return best
}

// OwnNetns returns the inode of this process's network namespace (the
// node's, for a collector with hostNetwork), or 0 if it cannot be read.
func OwnNetns() uint32 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return 0
	}
	return uint32(st.Ino)
}
