package convert

// Attrs selects the optional attributes of a metric's data points (the
// `attributes` of each metric's config). Attributes a metric does not carry
// are ignored; the peer.* attributes also need a resolver (Options.Peers).
type Attrs uint32

const (
	WithDirection Attrs = 1 << iota
	WithTransport
	WithNetworkType
	WithPeerAddress
	WithPeerPort
	WithLocalPort
	WithInterface
	WithPeerKind
	WithPeerPodName
	WithPeerNamespace
	WithPeerWorkloadKind
	WithPeerWorkloadName
	WithPeerServiceName
	WithPeerNodeName
	WithPeerZone
	WithCrossZone
	WithPeerService
)

// WithPeerK8s are the peer's Kubernetes attributes.
const WithPeerK8s = WithPeerKind | WithPeerPodName | WithPeerNamespace | WithPeerWorkloadKind | WithPeerWorkloadName |
	WithPeerServiceName | WithPeerNodeName | WithPeerZone | WithCrossZone

// DefaultFlowAttrs is peer level: no ports, no interface.
const DefaultFlowAttrs = WithDirection | WithTransport | WithNetworkType | WithPeerAddress | WithPeerK8s | WithPeerService

// AttrsByName maps attribute names to their Attrs bit.
var AttrsByName = map[string]Attrs{
	AttrDirection: WithDirection, AttrTransport: WithTransport, AttrNetworkType: WithNetworkType,
	AttrPeerAddress: WithPeerAddress, AttrPeerPort: WithPeerPort, AttrLocalPort: WithLocalPort,
	AttrInterface: WithInterface, AttrPeerKind: WithPeerKind, AttrPeerPodName: WithPeerPodName,
	AttrPeerNamespace: WithPeerNamespace, AttrPeerWorkloadKind: WithPeerWorkloadKind,
	AttrPeerWorkloadName: WithPeerWorkloadName, AttrPeerServiceName: WithPeerServiceName,
	AttrPeerNodeName: WithPeerNodeName, AttrPeerZone: WithPeerZone, AttrCrossZone: WithCrossZone,
	AttrPeerService: WithPeerService,
}

// DefaultAttrs are a metric's attributes when its config selects none.
func DefaultAttrs(id Metric) Attrs {
	switch id {
	case FlowIO, FlowPackets, DropPackets, DropBytes:
		return DefaultFlowAttrs
	case ConnsOpened, ConnsClosed, Retransmits, ResetsReceived, ResetsSent, ConnDuration, ConnRTT, PolicyFlows, PolicyIO,
		DNSLookupDuration, DNSServerDuration:
		return WithPeerAddress | WithPeerK8s | WithPeerService
	}
	return 0
}
