package kernel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/mountinfo"
)

// ConnEvent is one closed TCP connection (struct conn_event in bpf/types.h).
type ConnEvent = ebpfnetConnEvent

// connections is the TCP side of the datapath: the links of the TCP
// programs and the buffers of the reads of their maps. Guarded by
// Datapath.mu.
type connections struct {
	cgroup  string      // Options.CgroupPath
	links   []link.Link // tracepoints and cgroup programs
	keys    []uint64    // batch reads of conns
	vals    []ConnState
	udpKeys []UDPDialedKey // batch reads of udp_dialed
	udpVals []uint64
}

// ConnEventSize is the size of a conn_event record.
const ConnEventSize = int(unsafe.Sizeof(ConnEvent{}))

// ErrShortRecord is returned for a ringbuf record smaller than a conn_event.
var ErrShortRecord = errors.New("conn event record too short")

// DecodeConnEvent decodes a raw conn_events record (little-endian, the
// layout bpf2go generated from struct conn_event).
func DecodeConnEvent(raw []byte, e *ConnEvent) error {
	if len(raw) < ConnEventSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrShortRecord, len(raw), ConnEventSize)
	}
	// The record is a struct conn_event in the host's byte order (the
	// programs are built for bpfel; so is every host that runs them), and
	// ConnEvent is its bpf2go mirror without pointers, its layout checked
	// against the BTF in tests: copy the bytes (binary.Decode through
	// reflection was a hot spot of the churn bench's CPU profile:
	// docs/BENCHMARKS.md, "Design measurements").
	copy(unsafe.Slice((*byte)(unsafe.Pointer(e)), ConnEventSize), raw[:ConnEventSize])
	return nil
}

// AttachTCP attaches the TCP lifecycle programs (tracepoints, host-wide).
func (d *Datapath) AttachTCP() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if len(d.conns.links) > 0 {
		return nil
	}
	if err := d.attachTracepointsLocked(); err != nil {
		return err
	}
	return d.attachSockopsLocked()
}

// attachTracepointsLocked attaches the tp_btf programs: they see every TCP
// socket on the host, including those opened before the receiver started.
func (d *Datapath) attachTracepointsLocked() error {
	progs := map[string]*ebpf.Program{
		"inet_sock_set_state": d.objs.InetSockSetState,
		"tcp_receive_reset":   d.objs.TcpReceiveReset,
		"tcp_send_reset":      d.sendReset,
		"tcp_retransmit_skb":  d.retransmit,
	}
	if d.kfreeSkb != nil {
		progs["kfree_skb"] = d.kfreeSkb
	}
	for name, prog := range progs {
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			for _, l := range d.conns.links {
				l.Close()
			}
			d.conns.links = nil
			return fmt.Errorf("attach tp_btf/%s: %w", name, err)
		}
		d.conns.links = append(d.conns.links, l)
	}
	return nil
}

// attachSockopsLocked attaches sockops to the cgroup2 root: every socket
// created afterwards in any cgroup, with callbacks no softirq can make the
// kernel skip (see handle_sockops in bpf/tcp.h).
func (d *Datapath) attachSockopsLocked() error {
	root, err := Cgroup2Dir(d.conns.cgroup)
	if err != nil {
		return d.failTCP(fmt.Errorf("sockops needs the cgroup2 hierarchy: %w", err))
	}
	// connect4/6 and sendmsg4/6 first: cgroup programs of one cgroup run in
	// attach order, and these must see the address before a socket-level
	// load balancer attached later rewrites it.
	for _, a := range []struct {
		name   string
		attach ebpf.AttachType
		prog   *ebpf.Program
	}{
		{"cgroup/connect4", ebpf.AttachCGroupInet4Connect, d.objs.RecordConnect4},
		{"cgroup/connect6", ebpf.AttachCGroupInet6Connect, d.objs.RecordConnect6},
		{"cgroup/sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, d.objs.RecordSendmsg4},
		{"cgroup/sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, d.objs.RecordSendmsg6},
		{"sockops", ebpf.AttachCGroupSockOps, d.objs.TcpSockops},
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: a.attach, Program: a.prog})
		if err != nil {
			return d.failTCP(fmt.Errorf("attach %s to %s: %w", a.name, root, err))
		}
		d.conns.links = append(d.conns.links, l)
	}
	return nil
}

func (d *Datapath) failTCP(err error) error {
	for _, l := range d.conns.links {
		l.Close()
	}
	d.conns.links = nil
	return err
}

// Cgroup2Dir returns the cgroup2 directory to attach to: path itself when
// it is a cgroup2 mount or directory; else its unified/ child when that is
// (the host's /sys/fs/cgroup mounted into a container, on a cgroup v1 hybrid
// host); else an error naming path. An empty path is Cgroup2Root.
func Cgroup2Dir(path string) (string, error) {
	if path == "" {
		return Cgroup2Root()
	}
	for _, p := range []string{path, filepath.Join(path, "unified")} {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p, nil
		}
	}
	return "", fmt.Errorf("cgroup_path %s is not a cgroup2 hierarchy, nor is %s/unified (mount the host's cgroup2 mount there)", path, path)
}

