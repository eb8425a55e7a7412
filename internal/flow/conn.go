package flow

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"time"
)

// Role of the local socket in a TCP connection (enum conn_role in
// bpf/types.h; internal/kernel holds the values equal).
type Role uint8

const (
	// NoRole: no socket (a reset the stack sent for a segment no socket
	// took).
	NoRole Role = 0
	Client Role = 1
	Server Role = 2
)

func (r Role) String() string {
	switch r {
	case Server:
		return "server"
	case NoRole:
		return "none"
	}
	return "client"
}

// Result is how a connection ended (enum conn_result in bpf/types.h;
// internal/kernel holds the values equal).
type Result uint8

const (
	Closed         Result = 0
	Refused        Result = 1
	TimedOut       Result = 2
	Unreachable    Result = 3
	FailedOther    Result = 4
	Reset          Result = 5
	NotEstablished Result = 6
)

var resultNames = map[Result]string{
	Closed: "closed", Refused: "refused", TimedOut: "timed_out", Unreachable: "unreachable",
	FailedOther: "failed", Reset: "reset", NotEstablished: "not_established",
}

func (r Result) String() string { return resultNames[r] }

// Failed reports whether the connection never carried data as intended.
func (r Result) Failed() bool { return r != Closed }

// Conn is one TCP connection as one side saw it, from start to close.
type Conn struct {
	Cookie        uint64
	Role          Role
	Result        Result
	Local, Remote netip.AddrPort // as the socket sees them (a DNATed client sees what it dialed)
	// Dialed is what a client passed to connect(), recorded before any
	// socket-level load balancer rewrote it (then Remote is the backend);
	// invalid when not recorded.
	Dialed netip.AddrPort
	// Backend is, for a client whose Remote the node's conntrack translated
	// (kube-proxy's DNAT of a ClusterIP), where the connection went; invalid
	// otherwise (ConnJoins).
	Backend netip.AddrPort
	// PodUID and ContainerID: what the socket's cgroup path names (client
	// sides; ConnJoins, from CgroupID).
	PodUID, ContainerID string
	Start               time.Time // client: connect() (SYN_SENT); server: handshake complete (the server socket's birth)
	Established         time.Time // zero if never established
	End                 time.Time
	BytesSent           uint64 // acknowledged by the peer
	BytesReceived       uint64
	SegsIn              uint32
	SegsOut             uint32
	Retransmits         uint32
	SRTT, MinRTT        time.Duration
	ResetsReceived      uint8
	ResetsSent          uint8
	// ResetReason is the kernel's name (enum sk_rst_reason, without its
	// prefix) of the last reset the socket sent; empty on kernels before
	// 6.10 or when none was sent.
	ResetReason string
	// Drops are the socket's packets the kernel dropped, by reason (the
	// first 4 reasons; later ones are in the drop metrics only).
	Drops []SocketDrop
	// RetransmitBursts: retransmissions grouped by quiet gaps of 1 s
	// (tcp_retransmit_skb), at most 4; past that the last one grows.
	RetransmitBursts []RetransmitBurst
	SockErr          int32
	ClientISN        uint32
	ServerISN        uint32
	PID              uint32
	Comm             string
	CgroupID         uint64
	// OnNode is true for sockets in the node's own network namespace.
	OnNode bool

	TraceID      [16]byte
	SpanID       [8]byte // this side's span
	ParentSpanID [8]byte // server side: the client's span; zero on the client
}

// Peer is the address that served (the server side: the client): Backend
// when conntrack translated Remote, else Remote.
func (c *Conn) Peer() netip.AddrPort {
	if c.Backend.IsValid() {
		return c.Backend
	}
	return c.Remote
}

// Service is the Service address a client dialed when another address
// served it: Dialed (recorded before a socket-level load balancer rewrote
// it; Remote is then the backend), or Remote (the node's NAT translated it to
// Backend). Invalid when what the client dialed is what served it.
func (c *Conn) Service() netip.AddrPort {
	svc := c.Dialed
	if !svc.IsValid() && c.Backend.IsValid() {
		svc = c.Remote
	}
	if !svc.IsValid() || svc.Addr().Unmap() == c.Peer().Addr().Unmap() {
		return netip.AddrPort{}
	}
	return svc
}

// ConnIDs derives the trace ID and span IDs of a connection from its pair of
// initial sequence numbers. Both ends of one connection see the same pair,
// and NAT (including a DNATed ClusterIP) does not change it, so collectors on
// two nodes give the client and the server span of one connection the same
// trace ID, and the server span the client span as parent, with no
// coordination. A connect that never got an answer has no server ISN; its
// IDs also use the socket cookie so that retries do not share a trace.
func ConnIDs(c *Conn) (trace [16]byte, span, parent [8]byte) {
	var seed [8 + 8 + 8]byte
	copy(seed[:8], "ebpfnet1")
	binary.BigEndian.PutUint32(seed[8:], c.ClientISN)
	binary.BigEndian.PutUint32(seed[12:], c.ServerISN)
	if c.Established.IsZero() {
		binary.BigEndian.PutUint64(seed[16:], c.Cookie)
	}
	var buf [len(seed) + 8]byte // seed and label, without allocating
	copy(buf[:], seed[:])
	sum := func(label string) [32]byte { return sha256.Sum256(buf[:len(seed)+copy(buf[len(seed):], label)]) }
	t := sum("trace")
	copy(trace[:], t[:16])
	cs := sum("client")
	ss := sum("server")
	var clientSpan, serverSpan [8]byte
	copy(clientSpan[:], cs[:8])
	copy(serverSpan[:], ss[:8])
	if c.Role == Server {
		return trace, serverSpan, clientSpan
	}
	return trace, clientSpan, [8]byte{}
}

// SocketDrop is a number of a socket's packets dropped for one reason.
type SocketDrop struct {
	Reason  string
	Packets uint64
}

// RetransmitBurst is a run of retransmissions without a quiet gap.
type RetransmitBurst struct {
	Start time.Time
	Count uint32
}
