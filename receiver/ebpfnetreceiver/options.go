package ebpfnetreceiver

import (
	"os"

	"go.opentelemetry.io/collector/receiver"

	"github.com/ebpfnet/ebpfnet/internal/convert"
	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver/internal/metadata"
)

// nodeName resolves k8s.node.name: config, then K8S_NODE_NAME, then host name.
func nodeName(cfg *Config) string {
	if cfg.NodeName != "" {
		return cfg.NodeName
	}
	if n := os.Getenv("K8S_NODE_NAME"); n != "" {
		return n
	}
	n, _ := os.Hostname()
	return n
}

// metric is a metric's config: enabled, and the attributes selected.
func metric[K ~string](enabled bool, keys []K) convert.MetricOptions {
	o := convert.MetricOptions{Enabled: enabled}
	for _, k := range keys {
		o.Attrs |= convert.AttrsByName[string(k)]
	}
	return o
}

func convertOptions(cfg *Config, set receiver.Settings, peers convert.PeerResolver) convert.Options {
	m := cfg.Metrics
	opts := convert.DefaultOptions()
	opts.Peers = peers
	opts.NodeName = nodeName(cfg)
	opts.ScopeName = metadata.ScopeName
	opts.ScopeVersion = set.BuildInfo.Version
	opts.Resource = convert.ResourceOptions{
		K8sNodeName:       cfg.ResourceAttributes.K8sNodeName.Enabled,
		K8sPodIP:          cfg.ResourceAttributes.K8sPodIP.Enabled,
		K8sPodUID:         cfg.ResourceAttributes.K8sPodUID.Enabled,
		ContainerID:       cfg.ResourceAttributes.ContainerID.Enabled,
		ServiceName:       cfg.ResourceAttributes.ServiceName.Enabled,
		ServiceNamespace:  cfg.ResourceAttributes.ServiceNamespace.Enabled,
		ServiceInstanceID: cfg.ResourceAttributes.ServiceInstanceID.Enabled,
	}
	// The histograms have no generated config (histograms.yaml): their
	// defaults stand.
	for id, o := range map[convert.Metric]convert.MetricOptions{
		convert.FlowIO:             metric(m.EbpfnetFlowIo.Enabled, m.EbpfnetFlowIo.EnabledAttributes),
		convert.FlowPackets:        metric(m.EbpfnetFlowPackets.Enabled, m.EbpfnetFlowPackets.EnabledAttributes),
		convert.ConnsOpened:        metric(m.EbpfnetTCPConnectionsOpened.Enabled, m.EbpfnetTCPConnectionsOpened.EnabledAttributes),
		convert.ConnsClosed:        metric(m.EbpfnetTCPConnectionsClosed.Enabled, m.EbpfnetTCPConnectionsClosed.EnabledAttributes),
		convert.Retransmits:        metric(m.EbpfnetTCPRetransmits.Enabled, m.EbpfnetTCPRetransmits.EnabledAttributes),
		convert.ResetsReceived:     metric(m.EbpfnetTCPResetsReceived.Enabled, m.EbpfnetTCPResetsReceived.EnabledAttributes),
		convert.ResetsSent:         metric(m.EbpfnetTCPResetsSent.Enabled, m.EbpfnetTCPResetsSent.EnabledAttributes),
		convert.Uncounted:          metric[string](m.EbpfnetPacketsUncounted.Enabled, nil),
		convert.ConnsUnreported:    metric[string](m.EbpfnetConnectionsUnreported.Enabled, nil),
		convert.StateChangesMissed: metric[string](m.EbpfnetTCPStateChangesMissed.Enabled, nil),
		convert.TableFlows:         metric[string](m.EbpfnetFlowTableFlows.Enabled, nil),
		convert.TableCapacity:      metric[string](m.EbpfnetFlowTableCapacity.Enabled, nil),
		convert.SeriesEvicted:      metric[string](m.EbpfnetSeriesEvicted.Enabled, nil),
		convert.DropPackets:        metric(m.EbpfnetPacketsDropped.Enabled, m.EbpfnetPacketsDropped.EnabledAttributes),
		convert.DropBytes:          metric(m.EbpfnetBytesDropped.Enabled, m.EbpfnetBytesDropped.EnabledAttributes),
		convert.PolicyFlows:        metric(m.EbpfnetPolicyFlows.Enabled, m.EbpfnetPolicyFlows.EnabledAttributes),
		convert.PolicyIO:           metric(m.EbpfnetPolicyIo.Enabled, m.EbpfnetPolicyIo.EnabledAttributes),
	} {
		opts.Metrics[id] = o
	}
	opts.FlowEvents = cfg.Events.EbpfnetFlow.Enabled
	opts.DropEvents = cfg.Events.EbpfnetDrop.Enabled
	opts.DNSEvents = cfg.Events.EbpfnetDNSLookup.Enabled
	opts.DNSTimeout = cfg.DNS.Timeout
	opts.SeriesIdleTimeout = cfg.SeriesIdleTimeout
	opts.MaxSeries = cfg.MaxSeries
	opts.SpanSampling = cfg.Sampling.spans()
	opts.FlowLogSampling = flow.RatioThreshold(cfg.Sampling.FlowLogs.Ratio)
	if cfg.Temporality == "delta" {
		opts.Temporality = convert.Delta
	}
	return opts
}
