package ebpfnetreceiver

import (
	"go/token"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver/internal/metadata"
)

func TestLoadConfig(t *testing.T) {
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)

	custom := createDefaultConfig().(*Config)
	custom.Interval = 5 * time.Second
	custom.MaxFlows = 65536
	custom.AttachMode = "tc"
	custom.TCPSockets = "pods"
	custom.NodeName = "node-a"
	custom.Temporality = "delta"
	custom.SeriesIdleTimeout = time.Minute
	custom.MaxSeries = 5000
	custom.Interfaces = InterfacesConfig{Include: "^(veth|eth0$)", Exclude: "^veth-skip", Uplink: "^eth0$"}
	custom.Metrics.EbpfnetFlowIo.EnabledAttributes = []metadata.EbpfnetFlowIoMetricAttributeKey{
		metadata.EbpfnetFlowIoMetricAttributeKeyNetworkIoDirection,
		metadata.EbpfnetFlowIoMetricAttributeKeyNetworkPeerAddress,
		metadata.EbpfnetFlowIoMetricAttributeKeyNetworkPeerPort,
	}
	custom.Metrics.EbpfnetFlowTableFlows.Enabled = false
	custom.ResourceAttributes.K8sPodIP.Enabled = false
	custom.Events.EbpfnetFlow.Enabled = false
	custom.K8s = K8sConfig{Enabled: true, AuthType: "kubeConfig", Kubeconfig: "/etc/ebpfnet/kubeconfig", NetworkPolicies: true}
	custom.Drops = DropsConfig{Enabled: true, IgnoreReasons: []string{"NOT_SPECIFIED", "TCP_CLOSE"}, MaxEntries: 4096}
	custom.Sampling = SamplingConfig{Spans: SpanSamplingConfig{Ratio: 0.25, KeepAlways: KeepAlwaysConfig{Failed: true, MinRTT: 100 * time.Millisecond,
		MinRetransmits: 4, MinDuration: time.Minute}}, FlowLogs: FlowLogSamplingConfig{Ratio: 0.1}}

	tests := []struct {
		name    string
		want    *Config
		wantErr string // substring of the Validate or Unmarshal error
	}{
		{name: "", want: createDefaultConfig().(*Config)},
		{name: "custom", want: custom},
		{name: "bad_regex", wantErr: "interfaces::include is not a valid regular expression"},
		{name: "zero_interval", wantErr: "interval must be positive, got 0s"},
		{name: "negative_interval", wantErr: "interval must be positive, got -1s"},
		{name: "map_too_small", wantErr: "max_flows must be between 16 and 16777216, got 8"},
		{name: "map_too_large", wantErr: "max_flows must be between 16 and 16777216, got 100000000"},
		{name: "bad_attach_mode", wantErr: `attach_mode must be auto, tcx or tc, got "xdp"`},
		{name: "bad_tcp_sockets", wantErr: `tcp_sockets must be all or pods, got "host"`},
		{name: "bad_temporality", wantErr: `temporality must be cumulative or delta, got "gauge"`},
		{name: "ring_not_power_of_two", wantErr: "ring_buffer_size must be a power of two between 4096 and 1073741824, got 5000"},
		{name: "ring_too_small", wantErr: "ring_buffer_size must be a power of two between 4096 and 1073741824, got 2048"},
		{name: "conns_too_small", wantErr: "max_connections must be between 16 and 16777216, got 1"},
		{name: "bad_drop_reason", wantErr: `drops::ignore_reasons: write "SKB_DROP_REASON_NOT_SPECIFIED" as "NOT_SPECIFIED"`},
		{name: "bad_drop_reason", wantErr: `drops::ignore_reasons: "tcp_close" is not a kernel drop reason name`},
		{name: "drops_too_large", wantErr: "drops::max_entries must be between 16 and 1048576, got 10000000"},
		{name: "bad_dns", wantErr: "dns::ports: at most 4 ports, got 5"},
		{name: "bad_dns", wantErr: "dns::ports: 0 is not a port"},
		{name: "bad_dns", wantErr: "dns::timeout must be positive, got 0s"},
		{name: "bad_sampling", wantErr: "sampling::spans::ratio must be in (0, 1], got 0"},
		{name: "bad_sampling", wantErr: "sampling::flow_logs::ratio must be in (0, 1], got 1.5"},
		{name: "bad_sampling", wantErr: "sampling::spans::keep_always::min_rtt must not be negative, got -1s"},
		{name: "bad_sampling", wantErr: "sampling::spans::keep_always::min_retransmits must not be negative, got -2"},
		// Values past 32 bits: errors with the value given, not small tables.
		{name: "map_past_32_bits", wantErr: "max_flows must be between 16 and 16777216, got 4294967312"},
		{name: "conns_past_32_bits", wantErr: "max_connections must be between 16 and 16777216, got 4294967312"},
		{name: "ring_past_32_bits", wantErr: "ring_buffer_size must be a power of two between 4096 and 1073741824, got 4294971392"},
		{name: "tiny_interval", wantErr: "interval must be at least 100ms"},
		{name: "bad_node_name", wantErr: `node_name "Node_A" is not a Kubernetes node name`},
		{name: "unknown_option", wantErr: "intervall"},
		{name: "negative_records_per_call", wantErr: "max_records_per_call must not be negative, got -1"},
		{name: "relative_cgroup_path", wantErr: `cgroup_path must be an absolute path, got "sys/fs/cgroup"`},
		{name: "bad_auth_type", wantErr: `k8s.auth_type must be serviceAccount or kubeConfig, got "token"`},
		{name: "kubeconfig_without_auth_type", wantErr: "k8s.kubeconfig is set but k8s.auth_type is not kubeConfig"},
		{name: "unknown_attribute", wantErr: "metric ebpfnet.flow.io doesn't have an attribute k8s.pod.name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := NewFactory().CreateDefaultConfig()
			sub, err := cm.Sub(component.NewIDWithName(metadata.Type, tt.name).String())
			require.NoError(t, err)
			err = sub.Unmarshal(cfg)
			if err == nil {
				err = confmap.Validate(cfg)
			}
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			// Unexported fields (mdatagen's enabledSetByUser) are not config.
			ignoreUnexported := cmp.FilterPath(func(p cmp.Path) bool {
				sf, ok := p.Index(-1).(cmp.StructField)
				return ok && !token.IsExported(sf.Name())
			}, cmp.Ignore())
			require.Empty(t, cmp.Diff(tt.want, cfg, ignoreUnexported))
		})
	}
}

func TestDefaultConfigIsValid(t *testing.T) {
	require.NoError(t, confmap.Validate(createDefaultConfig()))
}

// TestDefaultInterfaceSelection checks the default regexes against names of
// real Kubernetes nodes: pod veths of common CNIs and uplink NICs are
// attached, in the right role; loopback, bridges and tunnels are not.
func TestDefaultInterfaceSelection(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	sel := selector(cfg)
	for name, want := range map[string]string{
		"veth1a2b3c4d": "endpoint", "cali0ef24b1a3e2": "endpoint", "lxc8f2e1a": "endpoint", "eni3c5d2f1a9b8": "endpoint",
		"gke2b1c3d4e5f6": "endpoint", "azv1234abcd": "endpoint",
		"eth0": "uplink", "ens5": "uplink", "enp0s3": "uplink", "eno1": "uplink", "bond0": "uplink", "eth0.100": "uplink",
		"lo": "", "cni0": "", "docker0": "", "cilium_host": "", "cilium_vxlan": "", "flannel.1": "", "kube-ipvs0": "", "lxc_health": "",
	} {
		role, ok := sel.Select(name)
		got := ""
		if ok {
			got = role.String()
		}
		require.Equal(t, want, got, name)
	}
}
