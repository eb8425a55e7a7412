package convert

import (
	"net/netip"
	"strconv"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// Logs converts a batch into one log record per flow (a flow record like a
// VPC or NetFlow record), grouped by local endpoint resource.
func Logs(opts Options, b *flow.Batch) plog.Logs {
	ld := plog.NewLogs()
	if !opts.FlowEvents {
		return ld
	}
	zone := localZone(&opts)
	observed := pcommon.NewTimestampFromTime(b.Time)
	// Records per resource first, so each resource's record slice is
	// allocated once.
	counts := make(map[netip.Addr]int)
	for i := range b.Flows {
		counts[resourceAddr(&b.Flows[i])]++
	}
	scopes := make(map[netip.Addr]plog.ScopeLogs, len(counts))
	ld.ResourceLogs().EnsureCapacity(len(counts))
	// The addresses of a batch repeat (a pod's, its peers'): one string each.
	addrs := make(addrStrings)
	for i := range b.Flows {
		f := &b.Flows[i]
		local := resourceAddr(f)
		sl, ok := scopes[local]
		if !ok {
			rl := ld.ResourceLogs().AppendEmpty()
			putResource(rl.Resource().Attributes(), opts, local)
			putService(rl.Resource().Attributes(), opts, local, "", "")
			sl = rl.ScopeLogs().AppendEmpty()
			sl.Scope().SetName(opts.ScopeName)
			sl.Scope().SetVersion(opts.ScopeVersion)
			sl.LogRecords().EnsureCapacity(counts[local])
			scopes[local] = sl
		}
		lr := sl.LogRecords().AppendEmpty()
		putFlowRecord(lr, f, observed, addrs)
		a := lr.Attributes()
		served := f.Served()
		putPeer(a, opts.Peers, served.Addr(), WithPeerK8s|WithPeerService, zone, f.Service().Addr())
		if svc := f.Service(); svc.IsValid() {
			// As on a client span: server.* is the Service the client
			// addressed; network.peer.* and the peer attributes are what
			// served it (a socket-level LB's rewrite: the packets' peer;
			// the node's NAT after this interface: the backend conntrack
			// names).
			a.PutStr(AttrServerAddress, addrs.get(svc.Addr()))
			a.PutInt(AttrServerPort, int64(svc.Port()))
			a.PutStr(AttrPeerAddr, addrs.get(served.Addr()))
			a.PutInt(AttrPeerPortAttr, int64(served.Port()))
			putDialedService(a, opts.Peers, svc.Addr())
		}
	}
	return ld
}

// addrStrings memoizes netip.Addr.String within one conversion.
type addrStrings map[netip.Addr]string

func (m addrStrings) get(a netip.Addr) string {
	s, ok := m[a]
	if !ok {
		s = a.String()
		m[a] = s
	}
	return s
}

func putFlowRecord(lr plog.LogRecord, f *flow.Flow, observed pcommon.Timestamp, addrs addrStrings) {
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
	a.EnsureCapacity(14)
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
	if f.Conn.TraceID != [16]byte{} {
		// The span of this side of the connection (emitted at its close).
		lr.SetTraceID(f.Conn.TraceID)
		lr.SetSpanID(f.Conn.SpanID)
		if f.Conn.SRTT > 0 {
			a.PutDouble(AttrTCPRTT, f.Conn.SRTT.Seconds())
		}
	}
}
