package kernel

import (
	"net/netip"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// The kernel's records become model values here, and only here: flow
// entries, closed-connection events, tracked connections and UDP
// destinations. Addresses are 16 bytes in network order with IPv4 mapped
// into IPv6 (bpf/types.h), times CLOCK_MONOTONIC ns.

// addr decodes an address of a kernel record as IPv4 when it is one: family
// 4, or an IPv6 socket's v4-mapped address (a dual-stack listener, such as
// Go's net.Listen("tcp", ":8080"), talks IPv4 on the wire as ::ffff:a.b.c.d;
// kept mapped, its spans named no pod and joined no flow).
func addr(b [16]byte, _ uint8) netip.Addr {
	return netip.AddrFrom16(b).Unmap()
}

// wallClock converts CLOCK_MONOTONIC ns to wall time; 0 stays the zero time.
type wallClock time.Duration // WallClockOffset

func (w wallClock) time(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(ns)+int64(w))
}

// decodeFlow makes the model's flow of a drained entry.
func decodeFlow(e *entry, w wallClock, iface string) flow.Flow {
	k := &e.Key
	return flow.Flow{
		Src:       netip.AddrPortFrom(addr(k.SrcAddr, k.Family), k.SrcPort),
		Dst:       netip.AddrPortFrom(addr(k.DstAddr, k.Family), k.DstPort),
		Protocol:  k.Protocol,
		Direction: flow.Direction(k.Direction),
		OnNode:    k.Observer == uint8(ebpfnetFlowObserverOBSERVER_UPLINK),
		Ifindex:   k.Ifindex,
		Interface: iface,
		Bytes:     e.Counts.Bytes,
		Packets:   e.Counts.Packets,
		Start:     time.Unix(0, int64(e.Counts.FirstSeenNs)+int64(w)),
		End:       time.Unix(0, int64(e.Counts.LastSeenNs)+int64(w)),
		TCPFlags:  uint8(e.Counts.TcpFlags),
	}
}

// decodeConn makes the model's connection of a closed-connection event;
// hostNetns is the inode of the node's network namespace (0: unknown), r
// the kernel's reason names (nil: none).
func decodeConn(e *ConnEvent, w wallClock, hostNetns uint32, r *Reasons) flow.Conn {
	c := flow.Conn{
		Cookie: e.Cookie, Role: flow.Role(e.Role), Result: flow.Result(e.Result),
		Local:  netip.AddrPortFrom(addr(e.LocalAddr, e.Family), e.LocalPort),
		Remote: netip.AddrPortFrom(addr(e.RemoteAddr, e.Family), e.RemotePort),
		Start:  w.time(e.StartNs), Established: w.time(e.EstablishedNs), End: w.time(e.EndNs),
		BytesSent: e.BytesAcked, BytesReceived: e.BytesReceived,
		SegsIn: e.SegsIn, SegsOut: e.SegsOut, Retransmits: e.TotalRetrans,
		SRTT: time.Duration(e.SrttUs) * time.Microsecond, MinRTT: time.Duration(e.MinRttUs) * time.Microsecond,
		ResetsReceived: e.ResetsReceived, ResetsSent: e.ResetsSent, SockErr: e.SkErr,
		ClientISN: e.ClientIsn, ServerISN: e.ServerIsn,
		PID: e.Pid, Comm: comm(e.Comm[:]), CgroupID: e.CgroupId,
		OnNode: hostNetns != 0 && e.Netns == hostNetns,
	}
	for i := range min(int(e.Bursts), len(e.BurstStartNs)) {
		c.RetransmitBursts = append(c.RetransmitBursts, flow.RetransmitBurst{Start: w.time(e.BurstStartNs[i]), Count: e.BurstCount[i]})
	}
	c.Drops = sockDrops(e.DropReason, e.DropCount, r)
	if e.ResetReason != 0 && r.HasResetReasons() {
		c.ResetReason = r.Reset(uint32(e.ResetReason) - 1)
	}
	if e.DialedFamily != 0 {
		c.Dialed = netip.AddrPortFrom(addr(e.DialedAddr, e.DialedFamily), e.DialedPort)
	}
	c.TraceID, c.SpanID, c.ParentSpanID = flow.ConnIDs(&c)
	return c
}

// comm is a process name: NUL-terminated, any bytes (made valid UTF-8).
func comm(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return strings.ToValidUTF8(string(out), "?")
}

// decodeLive makes the model's open connection of a tracked socket.
func decodeLive(cookie uint64, st *ConnState, hostNetns uint32) flow.LiveConn {
	return flow.LiveConn{
		Cookie: cookie, Role: flow.Role(st.Role),
		Local:       netip.AddrPortFrom(addr(st.LocalAddr, st.Family), st.LocalPort),
		Remote:      netip.AddrPortFrom(addr(st.RemoteAddr, st.Family), st.RemotePort),
		OnNode:      hostNetns != 0 && st.Netns == hostNetns,
		Retransmits: st.TotalRetrans, Established: st.EstablishedNs != 0,
		ClientISN: st.ClientIsn, ServerISN: st.ServerIsn,
		SRTT: time.Duration(st.SrttUs) * time.Microsecond,
	}
}

// decodeUDPDialed makes the model's UDP destination of a udp_dialed key.
func decodeUDPDialed(k *UDPDialedKey) flow.UDPDialed {
	return flow.UDPDialed{LocalPort: k.LocalPort, Dialed: netip.AddrPortFrom(addr(k.Addr, k.Family), k.Port)}
}