// Cgroup2Root returns the mount point of the cgroup2 hierarchy, read from
// /proc/self/mountinfo (it is /sys/fs/cgroup on most hosts, and elsewhere on
// hybrid ones, e.g. /sys/fs/cgroup/unified).
func Cgroup2Root() (string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	return cgroup2FromMountinfo(string(data))
}

func cgroup2FromMountinfo(data string) (string, error) {
	for _, m := range mountinfo.Parse(data) {
		if m.FSType == "cgroup2" {
			return m.Point, nil
		}
	}
	return "", errors.New("no cgroup2 mount in /proc/self/mountinfo")
}

// connReadPeriod bounds how long a closed connection waits in the ring
// before ReadConns delivers it.
const connReadPeriod = 100 * time.Millisecond

// ReadConns delivers closed connections to fn, as the model's connections,
// until ctx is done (a normal end, not an error), and then the events still
// in the ring: detach first, and a cancel loses nothing.
// The connection passed to fn is not used after fn returns.
func (d *Datapath) ReadConns(ctx context.Context, fn func(*flow.Conn)) error {
	w, at := wallClock(WallClockOffset()), time.Now()
	return d.readEvents(ctx, func(e *ConnEvent) {
		if time.Since(at) > time.Second { // the wall clock may be stepped
			w, at = wallClock(WallClockOffset()), time.Now()
		}
		c := decodeConn(e, w, d.hostNetns, d.reasons)
		if c.ResetsSent > 0 && c.ResetReason == "" && d.reasons.HasResetReasons() && d.variants.resetReason {
			c.ResetReason = d.resetAfterClose(c.Cookie)
		}
		fn(&c)
	})
}

// resetAfterClose is the reason of the reset a socket sent after its close
// (reset_reasons), or "" when none is recorded.
func (d *Datapath) resetAfterClose(cookie uint64) string {
	var reason uint32
	if err := d.objs.ResetReasons.LookupAndDelete(cookie, &reason); err != nil {
		return ""
	}
	return d.reasons.Reset(reason)
}

// readEvents delivers the raw closed-connection events.
func (d *Datapath) readEvents(ctx context.Context, fn func(*ConnEvent)) error {
	var e ConnEvent
	return readRing(ctx, d.objs.ConnEvents, "conn_events", func(raw []byte) error {
		if err := DecodeConnEvent(raw, &e); err != nil {
			return err
		}
		fn(&e)
		return nil
	})
}

// readRing delivers the records of a ring (conn_events, dns_events) to fn
// until ctx is done, then those still in it: a cancel flushes, and the
// caller detaches before it cancels, so nothing is lost at shutdown. The
// programs wake the reader only when a quarter of the ring is in use;
// otherwise records wait at most connReadPeriod. An error of fn ends it.
func readRing(ctx context.Context, m *ebpf.Map, name string, fn func(raw []byte) error) error {
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		return fmt.Errorf("open %s ringbuf: %w", name, err)
	}
	defer rd.Close()
	stop := context.AfterFunc(ctx, func() { _ = rd.Flush() })
	defer stop()
	var rec ringbuf.Record
	for {
		rd.SetDeadline(time.Now().Add(connReadPeriod))
		if err := rd.ReadInto(&rec); err != nil {
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				continue
			case errors.Is(err, ringbuf.ErrFlushed) && ctx.Err() != nil:
				return nil
			case errors.Is(err, ringbuf.ErrFlushed):
				continue
			}
			return fmt.Errorf("read %s: %w", name, err)
		}
		if err := fn(rec.RawSample); err != nil {
			return err
		}
	}
}

// sizeOf is btf.Sizeof, kept here so tests do not import btf themselves.
var sizeOf = btf.Sizeof

// ConnState is a TCP socket the kernel side tracks (struct conn_state).
type ConnState = ebpfnetConnState

// LiveConns appends every tracked connection to dst (a read, not a drain:
// the kernel deletes them at close).
func (d *Datapath) LiveConns(dst []flow.LiveConn) ([]flow.LiveConn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return dst, ErrClosed
	}
	c := &d.conns
	if c.keys == nil {
		c.keys, c.vals = make([]uint64, drainBatch), make([]ConnState, drainBatch)
	}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.Conns.BatchLookup(&cursor, c.keys, c.vals, nil)
		for i := 0; i < n; i++ {
			dst = append(dst, decodeLive(c.keys[i], &c.vals[i], d.hostNetns))
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return dst, nil
		}
		if err != nil {
			return dst, fmt.Errorf("read conns map: %w", err)
		}
	}
}
