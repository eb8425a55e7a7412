package ebpfnetreceiver

import (
	"os"

	"go.opentelemetry.io/collector/receiver"

	"github.com/ebpfnet/ebpfnet/internal/convert"
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

func flowAttrs[K ~string](keys []K) convert.FlowAttrs {
	var a convert.FlowAttrs
	for _, k := range keys {
		a |= convert.FlowAttrsByName[string(k)]
	}
	return a
}

func convertOptions(cfg *Config, set receiver.Settings, peers convert.PeerResolver) convert.Options {
	m := cfg.Metrics
	opts := convert.Options{
		Peers:        peers,
		NodeName:     nodeName(cfg),
		ScopeName:    metadata.ScopeName,
		ScopeVersion: set.BuildInfo.Version,
		Resource: convert.ResourceOptions{
			K8sNodeName: cfg.ResourceAttributes.K8sNodeName.Enabled,
			K8sPodIP:    cfg.ResourceAttributes.K8sPodIP.Enabled,
			K8sPodUID:   cfg.ResourceAttributes.K8sPodUID.Enabled,
			ContainerID: cfg.ResourceAttributes.ContainerID.Enabled,
		},
		FlowIO:             convert.MetricOptions{Enabled: m.EbpfnetFlowIo.Enabled, Attrs: flowAttrs(m.EbpfnetFlowIo.EnabledAttributes)},
		FlowPackets:        convert.MetricOptions{Enabled: m.EbpfnetFlowPackets.Enabled, Attrs: flowAttrs(m.EbpfnetFlowPackets.EnabledAttributes)},
		Uncounted:          m.EbpfnetPacketsUncounted.Enabled,
		ConnsUnreported:    m.EbpfnetConnectionsUnreported.Enabled,
		StateChangesMissed: m.EbpfnetTCPStateChangesMissed.Enabled,
		TableFlows:         m.EbpfnetFlowTableFlows.Enabled,
		TableCapacity:      m.EbpfnetFlowTableCapacity.Enabled,
		SeriesEvicted:      m.EbpfnetSeriesEvicted.Enabled,
		FlowEvents:         cfg.Events.EbpfnetFlow.Enabled,
		SeriesIdleTimeout:  cfg.SeriesIdleTimeout,
		MaxSeries:          cfg.MaxSeries,
	}
	if cfg.Temporality == "delta" {
		opts.Temporality = convert.Delta
	}
	return opts
}
