package flow

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/internal/kernel"
)

// Role of the local socket in a TCP connection.
type Role uint8

const (
	Client Role = Role(kernel.RoleClient)
	Server Role = Role(kernel.RoleServer)
)

// Result is how a connection ended.
type Result uint8

const (
	Closed         = Result(kernel.ResultClosed)
	Refused        = Result(kernel.ResultRefused)
	TimedOut       = Result(kernel.ResultTimedOut)
	Unreachable    = Result(kernel.ResultUnreachable)
	FailedOther    = Result(kernel.ResultFailedOther)
	Reset          = Result(kernel.ResultReset)
	NotEstablished = Result(kernel.ResultNotEstablished)
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
	// otherwise (set by the receiver).
	Backend netip.AddrPort
	// PodUID and ContainerID: what the socket's cgroup path names (client
	// sides; set by the receiver from CgroupID).
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

// ConnFromKernel builds a Conn from a closed-connection event. offset
// converts CLOCK_MONOTONIC to wall time; hostNetns is the inode of the
// node's network namespace.
func ConnFromKernel(e *kernel.ConnEvent, offset time.Duration, hostNetns uint32) Conn {
	wall := func(ns uint64) time.Time {
		if ns == 0 {
			return time.Time{}
		}
		return time.Unix(0, int64(ns)+int64(offset))
	}
	addr := func(b [16]byte) netip.Addr {
		a := netip.AddrFrom16(b)
		if e.Family == 4 {
			return a.Unmap()
		}
		return a
	}
	comm := make([]byte, 0, len(e.Comm))
	for _, c := range e.Comm {
		if c == 0 {
			break
		}
		comm = append(comm, byte(c))
	}
	c := Conn{
		Cookie: e.Cookie, Role: Role(e.Role), Result: Result(e.Result),
		Local:  netip.AddrPortFrom(addr(e.LocalAddr), e.LocalPort),
		Remote: netip.AddrPortFrom(addr(e.RemoteAddr), e.RemotePort),
		Start:  wall(e.StartNs), Established: wall(e.EstablishedNs), End: wall(e.EndNs),
		BytesSent: e.BytesAcked, BytesReceived: e.BytesReceived,
		SegsIn: e.SegsIn, SegsOut: e.SegsOut, Retransmits: e.TotalRetrans,
		SRTT: time.Duration(e.SrttUs) * time.Microsecond, MinRTT: time.Duration(e.MinRttUs) * time.Microsecond,
		ResetsReceived: e.ResetsReceived, ResetsSent: e.ResetsSent, SockErr: e.SkErr,
		ClientISN: e.ClientIsn, ServerISN: e.ServerIsn,
		PID: e.Pid, Comm: strings.ToValidUTF8(string(comm), "?"), CgroupID: e.CgroupId,
		OnNode: hostNetns != 0 && e.Netns == hostNetns,
	}
	for i := 0; i < int(min(e.Bursts, uint32(len(e.BurstStartNs)))); i++ {
		c.RetransmitBursts = append(c.RetransmitBursts, RetransmitBurst{Start: wall(e.BurstStartNs[i]), Count: e.BurstCount[i]})
	}
	if e.DialedFamily != 0 {
		d := netip.AddrFrom16(e.DialedAddr)
		if e.DialedFamily == 4 || d.Is4In6() {
			d = d.Unmap()
		}
		c.Dialed = netip.AddrPortFrom(d, e.DialedPort)
	}
	c.TraceID, c.SpanID, c.ParentSpanID = ConnIDs(&c)
	return c
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

// RetransmitBurst is a run of retransmissions without a quiet gap.
type RetransmitBurst struct {
	Start time.Time
	Count uint32
}
