package chunk

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

func TestErrorStops(t *testing.T) {
	boom := errors.New("boom")
	calls := 0
	err := Metrics(testMetrics(), 4, func(pmetric.Metrics) error { calls++; return boom })
	require.ErrorIs(t, err, boom)
	require.Equal(t, 1, calls)
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
