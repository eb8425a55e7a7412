package convert

import (
	"cmp"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// seriesKey identifies one data point series of any metric. The fields of
// attributes a metric does not carry, or that are not selected, stay zero,
// so points that differ only in them share a series.
type seriesKey struct {
	metric    Metric
	local     netip.Addr // the resource: a pod's address; invalid: the node
	pod       string     // with local invalid: a hostNetwork pod's UID (a socket's cgroup named it)
	direction flow.Direction
	proto     uint8
	v6        bool
	ports     bool // peerPort and localPort are transport ports
	peerPort  uint16
	localPort uint16
	peer      netip.Addr
	service   netip.Addr // the Service a DNS client asked when the node's NAT sent it to peer (a resolver pod)
	iface     string
	role      flow.Role
	result    flow.Result
	reason    flow.Reason
	cause     string // the kernel's drop reason (drop metrics), reset reason (resets sent), error.type (DNS)
	qtype     uint16 // DNS question type
	policy    flow.PolicyResult
	egress    bool // the policy direction
	finding   flow.PolicyFinding
}

// series is one series' state: a sum or gauge value, or a histogram.
type series struct {
	value       uint64 // sums and gauges; a histogram's count
	start, last time.Time
	hist        *histogram
}

type histogram struct {
	sum     float64
	buckets []uint64
	// Exemplar: the latest connection that fell in the series.
	exTrace [16]byte
	exSpan  [8]byte
	exValue float64
	exTime  time.Time
}

// store holds every series of every metric the converters emit, with one
// set of rules: cumulative series keep their value and start time (the
// interval they first appeared in) until they are idle longer than
// idleTimeout or exceed maxSeries (least recently updated first), each
// eviction counted; delta series start empty every interval.
type store struct {
	temporality Temporality
	idleTimeout time.Duration
	maxSeries   int
	series      map[seriesKey]*series
	evicted     uint64
	prev        time.Time // end of the previous interval: the start of a new series
}

func newStore(opts Options, start time.Time) *store {
	return &store{temporality: opts.Temporality, idleTimeout: opts.SeriesIdleTimeout, maxSeries: opts.MaxSeries,
		series: make(map[seriesKey]*series), prev: start}
}

func (s *store) get(k seriesKey, now time.Time) *series {
	v := s.series[k]
	if v == nil {
		v = &series{start: s.prev}
		s.series[k] = v
	}
	v.last = now
	return v
}

// add adds n to a sum.
func (s *store) add(k seriesKey, n uint64, now time.Time) { s.get(k, now).value += n }

// set sets a gauge, or a sum whose total the kernel keeps, with its start.
func (s *store) set(k seriesKey, v uint64, now, start time.Time) {
	x := s.get(k, now)
	x.value, x.start = v, start
}

// exemplar is what an observation links to: a span (a connection's) or a
// log record (a DNS lookup's), and when it happened.
type exemplar struct {
	trace [16]byte
	span  [8]byte
	at    time.Time
}

// observe adds one observation v, with its exemplar, to a histogram.
func (s *store) observe(k seriesKey, bounds []float64, v float64, now time.Time, ex exemplar) {
	x := s.get(k, now)
	if x.hist == nil {
		x.hist = &histogram{buckets: make([]uint64, len(bounds)+1)}
	}
	h := x.hist
	x.value++
	h.sum += v
	h.buckets[sort.SearchFloat64s(bounds, v)]++
	h.exTrace, h.exSpan, h.exValue, h.exTime = ex.trace, ex.span, v, ex.at
}

// evict applies the bounds to cumulative series before an emit.
func (s *store) evict(now time.Time) {
	if s.temporality == Delta {
		return
	}
	if s.idleTimeout > 0 {
		for k, v := range s.series {
			if now.Sub(v.last) > s.idleTimeout {
				delete(s.series, k)
				s.evicted++
			}
		}
	}
	if s.maxSeries <= 0 || len(s.series) <= s.maxSeries {
		return
	}
	keys := s.keys()
	slices.SortFunc(keys, func(a, b seriesKey) int { return s.series[a].last.Compare(s.series[b].last) })
	for _, k := range keys[:len(keys)-s.maxSeries] {
		delete(s.series, k)
		s.evicted++
	}
}

// endInterval starts the next interval: delta series start again.
func (s *store) endInterval(now time.Time) {
	if s.temporality == Delta {
		clear(s.series)
	}
	s.prev = now
}

func (s *store) keys() []seriesKey {
	keys := make([]seriesKey, 0, len(s.series))
	for k := range s.series {
		keys = append(keys, k)
	}
	return keys
}

// sorted returns the keys for a stable output: the node first, then by
// address, metric and attributes.
func (s *store) sorted() []seriesKey {
	keys := s.keys()
	slices.SortFunc(keys, compareSeries)
	return keys
}

func compareSeries(a, b seriesKey) int {
	return cmp.Or(
		cmp.Compare(boolInt(a.local.IsValid()), boolInt(b.local.IsValid())),
		a.local.Compare(b.local),
		cmp.Compare(a.pod, b.pod),
		cmp.Compare(a.metric, b.metric),
		cmp.Compare(a.direction, b.direction),
		cmp.Compare(a.role, b.role),
		cmp.Compare(a.result, b.result),
		cmp.Compare(a.reason, b.reason),
		cmp.Compare(a.cause, b.cause),
		cmp.Compare(a.qtype, b.qtype),
		cmp.Compare(a.policy, b.policy),
		cmp.Compare(boolInt(a.egress), boolInt(b.egress)),
		cmp.Compare(a.finding, b.finding),
		a.peer.Compare(b.peer),
		cmp.Compare(a.proto, b.proto),
		cmp.Compare(a.peerPort, b.peerPort),
		cmp.Compare(a.localPort, b.localPort),
		cmp.Compare(a.iface, b.iface),
	)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
