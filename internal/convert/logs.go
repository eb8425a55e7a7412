package convert

import (
	"net/netip"
	"strconv"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// Logs converts a batch into one log record per flow (a flow record like a
// VPC or NetFlow record) and one per drop no flow record carries, grouped
// by local endpoint resource.
func Logs(opts Options, b *flow.Batch) plog.Logs { return logs(opts, b, make(addrStrings)) }

func logs(opts Options, b *flow.Batch, addrs addrStrings) plog.Logs {
	ld := plog.NewLogs()
	b = enabledRecords(&opts, b)
	zone := localZone(&opts)
	observed := pcommon.NewTimestampFromTime(b.Time)
	ls := newLogScopes(ld, &opts, b)
	for i := range b.Drops {
		if d := &b.Drops[i]; ownDropRecord(d) {
			lr := ls.scope(dropResource(d)).LogRecords().AppendEmpty()
			putDropRecord(lr, d, observed, addrs)
			putPeer(lr.Attributes(), opts.Peers, d.Peer, WithPeerK8s|WithPeerService, zone, netip.Addr{})
		}
	}
	for i := range b.DNS {
		l := &b.DNS[i]
		lr := ls.scope(dnsResource(l)).LogRecords().AppendEmpty()
		putDNSRecord(lr, l, observed, opts.DNSTimeout, addrs)
		putPeer(lr.Attributes(), opts.Peers, l.Peer().Addr(), WithPeerK8s|WithPeerService, zone, l.Service().Addr())
		if svc := l.Service(); svc.IsValid() {
			putDialedService(lr.Attributes(), opts.Peers, svc.Addr())
		}
	}
	for i := range b.Flows {
		if ls.flowRand != nil && !opts.FlowLogSampling.Keeps(ls.flowRand[i]) {
			continue
		}
		ls.putFlow(i, &b.Flows[i], observed, addrs, zone)
	}
	return ld
}

// putFlow puts the record of flow i, f.
func (l *logScopes) putFlow(i int, f *flow.Flow, observed pcommon.Timestamp, addrs addrStrings, zone string) {
	lr := l.scope(logResource{local: resourceAddr(f)}).LogRecords().AppendEmpty()
	served, svc := f.Served(), f.Service()
	fp := lookupPeer(l.opts.Peers, served.Addr())
	// The attributes' slice is allocated once, for all of them: a pdata
	// map grows by doubling, and it is most of a record's bytes.
	extra := fp.attrBound()
	if l.flowRand != nil {
		extra += 2
	}
	if svc.IsValid() {
		extra += 6
	}
	putFlowRecord(lr, f, observed, addrs, extra)
	a := lr.Attributes()
	if l.flowRand != nil {
		a.PutStr(AttrSamplingThreshold, l.threshold)
		a.PutStr(AttrSamplingRandomness, randomnessValue(l.flowRand[i]))
	}
	putPeerFound(a, l.opts.Peers, &fp, WithPeerK8s|WithPeerService, zone, svc.Addr())
	if svc.IsValid() {
		// As on a client span: server.* is the Service the client
		// addressed; network.peer.* and the peer attributes are what
		// served it (a socket-level LB's rewrite: the packets' peer; the
		// node's NAT after this interface: the backend conntrack names).
		a.PutStr(AttrServerAddress, addrs.get(svc.Addr()))
		a.PutInt(AttrServerPort, int64(svc.Port()))
		a.PutStr(AttrPeerAddr, addrs.get(served.Addr()))
		a.PutInt(AttrPeerPortAttr, int64(served.Port()))
		putDialedService(a, l.opts.Peers, svc.Addr())
	}
}

// logScopes are the ScopeLogs of one conversion, one per local endpoint,
// each with its records' slice allocated once (the records are counted
// first).
type logScopes struct {
	ld     plog.Logs
	opts   *Options
	counts map[logResource]int
	scopes map[logResource]plog.ScopeLogs
	// flowRand is each flow's flow.FlowRandomness (nil: no flow log
	// sampling), threshold the sampling's (sampling.threshold).
	flowRand  []uint64
	threshold string
}

// logResource is a local endpoint: a pod's address, a hostNetwork pod's
// UID (drops of its sockets), or neither (the node).
type logResource struct {
	local netip.Addr
	pod   string
}

// randomnessValue is 56 bits of randomness as sampling.randomness writes
// it (the tracestate rv form: 14 hexadecimal digits).
func randomnessValue(r uint64) string {
	return strconv.FormatUint(r|1<<56, 16)[1:]
}

func newLogScopes(ld plog.Logs, opts *Options, b *flow.Batch) *logScopes {
	counts := make(map[logResource]int)
	// With flow log sampling, each flow's randomness, hashed once for the
	// count and the records.
	var flowRand []uint64
	if opts.FlowLogSampling != 0 {
		flowRand = make([]uint64, len(b.Flows))
	}
	for i := range b.Flows {
		if flowRand != nil {
			if flowRand[i] = flow.FlowRandomness(&b.Flows[i]); !opts.FlowLogSampling.Keeps(flowRand[i]) {
				continue
			}
		}
		counts[logResource{local: resourceAddr(&b.Flows[i])}]++
	}
	for i := range b.Drops {
		if d := &b.Drops[i]; ownDropRecord(d) {
			counts[dropResource(d)]++
		}
	}
	for i := range b.DNS {
		counts[dnsResource(&b.DNS[i])]++
	}
	ld.ResourceLogs().EnsureCapacity(len(counts))
	return &logScopes{ld: ld, opts: opts, counts: counts, scopes: make(map[logResource]plog.ScopeLogs, len(counts)), flowRand: flowRand,
		threshold: opts.FlowLogSampling.TValue()}
}

func (l *logScopes) scope(r logResource) plog.ScopeLogs {
	sl, ok := l.scopes[r]
	if !ok {
		rl := l.ld.ResourceLogs().AppendEmpty()
		putResource(rl.Resource().Attributes(), *l.opts, r.local)
		putWorkloadResource(rl.Resource().Attributes(), *l.opts, r.pod, "")
		putService(rl.Resource().Attributes(), *l.opts, r.local, r.pod, "")
		sl = rl.ScopeLogs().AppendEmpty()
		sl.Scope().SetName(l.opts.ScopeName)
		sl.Scope().SetVersion(l.opts.ScopeVersion)
		sl.LogRecords().EnsureCapacity(l.counts[r])
		l.scopes[r] = sl
	}
	return sl
}

// addrStrings memoizes netip.Addr.String: the addresses of the records
// repeat (a pod's, its peers'), one string each.
type addrStrings map[netip.Addr]string

// maxAddrStrings bounds a Converter's addrStrings, kept across calls.
const maxAddrStrings = 1 << 16

func (m addrStrings) get(a netip.Addr) string {
	s, ok := m[a]
	if !ok {
		s = a.String()
		m[a] = s
	}
	return s
}

// putFlowRecord puts a flow's record, its attributes' slice sized for
// them and extra more.
func putFlowRecord(lr plog.LogRecord, f *flow.Flow, observed pcommon.Timestamp, addrs addrStrings, extra int) {
	lr.SetEventName(EventFlow)
	lr.SetTimestamp(pcommon.NewTimestampFromTime(f.End))
	lr.SetObservedTimestamp(observed)
	transport := Transport(f.Protocol)
	// "<direction> <transport> <src> -> <dst> <n> B <n> packets", built
	// without fmt (one record per flow: fmt was 7% of the collector's CPU
	// under connection churn).
	var buf [128]byte
	body := append(buf[:0], f.Direction.String()...)
	body = append(body, ' ')
	body = append(body, transport...)
	body = append(body, ' ')
	body = f.Src.AppendTo(body)
	body = append(body, " -> "...)
	body = f.Dst.AppendTo(body)
	body = append(body, ' ')
	body = strconv.AppendUint(body, f.Bytes, 10)
	body = append(body, " B "...)
	body = strconv.AppendUint(body, f.Packets, 10)
	body = append(body, " packets"...)
	lr.Body().SetStr(string(body))
	a := lr.Attributes()
	a.EnsureCapacity(flowAttrCount(f) + extra)
	a.PutStr(AttrDirection, f.Direction.String())
	a.PutStr(AttrTransport, transport)
	a.PutStr(AttrNetworkType, NetworkType(f))
	if f.Interface != "" {
		a.PutStr(AttrInterface, f.Interface)
	}
	a.PutStr(AttrSourceAddress, addrs.get(f.Src.Addr()))
	a.PutStr(AttrDestinationAddress, addrs.get(f.Dst.Addr()))
	switch {
	case f.HasPorts():
		a.PutInt(AttrSourcePort, int64(f.Src.Port()))
		a.PutInt(AttrDestinationPort, int64(f.Dst.Port()))
	case f.IsICMP():
		a.PutInt(AttrICMPType, int64(f.Src.Port()))
		a.PutInt(AttrICMPCode, int64(f.Dst.Port()))
	}
	a.PutInt(AttrFlowBytes, int64(f.Bytes))
	a.PutInt(AttrFlowPackets, int64(f.Packets))
	a.PutInt(AttrFlowStart, f.Start.UnixNano())
	if f.Protocol == flow.ProtoTCP {
		a.PutInt(AttrTCPFlags, int64(f.TCPFlags))
	}
	putFlowDrops(a, f.Drops)
	putFlowPolicy(a, &f.Policy, f.Drops)
	if f.Conn.TraceID != [16]byte{} {
		// The span of this side of the connection (emitted at its close).
		lr.SetTraceID(f.Conn.TraceID)
		lr.SetSpanID(f.Conn.SpanID)
		if f.Conn.SRTT > 0 {
			a.PutDouble(AttrTCPRTT, f.Conn.SRTT.Seconds())
		}
	}
}

// flowAttrCount is the number of attributes putFlowRecord puts for f.
func flowAttrCount(f *flow.Flow) int {
	n := 8 // direction, transport, network type, addresses, bytes, packets, start
	if f.Interface != "" {
		n++
	}
	if f.HasPorts() || f.IsICMP() {
		n += 2
	}
	if f.Protocol == flow.ProtoTCP {
		n++
	}
	if len(f.Drops) > 0 {
		n++
	}
	if v := &f.Policy; v.Result != flow.PolicyNotEvaluated {
		n += 2 // verdict, direction
		if v.Finding != flow.FindingNone {
			n++
		}
		if len(v.Policies) > 0 {
			n++
		}
		if v.Finding == flow.FindingAllowedDropped {
			n++
		}
	}
	if f.Conn.TraceID != [16]byte{} && f.Conn.SRTT > 0 {
		n++
	}
	return n
}

// ownDropRecord: a packet drop no flow record carries.
func ownDropRecord(d *flow.Drop) bool { return d.Kind == flow.DropPacket && !d.OnFlow }

func dropResource(d *flow.Drop) logResource {
	if d.OnNode {
		return logResource{pod: d.PodUID}
	}
	return logResource{local: d.Endpoint}
}

// putDropRecord fills the record of drops no single flow record carries.
func putDropRecord(lr plog.LogRecord, d *flow.Drop, observed pcommon.Timestamp, addrs addrStrings) {
	lr.SetEventName(EventDrop)
	lr.SetTimestamp(observed)
	lr.SetObservedTimestamp(observed)
	transport := Transport(d.Protocol)
	var buf [128]byte
	body := append(buf[:0], "dropped "...)
	body = append(body, d.Reason...)
	body = append(body, ' ')
	body = append(body, d.Direction.String()...)
	body = append(body, ' ')
	body = append(body, transport...)
	body = append(body, ' ')
	body = d.Local.AppendTo(body)
	body = append(body, " peer "...)
	body = d.Peer.AppendTo(body)
	body = append(body, ' ')
	body = strconv.AppendUint(body, d.Packets, 10)
	body = append(body, " packets"...)
	lr.Body().SetStr(string(body))
	a := lr.Attributes()
	a.PutStr(AttrDropReason, d.Reason)
	a.PutStr(AttrDirection, d.Direction.String())
	a.PutStr(AttrTransport, transport)
	if d.Peer.IsValid() {
		if d.Peer.Is4() {
			a.PutStr(AttrNetworkType, "ipv4")
		} else {
			a.PutStr(AttrNetworkType, "ipv6")
		}
		a.PutStr(AttrPeerAddress, addrs.get(d.Peer))
	}
	if d.Interface != "" {
		a.PutStr(AttrInterface, d.Interface)
	}
	if d.Protocol == flow.ProtoTCP || d.Protocol == flow.ProtoUDP {
		a.PutInt(AttrLocalPort, int64(d.Local.Port()))
	}
	a.PutInt(AttrFlowBytes, int64(d.Bytes))
	a.PutInt(AttrFlowPackets, int64(d.Packets))
}

// putFlowDrops puts a flow's drops as a map of reason to packets.
func putFlowDrops(a pcommon.Map, drops []flow.SocketDrop) {
	if len(drops) == 0 {
		return
	}
	m := a.PutEmptyMap(AttrFlowDrops)
	for _, d := range drops {
		m.PutInt(d.Reason, int64(d.Packets))
	}
}

// putFlowPolicy puts a flow's NetworkPolicy verdict, with the drop reason
// (the most packets') of an allowed flow the kernel dropped packets of.
func putFlowPolicy(a pcommon.Map, v *flow.PolicyVerdict, drops []flow.SocketDrop) {
	if v.Result == flow.PolicyNotEvaluated {
		return
	}
	putPolicyAttrs(a, v.Result, v.Egress, v.Finding)
	if len(v.Policies) > 0 {
		names := a.PutEmptySlice(AttrPolicyNames)
		for _, n := range v.Policies {
			names.AppendEmpty().SetStr(n)
		}
	}
	if v.Finding == flow.FindingAllowedDropped {
		top := drops[0]
		for _, d := range drops[1:] {
			if d.Packets > top.Packets {
				top = d
			}
		}
		a.PutStr(AttrDropReason, top.Reason)
	}
}

// enabledRecords is b with only the records the options enable.
func enabledRecords(opts *Options, b *flow.Batch) *flow.Batch {
	out := &flow.Batch{Time: b.Time}
	if opts.FlowEvents {
		out.Flows = b.Flows
	}
	if opts.DropEvents {
		out.Drops = b.Drops
	}
	if opts.DNSEvents {
		out.DNS = b.DNS
	}
	return out
}
