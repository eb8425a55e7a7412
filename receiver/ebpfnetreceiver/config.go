package ebpfnetreceiver

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.opentelemetry.io/collector/confmap"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver/internal/metadata"
)

// Limits of max_flows: below the minimum a map is useless, above the
// maximum two preallocated tables would take more than ~4 GiB of kernel memory.
// The sizes are int64 in the config so that a value past 32 bits is an
// error, not a wrapped small table.
const (
	minMaxFlows = 16
	maxMaxFlows = 1 << 24
	minInterval = 100 * time.Millisecond
)

// Config of the ebpfnet receiver.
type Config struct {
	// Interval between two drains of the kernel flow table: every interval
	// the receiver emits the flows of that interval. Default 10s.
	Interval time.Duration `mapstructure:"interval"`

	// MaxFlows is the capacity of the kernel flow table (there are two,
	// alternating). A flow that finds it full is counted in
	// ebpfnet.packets.uncounted{reason=map_full}. Default 131072.
	MaxFlows int64 `mapstructure:"max_flows"`

	// MaxConnections is the capacity of the kernel's TCP connection state
	// (connections open at once). A connection that finds it full is not
	// reported and is counted in ebpfnet.connections.unreported. Default 65536.
	MaxConnections int64 `mapstructure:"max_connections"`

	// RingBufferSize is the size in bytes of the ring buffer that carries
	// closed connections to the collector: a power of two, at least 4096.
	// A full ring is counted in ebpfnet.connections.unreported. Default 4 MiB.
	RingBufferSize int64 `mapstructure:"ring_buffer_size"`

	// MaxRecordsPerCall bounds what one call to the next consumer carries:
	// metric data points, flow log records or spans. An interval with more
	// is handed over in several calls, so that no request exceeds what the
	// next hop accepts (a stock OTLP receiver takes 4 MiB messages; a
	// flow record is at most ~1.3 KB, a span ~1.6 KB, before processors
	// add resource attributes). 0: one call per interval and signal.
	// Default 1024. Set the batch processor's send_batch_max_size to no
	// more than this, or it merges the calls into larger requests.
	MaxRecordsPerCall int `mapstructure:"max_records_per_call"`

	// Interfaces selects the interfaces to attach to.
	Interfaces InterfacesConfig `mapstructure:"interfaces"`

	// AttachMode is auto (tcx where the kernel has it, else clsact), tcx or tc.
	AttachMode string `mapstructure:"attach_mode"`

	// NodeName is the k8s.node.name of every resource: a Kubernetes node
	// name (a DNS subdomain). Default: the K8S_NODE_NAME environment
	// variable, else the host name.
	NodeName string `mapstructure:"node_name"`

	// Temporality of the flow sums: cumulative (default) or delta.
	Temporality string `mapstructure:"temporality"`

	// SeriesIdleTimeout drops a cumulative series not updated for this
	// long (it restarts with a new start time if it comes back). 0: never
	// (series are then bounded by max_series alone). Default 5m.
	SeriesIdleTimeout time.Duration `mapstructure:"series_idle_timeout"`

	// MaxSeries bounds the cumulative series kept in memory, flow and
	// connection metrics together; the least recently updated are dropped
	// first. 0: no bound (series are then bounded by series_idle_timeout
	// alone). Default 100000.
	MaxSeries int `mapstructure:"max_series"`

	// CgroupPath is the cgroup2 directory whose sockets the sockops
	// program sees (all below it). Default: the root of the cgroup2 mount.
	// In a container, mount the host's /sys/fs/cgroup and name it here.
	CgroupPath string `mapstructure:"cgroup_path"`

	// TCPSockets selects the TCP sockets that get connection spans and
	// connection metrics: all (every socket of the node, in every network
	// namespace, the node's own processes and loopback too) or pods (the
	// sockets of network namespaces other than the collector's own, which
	// on the host network is the node's: pods with their own network;
	// hostNetwork pods and node processes are left out, in the kernel).
	// Flows are scoped by interfaces, whatever this says. Default all.
	TCPSockets string `mapstructure:"tcp_sockets"`

	// Drops counts the packets the kernel drops, by its reason.
	Drops DropsConfig `mapstructure:"drops"`

	// DNS follows the DNS lookups of pods in the same pass as their flows.
	DNS DNSConfig `mapstructure:"dns"`

	// K8s adds the peer's Kubernetes identity (pod, workload, Service,
	// node, zone) from the API server. Off by default (no Kubernetes).
	K8s K8sConfig `mapstructure:"k8s"`

	// Sampling thins the spans and flow log records (off by default); the
	// metrics always count everything.
	Sampling SamplingConfig `mapstructure:"sampling"`

	metadata.MetricsBuilderConfig `mapstructure:",squash"`

	// Events enables or disables the ebpfnet.flow log records.
	Events metadata.EventsConfig `mapstructure:"events"`

	_ struct{}
}

