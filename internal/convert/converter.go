package convert

import (
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// Converter turns each batch into the signals, keeping the state of the
// metrics. Not safe for concurrent use.
type Converter struct {
	opts    Options
	metrics *Metrics
	conns   *ConnMetrics
}

// NewConverter returns a converter; start is when the kernel began counting.
func NewConverter(opts Options, start time.Time) *Converter {
	return &Converter{opts: opts, metrics: NewMetrics(opts, start), conns: NewConnMetrics(opts, start)}
}

// Metrics returns the metrics of the batch: flows, connections, and the
// receiver's own.
func (c *Converter) Metrics(b *flow.Batch) pmetric.Metrics {
	md := c.metrics.Convert(b)
	c.conns.Add(b.Time, b.Live, b.Closed)
	c.conns.AppendTo(md, b.Time)
	return md
}

// Traces returns one span per closed connection.
func (c *Converter) Traces(conns []flow.Conn) ptrace.Traces { return Traces(c.opts, conns) }

// Logs returns one record per flow.
func (c *Converter) Logs(b *flow.Batch) plog.Logs { return Logs(c.opts, b) }
