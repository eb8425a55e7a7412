package convert

import (
	"cmp"
	"net/netip"
	"slices"
	"sort"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// Connection metric attributes.
const (
	AttrTCPRole        = "ebpfnet.tcp.role"
	AttrTCPCloseReason = AttrTCPResult
)

const (
	cmOpened uint8 = iota
	cmClosed
	cmRetrans
	cmResets
	cmResetsSent
	cmDuration
	cmRTT
)

// connKey is one connection metric series: peer level, no ports.
type connKey struct {
	metric uint8
	local  netip.Addr // invalid: the node
	role   flow.Role
	reason flow.Result // closed metric only
	peer   netip.Addr
}

type connSeries struct {
	start, last time.Time
	value       uint64
	sum         float64  // histograms
	buckets     []uint64 // histograms
	exTrace     [16]byte // exemplar: the latest connection that fell in the series
	exSpan      [8]byte
	exValue     float64
	exTime      time.Time
}

// liveRef is what the converter remembers of an open connection.
type liveRef struct {
	retrans uint32
	seen    bool
}

// ConnMetrics keeps the cumulative state of the TCP connection metrics.
type ConnMetrics struct {
	opts   Options
	prev   time.Time
	series map[connKey]*connSeries
	open   map[uint64]*liveRef // by socket cookie
}

// NewConnMetrics returns a converter; start is when counting began.
func NewConnMetrics(opts Options, start time.Time) *ConnMetrics {
	return &ConnMetrics{opts: opts, prev: start, series: make(map[connKey]*connSeries), open: make(map[uint64]*liveRef)}
}

func (c *ConnMetrics) get(k connKey, now time.Time, hist []float64) *connSeries {
	s := c.series[k]
	if s == nil {
		s = &connSeries{start: c.prev}
		if hist != nil {
			s.buckets = make([]uint64, len(hist)+1)
		}
		c.series[k] = s
	}
	s.last = now
	return s
}

func connLocal(onNode bool, a netip.Addr) netip.Addr {
	if onNode {
		return netip.Addr{}
	}
	return a
}

// Add records one interval: the connections open now and those closed in it.
func (c *ConnMetrics) Add(now time.Time, live []flow.LiveConn, closed []flow.Conn) {
	for i := range live {
		l := &live[i]
		if !l.Established {
			continue
		}
		ref := c.open[l.Cookie]
		if ref == nil {
			ref = &liveRef{}
			c.open[l.Cookie] = ref
			c.get(connKey{metric: cmOpened, local: connLocal(l.OnNode, l.Local.Addr()), role: l.Role, peer: l.Remote.Addr()}, now, nil).value++
			ref.seen = true
		}
		if d := l.Retransmits - ref.retrans; l.Retransmits > ref.retrans {
			c.get(connKey{metric: cmRetrans, local: connLocal(l.OnNode, l.Local.Addr()), role: l.Role, peer: l.Remote.Addr()}, now, nil).value += uint64(d)
			ref.retrans = l.Retransmits
		}
	}
	for i := range closed {
		cn := &closed[i]
		local, peer := connLocal(cn.OnNode, cn.Local.Addr()), cn.Remote.Addr()
		ref := c.open[cn.Cookie]
		delete(c.open, cn.Cookie)
		if !cn.Established.IsZero() && ref == nil {
			c.get(connKey{metric: cmOpened, local: local, role: cn.Role, peer: peer}, now, nil).value++
		}
		c.get(connKey{metric: cmClosed, local: local, role: cn.Role, reason: cn.Result, peer: peer}, now, nil).value++
		reported := uint32(0)
		if ref != nil {
			reported = ref.retrans
		}
		if cn.Retransmits > reported {
			c.get(connKey{metric: cmRetrans, local: local, role: cn.Role, peer: peer}, now, nil).value += uint64(cn.Retransmits - reported)
		}
		if cn.ResetsSent > 0 {
			c.get(connKey{metric: cmResetsSent, local: local, role: cn.Role, peer: peer}, now, nil).value += uint64(cn.ResetsSent)
		}
		if cn.ResetsReceived > 0 {
			c.get(connKey{metric: cmResets, local: local, role: cn.Role, peer: peer}, now, nil).value += uint64(cn.ResetsReceived)
		}
		c.observe(connKey{metric: cmDuration, local: local, role: cn.Role, peer: peer}, now, c.opts.Schema[ConnDuration].Bounds, cn.End.Sub(cn.Start).Seconds(), cn)
		if cn.SRTT > 0 {
			c.observe(connKey{metric: cmRTT, local: local, role: cn.Role, peer: peer}, now, c.opts.Schema[ConnRTT].Bounds, cn.SRTT.Seconds(), cn)
		}
	}
	// Forget open connections we have not seen for long (their close was
	// lost): bounded state.
	if len(c.open) > 4*len(live)+1024 {
		alive := make(map[uint64]bool, len(live))
		for i := range live {
			alive[live[i].Cookie] = true
		}
		for k := range c.open {
			if !alive[k] {
				delete(c.open, k)
			}
		}
	}
}

func (c *ConnMetrics) observe(k connKey, now time.Time, bounds []float64, v float64, cn *flow.Conn) {
	s := c.get(k, now, bounds)
	s.value++
	s.sum += v
	s.buckets[sort.SearchFloat64s(bounds, v)]++
	s.exTrace, s.exSpan, s.exValue, s.exTime = cn.TraceID, cn.SpanID, v, cn.End
}

// AppendTo emits the cumulative connection metrics into md, one
// ResourceMetrics per local endpoint (appended after existing ones), and
// drops idle series like the flow metrics do.
func (c *ConnMetrics) AppendTo(md pmetric.Metrics, now time.Time) {
	if c.opts.SeriesIdleTimeout > 0 {
		for k, s := range c.series {
			if now.Sub(s.last) > c.opts.SeriesIdleTimeout {
				delete(c.series, k)
			}
		}
	}
	keys := make([]connKey, 0, len(c.series))
	for k := range c.series {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b connKey) int {
		if x := a.local.Compare(b.local); x != 0 {
			return x
		}
		if x := cmp.Compare(a.metric, b.metric); x != 0 {
			return x
		}
		if x := cmp.Compare(a.role, b.role); x != 0 {
			return x
		}
		if x := cmp.Compare(a.reason, b.reason); x != 0 {
			return x
		}
		return a.peer.Compare(b.peer)
	})
	ts := pcommon.NewTimestampFromTime(now)
	type res struct {
		sm      pmetric.ScopeMetrics
		metrics map[uint8]pmetric.Metric
	}
	byLocal := map[netip.Addr]*res{}
	for _, k := range keys {
		s := c.series[k]
		r := byLocal[k.local]
		if r == nil {
			rm := md.ResourceMetrics().AppendEmpty()
			putResource(rm.Resource().Attributes(), c.opts, k.local)
			sm := rm.ScopeMetrics().AppendEmpty()
			sm.Scope().SetName(c.opts.ScopeName)
			sm.Scope().SetVersion(c.opts.ScopeVersion)
			r = &res{sm: sm, metrics: map[uint8]pmetric.Metric{}}
			byLocal[k.local] = r
		}
		m, ok := r.metrics[k.metric]
		if !ok {
			m = r.sm.Metrics().AppendEmpty()
			initConnMetric(m, k.metric, c.opts.Schema)
			r.metrics[k.metric] = m
		}
		var attrs pcommon.Map
		switch k.metric {
		case cmDuration, cmRTT:
			dp := m.Histogram().DataPoints().AppendEmpty()
			dp.SetStartTimestamp(pcommon.NewTimestampFromTime(s.start))
			dp.SetTimestamp(ts)
			dp.SetCount(s.value)
			dp.SetSum(s.sum)
			bounds := c.opts.Schema[ConnDuration].Bounds
			if k.metric == cmRTT {
				bounds = c.opts.Schema[ConnRTT].Bounds
			}
			dp.ExplicitBounds().FromRaw(bounds)
			dp.BucketCounts().FromRaw(s.buckets)
			if s.exTrace != [16]byte{} {
				ex := dp.Exemplars().AppendEmpty()
				ex.SetDoubleValue(s.exValue)
				ex.SetTimestamp(pcommon.NewTimestampFromTime(s.exTime))
				ex.SetTraceID(s.exTrace)
				ex.SetSpanID(s.exSpan)
			}
			attrs = dp.Attributes()
		default:
			dp := m.Sum().DataPoints().AppendEmpty()
			dp.SetStartTimestamp(pcommon.NewTimestampFromTime(s.start))
			dp.SetTimestamp(ts)
			dp.SetIntValue(int64(s.value))
			attrs = dp.Attributes()
		}
		role := "client"
		if k.role == flow.Server {
			role = "server"
		}
		attrs.PutStr(AttrTCPRole, role)
		if k.metric == cmClosed {
			attrs.PutStr(AttrTCPCloseReason, k.reason.String())
		}
		attrs.PutStr(AttrPeerAddress, k.peer.String())
		putPeer(attrs, c.opts.Peers, k.peer)
	}
	c.prev = now
}

// connMetricIDs maps the connection series' metrics to the schema's.
var connMetricIDs = [...]Metric{cmOpened: ConnsOpened, cmClosed: ConnsClosed, cmRetrans: Retransmits,
	cmResets: ResetsReceived, cmResetsSent: ResetsSent, cmDuration: ConnDuration, cmRTT: ConnRTT}

func initConnMetric(m pmetric.Metric, metric uint8, schema *Schema) {
	schema.define(m, connMetricIDs[metric])
	if metric == cmDuration || metric == cmRTT {
		m.SetEmptyHistogram().SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
		return
	}
	s := m.SetEmptySum()
	s.SetIsMonotonic(true)
	s.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
}