// InterfacesConfig selects interfaces by name (RE2 regular expressions).
type InterfacesConfig struct {
	// Include: attach to interfaces whose name matches. The default fits a
	// Kubernetes node: pod veths of the common CNIs and the uplink NICs.
	Include string `mapstructure:"include"`
	// Exclude: ...unless the name matches this. Default "^lo$".
	Exclude string `mapstructure:"exclude"`
	// Uplink: included interfaces whose name matches are node uplinks
	// (the node is the local endpoint); all others are pod endpoints.
	Uplink string `mapstructure:"uplink"`
}

// Defaults for InterfacesConfig.
const (
	defaultInclude = `^(veth|cali|lxc|eni|gke|azv|vnet|tap|eth|ens|eno|enp|enx|em|bond)`
	defaultExclude = `^(lo|lxc_health)$`
	defaultUplink  = `^(eth|ens|eno|enp|enx|em|bond)[0-9a-z.]*$`
)

var _ confmap.Validator = (*Config)(nil)

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval must be positive, got %s", c.Interval))
	} else if c.Interval < minInterval {
		errs = append(errs, fmt.Errorf("interval must be at least %s (each drain waits for an RCU grace period and reads every table), got %s",
			minInterval, c.Interval))
	}
	errs = append(errs, c.validateSizes()...)
	errs = append(errs, c.Drops.validate()...)
	errs = append(errs, c.DNS.validate()...)
	errs = append(errs, c.Sampling.validate()...)
	if c.Interfaces.Include == "" {
		errs = append(errs, errors.New("interfaces::include must not be empty"))
	}
	for name, re := range map[string]string{"include": c.Interfaces.Include, "exclude": c.Interfaces.Exclude, "uplink": c.Interfaces.Uplink} {
		if _, err := regexp.Compile(re); err != nil {
			errs = append(errs, fmt.Errorf("interfaces::%s is not a valid regular expression: %w", name, err))
		}
	}
	switch c.AttachMode {
	case "auto", "tcx", "tc":
	default:
		errs = append(errs, fmt.Errorf("attach_mode must be auto, tcx or tc, got %q", c.AttachMode))
	}
	switch c.Temporality {
	case "cumulative", "delta":
	default:
		errs = append(errs, fmt.Errorf("temporality must be cumulative or delta, got %q", c.Temporality))
	}
	if c.SeriesIdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("series_idle_timeout must not be negative, got %s", c.SeriesIdleTimeout))
	}
	if c.MaxSeries < 0 {
		errs = append(errs, fmt.Errorf("max_series must not be negative, got %d", c.MaxSeries))
	}
	if c.NodeName != "" {
		if msgs := validation.IsDNS1123Subdomain(c.NodeName); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("node_name %q is not a Kubernetes node name: %s", c.NodeName, strings.Join(msgs, "; ")))
		}
	}
	if c.TCPSockets != "all" && c.TCPSockets != "pods" {
		errs = append(errs, fmt.Errorf("tcp_sockets must be all or pods, got %q", c.TCPSockets))
	}
	if c.CgroupPath != "" && !filepath.IsAbs(c.CgroupPath) {
		errs = append(errs, fmt.Errorf("cgroup_path must be an absolute path, got %q", c.CgroupPath))
	}
	switch c.K8s.AuthType {
	case "serviceAccount", "kubeConfig":
	default:
		errs = append(errs, fmt.Errorf("k8s.auth_type must be serviceAccount or kubeConfig, got %q", c.K8s.AuthType))
	}
	if c.K8s.Kubeconfig != "" && c.K8s.AuthType != "kubeConfig" {
		errs = append(errs, errors.New("k8s.kubeconfig is set but k8s.auth_type is not kubeConfig"))
	}
	return errors.Join(errs...)
}

