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
// wall-clock time now. It changes when the wall clock is stepped, so it is
// read again for every drain.
func WallClockOffset() time.Duration {
	mono := MonotonicNow()
	return time.Duration(time.Now().UnixNano() - int64(mono))
}
