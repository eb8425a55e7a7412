// Package chunk cuts OTLP metrics into requests of at most a given number of
// data points, so that no request exceeds what the next hop accepts: a
// stock OTLP receiver takes 4 MiB messages. (Flow records and spans need no
// cutting: the receiver converts them a request's worth at a time.) Points
// are moved, not copied; each chunk carries a copy of its points' resource,
// scope and metric description.
package chunk

import (
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// Metrics hands md to send in chunks of at most max data points (max ≤ 0:
// one call); a metric whose points span chunks is described in each. It
// stops at send's first error and returns it; md is emptied.
func Metrics(md pmetric.Metrics, max int, send func(pmetric.Metrics) error) error {
	if max <= 0 || md.DataPointCount() <= max {
		return send(md)
	}
	c := cutter[pmetric.Metrics]{max: max, fresh: pmetric.NewMetrics, send: send}
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		rm := rms.At(i)
		for j := 0; j < rm.ScopeMetrics().Len(); j++ {
			sm := rm.ScopeMetrics().At(j)
			var scope pmetric.MetricSlice // the open chunk's copy of sm
			first := true
			for k := 0; k < sm.Metrics().Len(); k++ {
				m := sm.Metrics().At(k)
				var dst pmetric.Metric
				err := c.cut(pointCount(m), func(opened bool) {
					if opened || first {
						first = false
						out := c.out.ResourceMetrics().AppendEmpty()
						rm.Resource().CopyTo(out.Resource())
						out.SetSchemaUrl(rm.SchemaUrl())
						s := out.ScopeMetrics().AppendEmpty()
						copyScope(sm.Scope(), s.Scope(), sm.SchemaUrl(), s.SetSchemaUrl)
						scope = s.Metrics()
					}
					dst = scope.AppendEmpty()
					describe(m, dst)
				}, func(from, n int) { movePoints(m, dst, from, n) })
				if err != nil {
					return err
				}
			}
		}
	}
	return c.flush()
}

// cutter fills one chunk at a time and sends it when full.
type cutter[T any] struct {
	max   int
	n     int // records in out
	out   T
	open  bool // out was made
	fresh func() T
	send  func(T) error
}

// cut moves count records, in runs that fit the open chunk: begin is called
// before each run (opened: a new chunk was started, so the caller's
// resource and scope must be added to it), move moves one run.
func (c *cutter[T]) cut(count int, begin func(opened bool), move func(from, n int)) error {
	for from := 0; from < count; {
		if c.n == c.max {
			if err := c.flush(); err != nil {
				return err
			}
		}
		opened := !c.open
		if opened {
			c.out, c.open = c.fresh(), true
		}
		begin(opened)
		n := min(c.max-c.n, count-from)
		move(from, n)
		from += n
		c.n += n
	}
	return nil
}

func (c *cutter[T]) flush() error {
	if !c.open || c.n == 0 {
		return nil
	}
	out := c.out
	c.open, c.n = false, 0
	return c.send(out)
}

func copyScope(src, dst pcommon.InstrumentationScope, schemaURL string, setSchemaURL func(string)) {
	src.CopyTo(dst)
	setSchemaURL(schemaURL)
}

// slice is a pdata slice of records.
type slice[T any] interface {
	Len() int
	At(int) T
	AppendEmpty() T
}

type movable[T any] interface{ MoveTo(T) }

func moveRange[S slice[T], T movable[T]](src, dst S, from, n int) {
	for i := from; i < from+n; i++ {
		src.At(i).MoveTo(dst.AppendEmpty())
	}
}

func pointCount(m pmetric.Metric) int {
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		return m.Gauge().DataPoints().Len()
	case pmetric.MetricTypeSum:
		return m.Sum().DataPoints().Len()
	case pmetric.MetricTypeHistogram:
		return m.Histogram().DataPoints().Len()
	case pmetric.MetricTypeExponentialHistogram:
		return m.ExponentialHistogram().DataPoints().Len()
	case pmetric.MetricTypeSummary:
		return m.Summary().DataPoints().Len()
	}
	return 0
}

// describe gives dst m's name, description, unit and kind, with no points.
func describe(m, dst pmetric.Metric) {
	dst.SetName(m.Name())
	dst.SetDescription(m.Description())
	dst.SetUnit(m.Unit())
	m.Metadata().CopyTo(dst.Metadata())
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		dst.SetEmptyGauge()
	case pmetric.MetricTypeSum:
		s := dst.SetEmptySum()
		s.SetAggregationTemporality(m.Sum().AggregationTemporality())
		s.SetIsMonotonic(m.Sum().IsMonotonic())
	case pmetric.MetricTypeHistogram:
		dst.SetEmptyHistogram().SetAggregationTemporality(m.Histogram().AggregationTemporality())
	case pmetric.MetricTypeExponentialHistogram:
		dst.SetEmptyExponentialHistogram().SetAggregationTemporality(m.ExponentialHistogram().AggregationTemporality())
	case pmetric.MetricTypeSummary:
		dst.SetEmptySummary()
	}
}

func movePoints(m, dst pmetric.Metric, from, n int) {
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		moveRange(m.Gauge().DataPoints(), dst.Gauge().DataPoints(), from, n)
	case pmetric.MetricTypeSum:
		moveRange(m.Sum().DataPoints(), dst.Sum().DataPoints(), from, n)
	case pmetric.MetricTypeHistogram:
		moveRange(m.Histogram().DataPoints(), dst.Histogram().DataPoints(), from, n)
	case pmetric.MetricTypeExponentialHistogram:
		moveRange(m.ExponentialHistogram().DataPoints(), dst.ExponentialHistogram().DataPoints(), from, n)
	case pmetric.MetricTypeSummary:
		moveRange(m.Summary().DataPoints(), dst.Summary().DataPoints(), from, n)
	}
}
