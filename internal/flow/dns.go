package flow

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// DNSSide is the side of a DNS transaction the local pod is on (enum
// dns_side in bpf/types.h; internal/kernel holds the values equal).
type DNSSide uint8

const (
	DNSClient DNSSide = 0 // the pod asked
	DNSServer DNSSide = 1 // the pod answered (a resolver)
)

func (s DNSSide) String() string {
	if s == DNSServer {
		return "server"
	}
	return "client"
}

// DNSLookup is one DNS transaction as the local pod's interface saw it: a
// query and its response, or a query unanswered within the timeout.
type DNSLookup struct {
	Side           DNSSide
	Client, Server netip.AddrPort
	Protocol       uint8 // ProtoUDP or ProtoTCP
	ID             uint16
	Ifindex        uint32
	Start          time.Time     // the query's first send
	Latency        time.Duration // response - query; 0 for a timeout
	TimedOut       bool
	// Flags of the response (rcode, TC, AA, RA; opcode): zero for a timeout.
	Flags   uint16
	Answers uint16
	Sends   uint8 // sends of the query (retransmissions with its ID + 1)
	// The question: name (decoded, lower-cased), type and class; Name is
	// empty when the question could not be decoded (QuestionErr says why).
	Name        string
	QType       uint16
	QClass      uint16
	QuestionErr string
	// Endpoint is the local pod's address (the client's for DNSClient, the
	// server's for DNSServer).
	Endpoint netip.Addr
	// Backend is, for a client that asked a Service ClusterIP (Server, as
	// its interface saw it: kube-dns), the resolver pod the node's NAT sent
	// the query to (conntrack, set by the receiver); invalid otherwise.
	Backend netip.AddrPort
	// TraceID and SpanID name the lookup's log record (the latency
	// histogram's exemplars carry them): LookupIDs, set at decode; a TCP
	// retry of a truncated UDP answer takes that lookup's trace ID
	// (TruncatedRetries, which sets TCPRetry).
	TraceID  [16]byte
	SpanID   [8]byte
	TCPRetry bool
}

// RCode is the response code (0 NOERROR); meaningless for a timeout.
func (l *DNSLookup) RCode() uint8 { return uint8(l.Flags & 0xf) }

// Opcode is the response's operation code (0 QUERY); meaningless for a
// timeout.
func (l *DNSLookup) Opcode() uint8 { return uint8(l.Flags>>11) & 0xf }

var opcodeNames = [...]string{"QUERY", "IQUERY", "STATUS", "OPCODE3", "NOTIFY", "UPDATE", "DSO"}

// OpcodeName names a DNS operation code (RFC 6895), or OPCODE<n>.
func OpcodeName(op uint8) string {
	if int(op) < len(opcodeNames) {
		return opcodeNames[op]
	}
	return "OPCODE" + strconv.Itoa(int(op))
}

// Truncated reports the TC bit: the answer did not fit (a UDP client
// retries over TCP).
func (l *DNSLookup) Truncated() bool { return l.Flags&0x0200 != 0 }

// ErrorType is error.type for the lookup: "timeout", the rcode's name for
// an error response, "" for NOERROR.
func (l *DNSLookup) ErrorType() string {
	if l.TimedOut {
		return "timeout"
	}
	if l.RCode() == 0 {
		return ""
	}
	return RCodeName(l.RCode())
}

// Peer is the other side: the resolver for a client (the pod that
// answered when the node's NAT sent the query to one: Backend), the client
// for a server.
func (l *DNSLookup) Peer() netip.AddrPort {
	switch {
	case l.Side == DNSServer:
		return l.Client
	case l.Backend.IsValid():
		return l.Backend
	}
	return l.Server
}

// Service is the Service ClusterIP a client asked when the node's NAT sent
// the query to a resolver pod (Backend); invalid otherwise.
func (l *DNSLookup) Service() netip.AddrPort {
	if l.Backend.IsValid() {
		return l.Server
	}
	return netip.AddrPort{}
}

var rcodeNames = [...]string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
	"NXRRSET", "NOTAUTH", "NOTZONE"}

// RCodeName names a DNS response code (RFC 6895), or RCODE<n>.
func RCodeName(rc uint8) string {
	if int(rc) < len(rcodeNames) {
		return rcodeNames[rc]
	}
	return "RCODE" + strconv.Itoa(int(rc))
}

var qtypeNames = map[uint16]string{1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
	33: "SRV", 35: "NAPTR", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS",
	99: "SPF", 251: "IXFR", 252: "AXFR", 255: "ANY", 257: "CAA"}

// QTypeName names a query type (A, AAAA, SRV, ...), or TYPE<n> (RFC 3597).
func QTypeName(t uint16) string {
	if n, ok := qtypeNames[t]; ok {
		return n
	}
	return "TYPE" + strconv.Itoa(int(t))
}

