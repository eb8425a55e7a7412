package convert

import (
	"net/netip"
	"time"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// Connection metric attributes.
const (
	AttrTCPRole        = "ebpfnet.tcp.role"
	AttrTCPCloseReason = AttrTCPResult
)

// openConns is what the converter remembers of open connections, by socket
// cookie: counted as opened, and the retransmits counted so far.
type openConns map[uint64]*liveRef

type liveRef struct {
	retrans uint32
}

// connKey is the series of a connection (local, role, peer) in a
// connection metric; unselected attributes stay zero.
func (c *Converter) connKey(id Metric, onNode bool, local netip.Addr, role flow.Role, peer netip.Addr) seriesKey {
	k := seriesKey{metric: id, role: role}
	if !onNode {
		k.local = local
	}
	if c.opts.Metrics[id].Attrs&WithPeerAddress != 0 {
		k.peer = peer
	}
	return k
}

func (c *Converter) countConn(id Metric, onNode bool, local netip.Addr, role flow.Role, peer netip.Addr, n uint64, now time.Time) {
	if c.opts.Metrics[id].Enabled && n > 0 {
		c.store.add(c.connKey(id, onNode, local, role, peer), n, now)
	}
}

// recordConns records one interval: the connections open now (opened once,
// retransmits as they grow) and those closed in it.
func (c *Converter) recordConns(now time.Time, live []flow.LiveConn, closed []flow.Conn) {
	for i := range live {
		l := &live[i]
		if !l.Established {
			continue
		}
		local, peer := l.Local.Addr(), l.Remote.Addr()
		ref := c.conns[l.Cookie]
		if ref == nil {
			ref = &liveRef{}
			c.conns[l.Cookie] = ref
			c.countConn(ConnsOpened, l.OnNode, local, l.Role, peer, 1, now)
		}
		if l.Retransmits > ref.retrans {
			c.countConn(Retransmits, l.OnNode, local, l.Role, peer, uint64(l.Retransmits-ref.retrans), now)
			ref.retrans = l.Retransmits
		}
	}
	for i := range closed {
		c.recordClosed(&closed[i], now)
	}
	c.conns.forgetLost(live)
}

func (c *Converter) recordClosed(cn *flow.Conn, now time.Time) {
	local, peer := cn.Local.Addr(), cn.Remote.Addr()
	ref := c.conns[cn.Cookie]
	delete(c.conns, cn.Cookie)
	if !cn.Established.IsZero() && ref == nil {
		c.countConn(ConnsOpened, cn.OnNode, local, cn.Role, peer, 1, now)
	}
	if c.opts.Metrics[ConnsClosed].Enabled {
		k := c.connKey(ConnsClosed, cn.OnNode, local, cn.Role, peer)
		k.result = cn.Result
		c.store.add(k, 1, now)
	}
	reported := uint32(0)
	if ref != nil {
		reported = ref.retrans
	}
	if cn.Retransmits > reported {
		c.countConn(Retransmits, cn.OnNode, local, cn.Role, peer, uint64(cn.Retransmits-reported), now)
	}
	if c.opts.Metrics[ResetsSent].Enabled && cn.ResetsSent > 0 {
		k := c.connKey(ResetsSent, cn.OnNode, local, cn.Role, peer)
		k.cause = cn.ResetReason
		c.store.add(k, uint64(cn.ResetsSent), now)
	}
	c.countConn(ResetsReceived, cn.OnNode, local, cn.Role, peer, uint64(cn.ResetsReceived), now)
	c.observeConn(ConnDuration, cn, cn.End.Sub(cn.Start).Seconds(), now)
	if cn.SRTT > 0 {
		c.observeConn(ConnRTT, cn, cn.SRTT.Seconds(), now)
	}
}

func (c *Converter) observeConn(id Metric, cn *flow.Conn, v float64, now time.Time) {
	if c.opts.Metrics[id].Enabled {
		k := c.connKey(id, cn.OnNode, cn.Local.Addr(), cn.Role, cn.Remote.Addr())
		c.store.observe(k, c.opts.Schema[id].Bounds, v, now, exemplar{trace: cn.TraceID, span: cn.SpanID, at: cn.End})
	}
}

// forgetLost drops open connections not seen for long (their close was
// lost): bounded state.
func (o openConns) forgetLost(live []flow.LiveConn) {
	if len(o) <= 4*len(live)+1024 {
		return
	}
	alive := make(map[uint64]bool, len(live))
	for i := range live {
		alive[live[i].Cookie] = true
	}
	for k := range o {
		if !alive[k] {
			delete(o, k)
		}
	}
}
