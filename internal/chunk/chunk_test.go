package chunk

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// sizes are resources × scopes × records of the test data: runs that fit a
// chunk, runs that span chunks, a resource with more records than max.
var sizes = [][]int{{3, 0, 7}, {1}, {25}, {2, 2}}

func testLogs() plog.Logs {
	ld := plog.NewLogs()
	for r, scopes := range sizes {
		rl := ld.ResourceLogs().AppendEmpty()
		rl.Resource().Attributes().PutInt("r", int64(r))
		rl.SetSchemaUrl("https://example.com/r")
		for s, n := range scopes {
			sl := rl.ScopeLogs().AppendEmpty()
			sl.Scope().SetName(fmt.Sprint("scope", s))
			for i := 0; i < n; i++ {
				sl.LogRecords().AppendEmpty().Body().SetStr(fmt.Sprint(r, s, i))
			}
		}
	}
	return ld
}

// logLines flattens logs into one line per record, with its resource and
// scope: what a backend sees, whatever the grouping.
func logLines(ld plog.Logs) []string {
	var out []string
	for i := 0; i < ld.ResourceLogs().Len(); i++ {
		rl := ld.ResourceLogs().At(i)
		for j := 0; j < rl.ScopeLogs().Len(); j++ {
			sl := rl.ScopeLogs().At(j)
			for k := 0; k < sl.LogRecords().Len(); k++ {
				out = append(out, fmt.Sprint(rl.Resource().Attributes().AsRaw(), rl.SchemaUrl(), sl.Scope().Name(),
					sl.LogRecords().At(k).Body().Str()))
			}
		}
	}
	return out
}

func TestLogsChunks(t *testing.T) {
	for _, max := range []int{0, 1, 4, 10, 36, 37, 100} {
		want := logLines(testLogs())
		var got []string
		calls := 0
		require.NoError(t, Logs(testLogs(), max, func(ld plog.Logs) error {
			calls++
			if max > 0 {
				require.LessOrEqual(t, ld.LogRecordCount(), max)
			}
			require.NotZero(t, ld.LogRecordCount())
			got = append(got, logLines(ld)...)
			return nil
		}))
		require.Equal(t, want, got, "max %d", max)
		if max > 0 {
			require.Equal(t, (len(want)+max-1)/max, calls, "max %d: full chunks", max)
		}
	}
}

func TestErrorStops(t *testing.T) {
	boom := errors.New("boom")
	calls := 0
	err := Logs(testLogs(), 4, func(plog.Logs) error { calls++; return boom })
	require.ErrorIs(t, err, boom)
	require.Equal(t, 1, calls)
}

func TestTracesChunks(t *testing.T) {
	build := func() ptrace.Traces {
		td := ptrace.NewTraces()
		for r, scopes := range sizes {
			rs := td.ResourceSpans().AppendEmpty()
			rs.Resource().Attributes().PutInt("r", int64(r))
			for s, n := range scopes {
				ss := rs.ScopeSpans().AppendEmpty()
				ss.Scope().SetName(fmt.Sprint("scope", s))
				for i := 0; i < n; i++ {
					ss.Spans().AppendEmpty().SetName(fmt.Sprint(r, s, i))
				}
			}
		}
		return td
	}
	lines := func(td ptrace.Traces) (out []string) {
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			rs := td.ResourceSpans().At(i)
			for j := 0; j < rs.ScopeSpans().Len(); j++ {
				ss := rs.ScopeSpans().At(j)
				for k := 0; k < ss.Spans().Len(); k++ {
					out = append(out, fmt.Sprint(rs.Resource().Attributes().AsRaw(), ss.Scope().Name(), ss.Spans().At(k).Name()))
				}
			}
		}
		return out
	}
	for _, max := range []int{1, 6, 40} {
		var got []string
		require.NoError(t, Traces(build(), max, func(td ptrace.Traces) error {
			require.LessOrEqual(t, td.SpanCount(), max)
			got = append(got, lines(td)...)
			return nil
		}))
		require.Equal(t, lines(build()), got, "max %d", max)
	}
}