// maxName is the longest name RFC 1035 allows, in presentation form.
const maxName = 253

// ErrQuestion is the error of a question section that is not one.
var ErrQuestion = errors.New("malformed DNS question")

// ParseQuestion decodes the first question of a question section q (the
// message from offset 12 on): its name (labels; compression pointers,
// which count from the message's start, resolved within q), type and class.
func ParseQuestion(q []byte) (name string, qtype, qclass uint16, err error) {
	return parseQuestionFrom(q, 0)
}

// parseQuestionFrom decodes the question at start of section q.
func parseQuestionFrom(q []byte, start int) (name string, qtype, qclass uint16, err error) {
	var b strings.Builder
	pos, end := start, -1 // end: where the question continues after a pointer
	for jumps := 0; ; {
		if pos >= len(q) {
			return "", 0, 0, ErrQuestion
		}
		l := int(q[pos])
		switch {
		case l == 0:
			pos++
			if end < 0 {
				end = pos
			}
			if end+4 > len(q) {
				return "", 0, 0, ErrQuestion
			}
			if b.Len() == 0 {
				b.WriteByte('.')
			}
			return b.String(), binary.BigEndian.Uint16(q[end:]), binary.BigEndian.Uint16(q[end+2:]), nil
		case l&0xc0 == 0xc0:
			if pos+1 >= len(q) || jumps > 16 {
				return "", 0, 0, ErrQuestion
			}
			if end < 0 {
				end = pos + 2
			}
			off := int(binary.BigEndian.Uint16(q[pos:])&0x3fff) - 12 // q starts at the message's byte 12
			if off < 0 || off >= pos {
				return "", 0, 0, ErrQuestion // forward or into the header: no name there
			}
			pos, jumps = off, jumps+1
		case l&0xc0 != 0:
			return "", 0, 0, ErrQuestion // 0x40/0x80: extended label types
		default:
			if pos+1+l > len(q) || b.Len()+min(b.Len(), 1)+l > maxName {
				return "", 0, 0, ErrQuestion
			}
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(strings.ToLower(string(q[pos+1 : pos+1+l])))
			pos += 1 + l
		}
	}
}

// LookupIDs are the trace and span IDs of a lookup's log record, derived
// from the transaction (so the latency histogram's exemplar names it): the
// decode sets them on the lookup once.
func LookupIDs(l *DNSLookup) (trace [16]byte, span [8]byte) {
	var seed [64]byte
	copy(seed[:], "ebpfnetdns")
	c, s := l.Client.Addr().As16(), l.Server.Addr().As16()
	copy(seed[10:], c[:])
	copy(seed[26:], s[:])
	binary.BigEndian.PutUint16(seed[42:], l.Client.Port())
	binary.BigEndian.PutUint16(seed[44:], l.ID)
	binary.BigEndian.PutUint64(seed[46:], uint64(l.Start.UnixNano()))
	seed[54], seed[55] = byte(l.Side), l.Protocol
	binary.BigEndian.PutUint32(seed[56:], l.Ifindex)
	h := sha256.Sum256(seed[:])
	copy(trace[:], h[:16])
	copy(span[:], h[16:24])
	return trace, span
}

// TruncatedRetries links each TCP lookup to the truncated UDP answer it
// retries: the same client address, server, side, name and type, started
// within Window after it (RFC 7766: a client that gets TC retries over
// TCP). It remembers truncated answers across batches. Not safe for
// concurrent use.
type TruncatedRetries struct {
	Window time.Duration
	recent map[retryKey]truncatedAnswer
}

type retryKey struct {
	client, server netip.Addr
	side           DNSSide
	name           string
	qtype          uint16
}

type truncatedAnswer struct {
	trace [16]byte
	at    time.Time
}

// Link gives the batch's TCP retries their truncated answer's trace ID
// (and TCPRetry), and forgets truncated
// answers older than Window.
func (r *TruncatedRetries) Link(lookups []DNSLookup) {
	if r.recent == nil {
		r.recent = map[retryKey]truncatedAnswer{}
	}
	var latest time.Time
	for i := range lookups {
		l := &lookups[i]
		if l.Name == "" {
			continue
		}
		k := retryKey{l.Client.Addr(), l.Server.Addr(), l.Side, l.Name, l.QType}
		switch {
		case l.Protocol == ProtoUDP && l.Truncated():
			r.recent[k] = truncatedAnswer{trace: l.TraceID, at: l.Start}
		case l.Protocol == ProtoTCP:
			if t, ok := r.recent[k]; ok && !l.Start.Before(t.at) && l.Start.Sub(t.at) <= r.Window {
				l.TraceID, l.TCPRetry = t.trace, true
				delete(r.recent, k)
			}
		}
		if l.Start.After(latest) {
			latest = l.Start
		}
	}
	for k, t := range r.recent {
		if latest.Sub(t.at) > r.Window {
			delete(r.recent, k)
		}
	}
}
