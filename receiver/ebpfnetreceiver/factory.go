package ebpfnetreceiver

import (
	"context"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver"

	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver/internal/metadata"
)

// NewFactory returns the factory of the ebpfnet receiver.
func NewFactory() receiver.Factory {
	f := &factory{pipelines: newSharedComponents[*Config, *pipeline]()}
	return receiver.NewFactory(
		metadata.Type,
		createDefaultConfig,
		receiver.WithMetrics(f.createMetrics, metadata.MetricsStability),
		receiver.WithLogs(f.createLogs, metadata.LogsStability),
		receiver.WithTraces(f.createTraces, metadata.TracesStability),
	)
}

// defaultIgnoredDrops are the drop reasons of normal teardown, not
// reported by default: what idle and busy nodes produce without anything
// being wrong (measured: README "Drops").
var defaultIgnoredDrops = []string{"NOT_SPECIFIED", "QUEUE_PURGE", "TCP_OLD_DATA", "TCP_OLD_SEQUENCE"}

func createDefaultConfig() component.Config {
	return &Config{
		Interval:          10 * time.Second,
		MaxFlows:          131072,
		MaxConnections:    kernel.DefaultMaxConns,
		RingBufferSize:    kernel.DefaultRingSize,
		MaxRecordsPerCall: 1024,
		Interfaces: InterfacesConfig{
			Include: defaultInclude,
			Exclude: defaultExclude,
			Uplink:  defaultUplink,
		},
		AttachMode:        "auto",
		TCPSockets:        "all",
		Temporality:       "cumulative",
		SeriesIdleTimeout: 5 * time.Minute,
		MaxSeries:         100000,
		Drops:             DropsConfig{Enabled: true, IgnoreReasons: defaultIgnoredDrops, MaxEntries: kernel.DefaultMaxDrops},
		DNS:               DNSConfig{Enabled: true, Ports: []int{53}, Timeout: 5 * time.Second, MaxPending: kernel.DefaultMaxDNS},
		K8s:               K8sConfig{AuthType: "serviceAccount", NetworkPolicies: true},
		Sampling: SamplingConfig{Spans: SpanSamplingConfig{Ratio: 1, KeepAlways: KeepAlwaysConfig{Failed: true, Reset: true}},
			FlowLogs: FlowLogSamplingConfig{Ratio: 1}},
		MetricsBuilderConfig: metadata.NewDefaultMetricsBuilderConfig(),
		Events:               metadata.DefaultEventsConfig(),
	}
}

// factory keeps one kernel pipeline per receiver config, shared by every
// signal pipeline that names the receiver.
type factory struct {
	pipelines *sharedComponents[*Config, *pipeline]
}

func (f *factory) pipeline(cfg component.Config, set receiver.Settings) *shared[*pipeline] {
	c := cfg.(*Config)
	return f.pipelines.get(c, func() *pipeline { return newPipeline(c, set, loadDatapath) })
}

func (f *factory) createMetrics(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Metrics) (receiver.Metrics, error) {
	s := f.pipeline(cfg, set)
	s.c.setMetrics(next)
	return s.handle(), nil
}

func (f *factory) createLogs(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Logs) (receiver.Logs, error) {
	s := f.pipeline(cfg, set)
	s.c.setLogs(next)
	return s.handle(), nil
}

func (f *factory) createTraces(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Traces) (receiver.Traces, error) {
	s := f.pipeline(cfg, set)
	s.c.setTraces(next)
	return s.handle(), nil
}
