package convert

// The tests' schema: the receiver's schema_test.go holds the real one (from
// metadata.yaml) to what the converters emit; here the names are what the
// tests look metrics up by.
const (
	MetricFlowIO             = "ebpfnet.flow.io"
	MetricFlowPackets        = "ebpfnet.flow.packets"
	MetricUncounted          = "ebpfnet.packets.uncounted"
	MetricTableFlows         = "ebpfnet.flow_table.flows"
	MetricTableCapacity      = "ebpfnet.flow_table.capacity"
	MetricSeriesEvicted      = "ebpfnet.series.evicted"
	MetricConnsUnreported    = "ebpfnet.connections.unreported"
	MetricStateChangesMissed = "ebpfnet.tcp.state_changes.missed"
	MetricConnsOpened        = "ebpfnet.tcp.connections.opened"
	MetricConnsClosed        = "ebpfnet.tcp.connections.closed"
	MetricRetransmits        = "ebpfnet.tcp.retransmits"
	MetricResets             = "ebpfnet.tcp.resets.received"
	MetricResetsSent         = "ebpfnet.tcp.resets.sent"
	MetricConnDuration       = "ebpfnet.tcp.connection.duration"
	MetricRTT                = "ebpfnet.tcp.rtt"
	MetricDNSLookupDuration  = "dns.lookup.duration"
)

var testSchema = Schema{
	FlowIO:             {Name: MetricFlowIO, Description: "Bytes of the flows of the local endpoint (L2 frame bytes, as the interface counters count them).", Unit: "By"},
	FlowPackets:        {Name: MetricFlowPackets, Description: "Packets of the flows of the local endpoint.", Unit: "{packet}"},
	ConnsOpened:        {Name: MetricConnsOpened, Unit: "{connection}"},
	ConnsClosed:        {Name: MetricConnsClosed, Unit: "{connection}"},
	Retransmits:        {Name: MetricRetransmits, Unit: "{segment}"},
	ResetsReceived:     {Name: MetricResets, Unit: "{reset}"},
	ResetsSent:         {Name: MetricResetsSent, Unit: "{reset}"},
	ConnDuration:       {Name: MetricConnDuration, Unit: "s", Bounds: []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600}},
	ConnRTT:            {Name: MetricRTT, Unit: "s", Bounds: []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}},
	DNSLookupDuration:  {Name: MetricDNSLookupDuration, Unit: "s", Bounds: []float64{0.0001, 0.001, 0.01, 0.1, 1}},
	Uncounted:          {Name: MetricUncounted, Description: "Packets seen by the receiver's programs that are not part of any flow, by reason.", Unit: "{packet}"},
	ConnsUnreported:    {Name: MetricConnsUnreported, Description: "TCP connections the kernel side could not report, by reason.", Unit: "{connection}"},
	StateChangesMissed: {Name: MetricStateChangesMissed, Description: "TCP state changes the kernel skipped the tracepoint program for because it was already running on that CPU; recovered through sockops for sockets created after the receiver started.", Unit: "{state_change}"},
	TableFlows:         {Name: MetricTableFlows, Description: "Flows drained from the kernel flow table in the last interval.", Unit: "{flow}"},
	TableCapacity:      {Name: MetricTableCapacity, Description: "Capacity of the kernel flow table.", Unit: "{flow}"},
	SeriesEvicted:      {Name: MetricSeriesEvicted, Description: "Metric series dropped from the receiver's cumulative state.", Unit: "{series}"},
}
