package convert

import (
	"strconv"

	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// Resource attributes: one resource per local endpoint.
const (
	AttrK8sNodeName = "k8s.node.name"
	AttrK8sPodIP    = "k8s.pod.ip"
	AttrK8sPodUID   = "k8s.pod.uid"
	AttrContainerID = "container.id"
)

// Data point / log attributes.
const (
	AttrDirection   = "network.io.direction"
	AttrTransport   = "network.transport"
	AttrNetworkType = "network.type"
	AttrPeerAddress = "network.peer.address"
	AttrPeerPort    = "network.peer.port"
	AttrLocalPort   = "network.local.port"
	AttrInterface   = "network.interface.name"
	AttrReason      = "reason"

	AttrSourceAddress      = "source.address"
	AttrSourcePort         = "source.port"
	AttrDestinationAddress = "destination.address"
	AttrDestinationPort    = "destination.port"
	AttrFlowBytes          = "ebpfnet.flow.bytes"
	AttrFlowPackets        = "ebpfnet.flow.packets"
	AttrFlowStart          = "ebpfnet.flow.start"
	AttrTCPFlags           = "ebpfnet.tcp.flags"
	AttrICMPType           = "ebpfnet.icmp.type"
	AttrICMPCode           = "ebpfnet.icmp.code"
	AttrDropReason         = "ebpfnet.drop.reason"
	AttrFlowDrops          = "ebpfnet.flow.drops"
	AttrTCPResetReason     = "ebpfnet.tcp.reset.reason"
	AttrPolicyVerdict      = "ebpfnet.policy.verdict"
	AttrPolicyDirection    = "ebpfnet.policy.direction"
	AttrPolicyNames        = "ebpfnet.policy.names"
	AttrPolicyFinding      = "ebpfnet.policy.finding"
	AttrErrorType          = "error.type"
	AttrDNSQuestionType    = "dns.question.type"
	AttrDNSQuestionName    = "dns.question.name"
	AttrSamplingThreshold  = "sampling.threshold"  // flow log records kept by flow log sampling (the threshold, tracestate th form)
	AttrSamplingRandomness = "sampling.randomness" // their flow's randomness (rv form)
	AttrDNSRCode           = "ebpfnet.dns.rcode"
	AttrDNSOpcode          = "ebpfnet.dns.opcode"
	AttrDNSAnswers         = "ebpfnet.dns.answers"
	AttrDNSLatency         = "ebpfnet.dns.latency"
	AttrDNSSide            = "ebpfnet.dns.side"
	AttrDNSTruncated       = "ebpfnet.dns.truncated"
	AttrDNSSends           = "ebpfnet.dns.sends"
	AttrDNSID              = "ebpfnet.dns.id"
	AttrDNSTCPRetry        = "ebpfnet.dns.tcp_retry"
)

// EventDNS is the event name of the DNS lookup records.
const EventDNS = "ebpfnet.dns.lookup"

// EventFlow is the event name of flow log records.
const EventFlow = "ebpfnet.flow"

// EventDrop is the event name of the records of drops no single flow
// record carries.
const EventDrop = "ebpfnet.drop"

// Metric identifies a metric the converters emit. Its name, description,
// unit and bucket bounds come from the Schema: the receiver builds it from
// the code mdatagen generates from metadata.yaml, so there is no second copy
// of them here.
type Metric int

const (
	FlowIO Metric = iota
	FlowPackets
	ConnsOpened
	ConnsClosed
	Retransmits
	ResetsReceived
	ResetsSent
	ConnDuration // histogram
	ConnRTT      // histogram
	Uncounted
	ConnsUnreported
	StateChangesMissed
	TableFlows
	TableCapacity
	SeriesEvicted
	DropPackets
	DropBytes
	PolicyFlows
	PolicyIO
	DNSLookupDuration // histogram: the client's view
	DNSServerDuration // histogram: a resolver pod's view
	NumMetrics
)

// MetricDef is what the schema says of a metric.
type MetricDef struct {
	Name, Description, Unit string
	// Bounds are the explicit bucket bounds of a histogram.
	Bounds []float64
}

// Schema defines every Metric.
type Schema [NumMetrics]MetricDef

// define names an empty metric as the schema defines it.
func (s *Schema) define(m pmetric.Metric, id Metric) {
	d := &s[id]
	m.SetName(d.Name)
	m.SetDescription(d.Description)
	m.SetUnit(d.Unit)
}

// Transport names network.transport: semconv values for tcp and udp, IANA
// keywords for ICMP, the protocol number otherwise.
func Transport(proto uint8) string {
	switch proto {
	case flow.ProtoTCP:
		return "tcp"
	case flow.ProtoUDP:
		return "udp"
	case flow.ProtoICMP:
		return "icmp"
	case flow.ProtoICMPv6:
		return "ipv6-icmp"
	case 132:
		return "sctp"
	case 47:
		return "gre"
	}
	return strconv.Itoa(int(proto))
}

// NetworkType names network.type.
func NetworkType(f *flow.Flow) string {
	if f.Src.Addr().Is4() {
		return "ipv4"
	}
	return "ipv6"
}
