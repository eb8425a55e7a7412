package convert

import (
	"strconv"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// recordDNS observes a lookup in its side's latency histogram, on the
// local pod's resource: a timeout as the timeout it waited
// (Options.DNSTimeout), with error.type timeout. The exemplar names the
// lookup's log record (its TraceID and SpanID).
func (c *Converter) recordDNS(l *flow.DNSLookup, now time.Time) {
	id := DNSLookupDuration
	if l.Side == flow.DNSServer {
		id = DNSServerDuration
	}
	o := &c.opts.Metrics[id]
	if !o.Enabled {
		return
	}
	k := seriesKey{metric: id, local: l.Endpoint, proto: l.Protocol, cause: l.ErrorType(), qtype: l.QType}
	if o.Attrs&WithPeerAddress != 0 {
		k.peer, k.service = l.Peer().Addr(), l.Service().Addr()
	}
	v := l.Latency
	if l.TimedOut {
		v = c.opts.DNSTimeout
	}
	c.store.observe(k, c.opts.Schema[id].Bounds, v.Seconds(), now, exemplar{trace: l.TraceID, span: l.SpanID, at: l.Start.Add(v)})
}

// putDNSSeriesAttrs writes a DNS histogram point's own attributes.
func putDNSSeriesAttrs(m pcommon.Map, k *seriesKey) {
	if k.cause != "" {
		m.PutStr(AttrErrorType, k.cause)
	}
	m.PutStr(AttrDNSQuestionType, flow.QTypeName(k.qtype))
	m.PutStr(AttrTransport, Transport(k.proto))
}

// putDNSRecord fills the log record of one lookup; its trace and span IDs
// are the ones the latency histogram's exemplars carry.
func putDNSRecord(lr plog.LogRecord, l *flow.DNSLookup, observed pcommon.Timestamp, timeout time.Duration, addrs addrStrings) {
	lr.SetEventName(EventDNS)
	lr.SetTimestamp(pcommon.NewTimestampFromTime(l.Start))
	lr.SetObservedTimestamp(observed)
	lr.SetTraceID(l.TraceID)
	lr.SetSpanID(l.SpanID)
	status := l.ErrorType()
	if status == "" {
		status = "NOERROR"
	}
	latency := l.Latency
	if l.TimedOut {
		latency = timeout
	}
	lr.Body().SetStr(l.Name + " " + flow.QTypeName(l.QType) + " " + status + " in " + latency.String())
	a := lr.Attributes()
	a.PutStr(AttrDNSQuestionName, l.Name)
	a.PutStr(AttrDNSQuestionType, flow.QTypeName(l.QType))
	if !l.TimedOut {
		a.PutStr(AttrDNSRCode, flow.RCodeName(l.RCode()))
		a.PutStr(AttrDNSOpcode, flow.OpcodeName(l.Opcode()))
		a.PutInt(AttrDNSAnswers, int64(l.Answers))
		a.PutBool(AttrDNSTruncated, l.Truncated())
	}
	if e := l.ErrorType(); e != "" {
		a.PutStr(AttrErrorType, e)
	}
	if l.TCPRetry {
		a.PutBool(AttrDNSTCPRetry, true)
	}
	a.PutDouble(AttrDNSLatency, latency.Seconds())
	a.PutStr(AttrDNSSide, l.Side.String())
	a.PutInt(AttrDNSSends, int64(l.Sends))
	a.PutInt(AttrDNSID, int64(l.ID))
	a.PutStr(AttrTransport, Transport(l.Protocol))
	a.PutStr(AttrClientAddress, addrs.get(l.Client.Addr()))
	a.PutInt(AttrClientPort, int64(l.Client.Port()))
	a.PutStr(AttrServerAddress, addrs.get(l.Server.Addr()))
	a.PutInt(AttrServerPort, int64(l.Server.Port()))
	a.PutStr(AttrPeerAddress, addrs.get(l.Peer().Addr()))
	if svc := l.Service(); svc.IsValid() {
		a.PutInt(AttrPeerPortAttr, int64(l.Backend.Port()))
	}
	if l.QuestionErr != "" {
		a.PutStr(AttrDNSQuestionName, "")
		lr.Body().SetStr("undecodable question (" + l.QuestionErr + ") id " + strconv.Itoa(int(l.ID)))
	}
}

// dnsResource is a lookup's local endpoint.
func dnsResource(l *flow.DNSLookup) logResource { return logResource{local: l.Endpoint} }