func testMetrics() pmetric.Metrics {
	md := pmetric.NewMetrics()
	for r := 0; r < 3; r++ {
		rm := md.ResourceMetrics().AppendEmpty()
		rm.Resource().Attributes().PutInt("r", int64(r))
		sm := rm.ScopeMetrics().AppendEmpty()
		sm.Scope().SetName("s")
		sum := sm.Metrics().AppendEmpty()
		sum.SetName("bytes")
		sum.SetUnit("By")
		s := sum.SetEmptySum()
		s.SetIsMonotonic(true)
		s.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
		for i := 0; i < 5+r*4; i++ {
			s.DataPoints().AppendEmpty().SetIntValue(int64(i))
		}
		g := sm.Metrics().AppendEmpty()
		g.SetName("series")
		g.SetEmptyGauge().DataPoints().AppendEmpty().SetDoubleValue(float64(r))
		h := sm.Metrics().AppendEmpty()
		h.SetName("rtt")
		hs := h.SetEmptyHistogram()
		hs.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
		for i := 0; i < 3; i++ {
			hs.DataPoints().AppendEmpty().SetCount(uint64(i))
		}
		sm.Metrics().AppendEmpty().SetName("summary")
		sm.Metrics().At(3).SetEmptySummary().DataPoints().AppendEmpty().SetCount(9)
		e := sm.Metrics().AppendEmpty()
		e.SetName("exp")
		e.SetEmptyExponentialHistogram().DataPoints().AppendEmpty().SetScale(3)
	}
	return md
}

// metricLines flattens metrics into one line per data point, with
// everything that describes it.
func metricLines(md pmetric.Metrics) (out []string) {
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		for j := 0; j < rm.ScopeMetrics().Len(); j++ {
			sm := rm.ScopeMetrics().At(j)
			for k := 0; k < sm.Metrics().Len(); k++ {
				m := sm.Metrics().At(k)
				head := fmt.Sprint(rm.Resource().Attributes().AsRaw(), sm.Scope().Name(), m.Name(), m.Unit(), m.Type())
				switch m.Type() {
				case pmetric.MetricTypeSum:
					for p := 0; p < m.Sum().DataPoints().Len(); p++ {
						out = append(out, fmt.Sprint(head, m.Sum().IsMonotonic(), m.Sum().AggregationTemporality(),
							m.Sum().DataPoints().At(p).IntValue()))
					}
				case pmetric.MetricTypeGauge:
					out = append(out, fmt.Sprint(head, m.Gauge().DataPoints().At(0).DoubleValue()))
				case pmetric.MetricTypeHistogram:
					for p := 0; p < m.Histogram().DataPoints().Len(); p++ {
						out = append(out, fmt.Sprint(head, m.Histogram().AggregationTemporality(), m.Histogram().DataPoints().At(p).Count()))
					}
				case pmetric.MetricTypeSummary:
					out = append(out, fmt.Sprint(head, m.Summary().DataPoints().At(0).Count()))
				case pmetric.MetricTypeExponentialHistogram:
					out = append(out, fmt.Sprint(head, m.ExponentialHistogram().DataPoints().At(0).Scale()))
				}
			}
		}
	}
	return out
}

func TestMetricsChunks(t *testing.T) {
	total := testMetrics().DataPointCount()
	for _, max := range []int{1, 2, 7, 11, total - 1, total} {
		var got []string
		calls := 0
		require.NoError(t, Metrics(testMetrics(), max, func(md pmetric.Metrics) error {
			calls++
			require.LessOrEqual(t, md.DataPointCount(), max)
			got = append(got, metricLines(md)...)
			return nil
		}))
		require.Equal(t, metricLines(testMetrics()), got, "max %d", max)
		require.Equal(t, (total+max-1)/max, calls, "max %d: full chunks", max)
	}
}
