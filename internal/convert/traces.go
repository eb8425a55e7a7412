package convert

import (
	"net/netip"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// Span names and attributes of TCP connections.
const (
	SpanClient = "tcp connect"
	SpanServer = "tcp accept"

	AttrClientAddress  = "client.address"
	AttrClientPort     = "client.port"
	AttrServerAddress  = "server.address"
	AttrServerPort     = "server.port"
	AttrLocalAddress   = "network.local.address"
	AttrPeerAddr       = "network.peer.address"
	AttrPeerPortAttr   = "network.peer.port"
	AttrLocalPortAttr  = "network.local.port"
	AttrTCPBytesSent   = "ebpfnet.tcp.bytes_sent"
	AttrTCPBytesRecv   = "ebpfnet.tcp.bytes_received"
	AttrTCPSegsIn      = "ebpfnet.tcp.segments_in"
	AttrTCPSegsOut     = "ebpfnet.tcp.segments_out"
	AttrTCPRetrans     = "ebpfnet.tcp.retransmits"
	AttrTCPRTT         = "ebpfnet.tcp.rtt"
	AttrTCPMinRTT      = "ebpfnet.tcp.min_rtt"
	AttrTCPResult      = "ebpfnet.tcp.close_reason"
	AttrDropPackets    = "ebpfnet.drop.packets"
	AttrTCPSocketError = "ebpfnet.tcp.socket_error"
	AttrProcessPID     = "process.pid"
	AttrProcessName    = "process.executable.name"
)

// Traces converts closed connections into one span each, grouped by the
// local endpoint's resource.
func Traces(opts Options, conns []flow.Conn) ptrace.Traces {
	td := ptrace.NewTraces()
	zone := localZone(&opts)
	// One resource per local pod, and per container where the socket's
	// cgroup names one (client sides, hostNetwork pods too); on the node,
	// one per process executable (client sides) outside pods.
	type resKey struct {
		local               netip.Addr
		pod, container, exe string
	}
	scopes := make(map[resKey]ptrace.ScopeSpans)
	sampled := opts.SpanSampling.Enabled()
	thSampled := "ot=th:" + opts.SpanSampling.Threshold.TValue()
	for i := range conns {
		c := &conns[i]
		keep, th := opts.SpanSampling.Decide(c)
		if !keep {
			continue
		}
		var k resKey
		switch {
		case !c.OnNode:
			k = resKey{local: c.Local.Addr(), pod: c.PodUID, container: c.ContainerID}
		case c.PodUID != "": // a hostNetwork pod's
			k = resKey{pod: c.PodUID, container: c.ContainerID}
		default:
			k.exe = c.Comm
		}
		ss, ok := scopes[k]
		if !ok {
			rs := td.ResourceSpans().AppendEmpty()
			putResource(rs.Resource().Attributes(), opts, k.local)
			putWorkloadResource(rs.Resource().Attributes(), opts, k.pod, k.container)
			putService(rs.Resource().Attributes(), opts, k.local, k.pod, k.exe)
			ss = rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName(opts.ScopeName)
			ss.Scope().SetVersion(opts.ScopeVersion)
			scopes[k] = ss
		}
		s := ss.Spans().AppendEmpty()
		putConnSpan(s, c)
		if sampled {
			putThreshold(s, th, thSampled)
		}
		peer, svc := c.Peer().Addr().Unmap(), c.Service().Addr().Unmap()
		attrs := WithPeerK8s
		if c.Role != flow.Server {
			attrs |= WithPeerService // client spans: the server's service
		}
		putPeer(s.Attributes(), opts.Peers, peer, attrs, zone, svc)
		if opts.Peers == nil && attrs&WithPeerService != 0 {
			s.Attributes().PutStr(AttrPeerService, peer.String()) // without Kubernetes: its address
		}
		if svc.IsValid() {
			putDialedService(s.Attributes(), opts.Peers, svc)
		}
	}
	return td
}

// putThreshold writes the threshold a sampled span was kept at (sampled:
// the ratio's, as tracestate): spanmetrics and backends count it as
// 2^56/(2^56-th) connections (a keep rule's: th:0, one).
func putThreshold(s ptrace.Span, th flow.Threshold, sampled string) {
	if th == 0 {
		s.TraceState().FromRaw("ot=th:0")
	} else {
		s.TraceState().FromRaw(sampled)
	}
}

func putConnSpan(s ptrace.Span, c *flow.Conn) {
	s.SetTraceID(c.TraceID)
	s.SetSpanID(c.SpanID)
	client, server := c.Local, c.Remote
	if c.Role == flow.Server {
		s.SetParentSpanID(c.ParentSpanID)
		s.SetKind(ptrace.SpanKindServer)
		s.SetName(SpanServer)
		client, server = c.Remote, c.Local
	} else {
		s.SetKind(ptrace.SpanKindClient)
		s.SetName(SpanClient)
		if c.Dialed.IsValid() {
			// server.* is the logical server the client dialed (a Service
			// ClusterIP a socket-level load balancer rewrote); the backend
			// that served it is network.peer.*.
			server = c.Dialed
		}
		// Under the node's NAT the socket kept what it dialed (Remote):
		// server.* stays that, network.peer.* is the backend.
	}
	s.SetStartTimestamp(pcommon.NewTimestampFromTime(c.Start))
	s.SetEndTimestamp(pcommon.NewTimestampFromTime(c.End))
	if c.Result.Failed() {
		s.Status().SetCode(ptrace.StatusCodeError)
		s.Status().SetMessage(c.Result.String())
	}
	putConnAttrs(s.Attributes(), c, client, server)
	putConnEvents(s, c)
}

// putConnAttrs writes a connection span's attributes.
func putConnAttrs(a pcommon.Map, c *flow.Conn, client, server netip.AddrPort) {
	a.EnsureCapacity(20)
	a.PutStr(AttrTransport, "tcp")
	if c.Local.Addr().Is4() {
		a.PutStr(AttrNetworkType, "ipv4")
	} else {
		a.PutStr(AttrNetworkType, "ipv6")
	}
	a.PutStr(AttrClientAddress, client.Addr().String())
	a.PutInt(AttrClientPort, int64(client.Port()))
	a.PutStr(AttrServerAddress, server.Addr().String())
	a.PutInt(AttrServerPort, int64(server.Port()))
	a.PutStr(AttrLocalAddress, c.Local.Addr().String())
	a.PutInt(AttrLocalPortAttr, int64(c.Local.Port()))
	peer := c.Peer()
	a.PutStr(AttrPeerAddr, peer.Addr().String())
	a.PutInt(AttrPeerPortAttr, int64(peer.Port()))
	a.PutInt(AttrTCPBytesSent, int64(c.BytesSent))
	a.PutInt(AttrTCPBytesRecv, int64(c.BytesReceived))
	a.PutInt(AttrTCPSegsIn, int64(c.SegsIn))
	a.PutInt(AttrTCPSegsOut, int64(c.SegsOut))
	a.PutInt(AttrTCPRetrans, int64(c.Retransmits))
	if c.SRTT > 0 {
		a.PutDouble(AttrTCPRTT, c.SRTT.Seconds())
		a.PutDouble(AttrTCPMinRTT, c.MinRTT.Seconds())
	}
	a.PutStr(AttrTCPResult, c.Result.String())
	if c.SockErr != 0 {
		a.PutInt(AttrTCPSocketError, int64(c.SockErr))
	}
	if c.PID != 0 {
		a.PutInt(AttrProcessPID, int64(c.PID))
		a.PutStr(AttrProcessName, c.Comm)
	}
}

// putConnEvents adds the span events: established, resets, retransmit
// bursts.
func putConnEvents(s ptrace.Span, c *flow.Conn) {
	if !c.Established.IsZero() {
		e := s.Events().AppendEmpty()
		e.SetName("established")
		e.SetTimestamp(pcommon.NewTimestampFromTime(c.Established))
	}
	if c.ResetsReceived > 0 {
		e := s.Events().AppendEmpty()
		e.SetName("reset received")
		e.SetTimestamp(pcommon.NewTimestampFromTime(c.End))
	}
	for _, b := range c.RetransmitBursts {
		e := s.Events().AppendEmpty()
		e.SetName("retransmit burst")
		e.SetTimestamp(pcommon.NewTimestampFromTime(b.Start))
		e.Attributes().PutInt(AttrTCPRetrans, int64(b.Count))
	}
	if c.ResetsSent > 0 {
		e := s.Events().AppendEmpty()
		e.SetName("reset sent")
		e.SetTimestamp(pcommon.NewTimestampFromTime(c.End))
		if c.ResetReason != "" {
			e.Attributes().PutStr(AttrTCPResetReason, c.ResetReason)
		}
	}
	for _, d := range c.Drops {
		// The kernel counts a socket's drops, not when each happened:
		// the event is at the close that reported them.
		e := s.Events().AppendEmpty()
		e.SetName("packets dropped")
		e.SetTimestamp(pcommon.NewTimestampFromTime(c.End))
		e.Attributes().PutStr(AttrDropReason, d.Reason)
		e.Attributes().PutInt(AttrDropPackets, int64(d.Packets))
	}
}