// validateSizes checks the sizes of the kernel side and of the requests.
func (c *Config) validateSizes() []error {
	var errs []error
	if c.MaxFlows < minMaxFlows || c.MaxFlows > maxMaxFlows {
		errs = append(errs, fmt.Errorf("max_flows must be between %d and %d, got %d", minMaxFlows, maxMaxFlows, c.MaxFlows))
	}
	if c.MaxConnections < minMaxFlows || c.MaxConnections > maxMaxFlows {
		errs = append(errs, fmt.Errorf("max_connections must be between %d and %d, got %d", minMaxFlows, maxMaxFlows, c.MaxConnections))
	}
	if c.RingBufferSize < 4096 || c.RingBufferSize > 1<<30 || c.RingBufferSize&(c.RingBufferSize-1) != 0 {
		errs = append(errs, fmt.Errorf("ring_buffer_size must be a power of two between 4096 and 1073741824, got %d", c.RingBufferSize))
	}
	if c.MaxRecordsPerCall < 0 {
		errs = append(errs, fmt.Errorf("max_records_per_call must not be negative, got %d", c.MaxRecordsPerCall))
	}
	return errs
}

// DropsConfig configures the drop counting (tp_btf/kfree_skb).
type DropsConfig struct {
	// Enabled loads the drop program (Linux 5.17+). Default true.
	Enabled bool `mapstructure:"enabled"`
	// IgnoreReasons are drop reasons not reported, by the kernel's names
	// without SKB_DROP_REASON_ (normal teardown: README "Drops" says how
	// the default was measured). Names a kernel does not have are ignored.
	IgnoreReasons []string `mapstructure:"ignore_reasons"`
	// MaxEntries is the capacity of each of the two drop tables (drops of
	// one local endpoint, peer address and reason per interval). A drop
	// that finds it full is counted in
	// ebpfnet.packets.uncounted{reason=drops_full}. Default 16384.
	MaxEntries int64 `mapstructure:"max_entries"`
}

// DNSConfig configures DNS in the TC programs of pod endpoints.
type DNSConfig struct {
	// Enabled parses DNS on Ports. Default true.
	Enabled bool `mapstructure:"enabled"`
	// Ports are the server ports DNS is parsed on (UDP and TCP), at most 4.
	// Default [53].
	Ports []int `mapstructure:"ports"`
	// Timeout is how long a query waits for its response before it is
	// reported as a timeout. Default 5s.
	Timeout time.Duration `mapstructure:"timeout"`
	// MaxPending is the capacity of the kernel's map of queries waiting
	// for their response; a query that finds it full is counted in
	// ebpfnet.packets.uncounted{reason=dns_pending_full}. Default 8192.
	MaxPending int64 `mapstructure:"max_pending"`
}

func (d *DNSConfig) validate() []error {
	var errs []error
	if len(d.Ports) > kernel.DNSMaxPorts {
		errs = append(errs, fmt.Errorf("dns::ports: at most %d ports, got %d", kernel.DNSMaxPorts, len(d.Ports)))
	}
	for _, p := range d.Ports {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("dns::ports: %d is not a port", p))
		}
	}
	if d.Enabled && len(d.Ports) == 0 {
		errs = append(errs, errors.New("dns::ports must name a port when dns is enabled"))
	}
	if d.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("dns::timeout must be positive, got %s", d.Timeout))
	}
	if d.MaxPending < minMaxFlows || d.MaxPending > 1<<20 {
		errs = append(errs, fmt.Errorf("dns::max_pending must be between %d and %d, got %d", minMaxFlows, 1<<20, d.MaxPending))
	}
	return errs
}

// SamplingConfig thins the records by OpenTelemetry consistent-probability
// sampling: a kept span carries its threshold in tracestate (ot=th), a kept
// flow log record in sampling.threshold, so spanmetrics and backends count
// each as 1/ratio. Metrics are never sampled.
type SamplingConfig struct {
	Spans    SpanSamplingConfig    `mapstructure:"spans"`
	FlowLogs FlowLogSamplingConfig `mapstructure:"flow_logs"`
}

// SpanSamplingConfig: a ratio decided from the connection's trace ID (both
// sides of a connection, on any node, decide alike), and connections kept
// whatever the ratio.
type SpanSamplingConfig struct {
	// Ratio of the connections whose spans are kept, (0, 1]. Default 1.
	Ratio float64 `mapstructure:"ratio"`
	// KeepAlways keeps the spans of connections that match (at threshold
	// 0, each counting once) when Ratio is below 1.
	KeepAlways KeepAlwaysConfig `mapstructure:"keep_always"`
}

