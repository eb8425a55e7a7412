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

// since is how long before now a CLOCK_MONOTONIC stamp t was (both in ns),
// and 0 for a stamp at or after now. The clock starts near zero at boot, so
// code never subtracts a duration from a reading: it subtracts readings,
// guarded, here.
func since(now, t uint64) time.Duration {
	if t >= now {
		return 0
	}
	return time.Duration(now - t)
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

// jiffyClock converts the flow tables' times (the low 32 bits of jiffies,
// see struct flow_counts) to CLOCK_MONOTONIC ns. Jiffies advance by exactly
// one tick of CLOCK_MONOTONIC each (the kernel derives them from it), so a
// (jiffies, coarse ns) pair of one tick, sampled at each drain, anchors the
// conversion, and the tick length comes from the first pair and the latest.
type jiffyClock struct {
	base, at clockPair
	started  bool
	tickNs   uint64 // 0 until known from two pairs
}

// clockPair is jiffies_64 and CLOCK_MONOTONIC (coarse) of the same tick.
type clockPair struct{ jiffies, ns uint64 }

// Kernel tick lengths of the HZ values Kconfig offers (100, 250, 300, 1000):
// NSEC_PER_SEC/HZ rounded as TICK_NSEC does.
var tickLengths = []uint64{10_000_000, 4_000_000, 3_333_333, 1_000_000}

// observe records a new pair and refines the tick length.
func (c *jiffyClock) observe(p clockPair) {
	if !c.started {
		c.base, c.started = p, true
	}
	c.at = p
	dj := p.jiffies - c.base.jiffies
	if dj == 0 || p.ns <= c.base.ns {
		return
	}
	// The standard tick that explains the elapsed time best, if it does to
	// within one tick: a pair can be one tick off when the tick's updates of
	// jiffies and of the clock straddle its reads.
	dt, best, bestErr := p.ns-c.base.ns, uint64(0), uint64(1<<63)
	for _, l := range tickLengths {
		e := dt - dj*l
		if dj*l > dt {
			e = dj*l - dt
		}
		if e <= l && e < bestErr {
			best, bestErr = l, e
		}
	}
	switch {
	case best != 0:
		c.tickNs = best
	case dj >= 100: // a non-standard HZ: one tick off is 1% at most
		c.tickNs = dt / dj
	}
}

// age is how many ticks before the latest pair j is.
func (c *jiffyClock) age(j uint32) uint64 {
	a := uint64(uint32(c.at.jiffies) - j)
	if a > 1<<31 { // after the pair: cannot happen for a drained table
		return 0
	}
	return a
}

// ns converts a flow time (low 32 bits of jiffies, at or before the latest
// pair) to CLOCK_MONOTONIC ns.
func (c *jiffyClock) ns(j uint32) uint64 {
	age := c.age(j)
	tick := c.tickNs
	if tick == 0 {
		// Not known yet (all pairs within a few ticks): the most common
		// tick, HZ=250.
		tick = tickLengths[1]
	}
	if age*tick > c.at.ns {
		return 0
	}
	return c.at.ns - age*tick
}
