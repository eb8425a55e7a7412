package flow

import (
	"encoding/binary"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Threshold is an OpenTelemetry consistent-probability sampling threshold
// (the tracestate `ot=th` value, 56 bits): a record is kept when its
// randomness (56 bits) is at least the threshold, so a threshold of 0 keeps
// everything and a record kept at threshold t stands for 2^56/(2^56-t)
// records (its adjusted count).
type Threshold uint64

const maxThreshold = 1 << 56

// RatioThreshold is the threshold that keeps ratio (0, 1] of the records:
// 2^56 - round(ratio * 2^56), at full precision (14 hexadecimal digits).
// Out of range ratios keep everything.
func RatioThreshold(ratio float64) Threshold {
	if !(ratio > 0 && ratio < 1) {
		return 0
	}
	kept := max(uint64(math.Round(ratio*maxThreshold)), 1)
	return Threshold(maxThreshold - kept)
}

// Keeps reports whether a record of randomness r (56 bits) is kept.
func (t Threshold) Keeps(r uint64) bool { return r&(maxThreshold-1) >= uint64(t) }

// TValue is the threshold as the tracestate's `th` writes it: 14
// hexadecimal digits without trailing zeros ("0" keeps all).
func (t Threshold) TValue() string {
	if t == 0 {
		return "0"
	}
	s := strconv.FormatUint(uint64(t)|maxThreshold, 16)[1:] // 14 digits, leading zeros kept
	return strings.TrimRight(s, "0")
}

// TraceRandomness is the randomness OpenTelemetry samplers take from a
// trace ID: its last 7 bytes (ConnIDs' SHA-256 makes them uniform).
func TraceRandomness(id [16]byte) uint64 {
	return binary.BigEndian.Uint64(id[8:]) & (maxThreshold - 1)
}

// FlowRandomness is a flow's randomness: a hash of its protocol and two
// endpoints in a fixed order, the same for both directions of the flow and
// on every node that sees its packets untranslated.
func FlowRandomness(f *Flow) uint64 {
	a, b := f.Src, f.Dst
	if b.Addr().Less(a.Addr()) || (a.Addr() == b.Addr() && b.Port() < a.Port()) {
		a, b = b, a
	}
	h := uint64(f.Protocol)
	for _, ap := range [2]netip.AddrPort{a, b} {
		addr := ap.Addr().As16()
		h = mix64(h ^ binary.BigEndian.Uint64(addr[:8]))
		h = mix64(h ^ binary.BigEndian.Uint64(addr[8:]) ^ uint64(ap.Port())<<48)
	}
	return h & (maxThreshold - 1)
}

// mix64 is the splitmix64 finalizer: every input bit moves every output
// bit.
func mix64(h uint64) uint64 {
	h += 0x9e3779b97f4a7c15
	h = (h ^ h>>30) * 0xbf58476d1ce4e5b9
	h = (h ^ h>>27) * 0x94d049bb133111eb
	return h ^ h>>31
}

// KeepRules keep a connection's span whatever the ratio (at threshold 0,
// adjusted count 1); zero values are off. A rule keeps the side that
// matched it: the other side of the connection is kept by its own view
// (retransmits are the sender's, RTT and duration each side's own).
type KeepRules struct {
	Failed         bool          // refused, timed out, unreachable, not established
	Reset          bool          // ended by a reset, sent or received
	MinRTT         time.Duration // smoothed RTT at least this
	MinRetransmits uint32        // at least this many retransmitted segments
	MinDuration    time.Duration // open at least this long
}

// Matches reports whether c is kept by a rule.
func (k *KeepRules) Matches(c *Conn) bool {
	switch {
	case k.Failed && c.Result.Failed() && c.Result != Reset:
		return true
	case k.Reset && (c.Result == Reset || c.ResetsReceived > 0 || c.ResetsSent > 0):
		return true
	case k.MinRTT > 0 && c.SRTT >= k.MinRTT:
		return true
	case k.MinRetransmits > 0 && c.Retransmits >= k.MinRetransmits:
		return true
	case k.MinDuration > 0 && !c.Start.IsZero() && c.End.Sub(c.Start) >= k.MinDuration:
		return true
	}
	return false
}

// SpanSampling decides which connection spans are emitted: by Threshold on
// the trace ID (both sides of a connection share it: both decide alike,
// with no coordination), and always those Keep matches. The zero value
// keeps everything and marks nothing.
type SpanSampling struct {
	Threshold Threshold
	Keep      KeepRules
}

// Enabled reports whether spans are sampled (and carry their threshold).
func (s *SpanSampling) Enabled() bool { return s.Threshold != 0 }

// Decide reports whether c's span is kept and the threshold it was kept at
// (0 for a keep rule's).
func (s *SpanSampling) Decide(c *Conn) (keep bool, th Threshold) {
	if s.Threshold == 0 || s.Keep.Matches(c) {
		return true, 0
	}
	return s.Threshold.Keeps(TraceRandomness(c.TraceID)), s.Threshold
}