// KeepAlwaysConfig: a side's span is kept when its own view matches (the
// other side of the connection is kept by its own view or the ratio).
type KeepAlwaysConfig struct {
	// Failed: refused, timed out, unreachable, never established. Default true.
	Failed bool `mapstructure:"failed"`
	// Reset: ended by a reset, sent or received. Default true.
	Reset bool `mapstructure:"reset"`
	// MinRTT: a smoothed RTT at least this (0: off).
	MinRTT time.Duration `mapstructure:"min_rtt"`
	// MinRetransmits: at least this many retransmitted segments (0: off).
	MinRetransmits int `mapstructure:"min_retransmits"`
	// MinDuration: open at least this long (0: off).
	MinDuration time.Duration `mapstructure:"min_duration"`
}

// FlowLogSamplingConfig: a ratio decided per flow (its protocol and
// endpoints: both directions alike).
type FlowLogSamplingConfig struct {
	// Ratio of the flows whose log records are kept, (0, 1]. Default 1.
	Ratio float64 `mapstructure:"ratio"`
}

func (s *SamplingConfig) validate() []error {
	var errs []error
	for name, r := range map[string]float64{"spans::ratio": s.Spans.Ratio, "flow_logs::ratio": s.FlowLogs.Ratio} {
		if !(r > 0 && r <= 1) {
			errs = append(errs, fmt.Errorf("sampling::%s must be in (0, 1], got %v", name, r))
		}
	}
	k := &s.Spans.KeepAlways
	for name, d := range map[string]time.Duration{"min_rtt": k.MinRTT, "min_duration": k.MinDuration} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("sampling::spans::keep_always::%s must not be negative, got %s", name, d))
		}
	}
	if k.MinRetransmits < 0 {
		errs = append(errs, fmt.Errorf("sampling::spans::keep_always::min_retransmits must not be negative, got %d", k.MinRetransmits))
	}
	return errs
}

// spans is the span sampling of the converter.
func (s *SamplingConfig) spans() flow.SpanSampling {
	k := &s.Spans.KeepAlways
	return flow.SpanSampling{Threshold: flow.RatioThreshold(s.Spans.Ratio), Keep: flow.KeepRules{Failed: k.Failed, Reset: k.Reset,
		MinRTT: k.MinRTT, MinRetransmits: uint32(min(k.MinRetransmits, math.MaxUint32)), MinDuration: k.MinDuration}}
}

// kernelPorts are the ports for kernel.Options (empty: no DNS).
func (d *DNSConfig) kernelPorts() []uint16 {
	out := []uint16{}
	if d.Enabled {
		for _, p := range d.Ports {
			out = append(out, uint16(p))
		}
	}
	return out
}

// dropReasonName is the form of a kernel drop reason name.
var dropReasonName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

func (d *DropsConfig) validate() []error {
	var errs []error
	if d.MaxEntries < minMaxFlows || d.MaxEntries > 1<<20 {
		errs = append(errs, fmt.Errorf("drops::max_entries must be between %d and %d, got %d", minMaxFlows, 1<<20, d.MaxEntries))
	}
	for _, r := range d.IgnoreReasons {
		if strings.HasPrefix(r, "SKB_DROP_REASON_") {
			errs = append(errs, fmt.Errorf("drops::ignore_reasons: write %q as %q (the kernel's name without SKB_DROP_REASON_)", r, strings.TrimPrefix(r, "SKB_DROP_REASON_")))
		} else if !dropReasonName.MatchString(r) {
			errs = append(errs, fmt.Errorf("drops::ignore_reasons: %q is not a kernel drop reason name (upper case, as in NOT_SPECIFIED or TCP_CLOSE, without SKB_DROP_REASON_)", r))
		}
	}
	return errs
}

// K8sConfig configures the peer enrichment from the Kubernetes API.
type K8sConfig struct {
	// Enabled turns the informers on.
	Enabled bool `mapstructure:"enabled"`
	// AuthType: serviceAccount (in-cluster, the default) or kubeConfig.
	AuthType string `mapstructure:"auth_type"`
	// Kubeconfig is the file for auth_type kubeConfig (default: $KUBECONFIG,
	// then ~/.kube/config).
	Kubeconfig string `mapstructure:"kubeconfig"`
	// NetworkPolicies evaluates every flow of a local pod against the
	// cluster's NetworkPolicies (whatever the CNI enforces): the verdict on
	// flow records and ebpfnet.policy.* metrics. Watches NetworkPolicies and
	// Namespaces and keeps every pod label (RBAC: list/watch networkpolicies
	// and namespaces). Default true (with enabled).
	NetworkPolicies bool `mapstructure:"network_policies"`
}
