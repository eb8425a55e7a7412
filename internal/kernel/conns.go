package kernel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
)

// ConnEvent is one closed TCP connection (struct conn_event in bpf/types.h).
type ConnEvent = ebpfnetConnEvent

// Roles and results of ConnEvent.
const (
	RoleClient = uint8(ebpfnetConnRoleROLE_CLIENT)
	RoleServer = uint8(ebpfnetConnRoleROLE_SERVER)

	ResultClosed         = uint8(ebpfnetConnResultRESULT_CLOSED)
	ResultRefused        = uint8(ebpfnetConnResultRESULT_REFUSED)
	ResultTimedOut       = uint8(ebpfnetConnResultRESULT_TIMED_OUT)
	ResultUnreachable    = uint8(ebpfnetConnResultRESULT_UNREACHABLE)
	ResultFailedOther    = uint8(ebpfnetConnResultRESULT_FAILED_OTHER)
	ResultReset          = uint8(ebpfnetConnResultRESULT_RESET)
	ResultNotEstablished = uint8(ebpfnetConnResultRESULT_NOT_ESTABLISHED)
)

// Reasons of the connection counters.
const (
	ReasonConnStateFull  = ebpfnetCounterReasonCOUNTER_CONN_STATE_FULL
	ReasonConnEventsFull = ebpfnetCounterReasonCOUNTER_CONN_EVENTS_FULL
)

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
	_, err := binary.Decode(raw[:ConnEventSize], binary.LittleEndian, e)
	return err
}

// AttachTCP attaches the TCP lifecycle programs (tracepoints, host-wide).
func (d *Datapath) AttachTCP() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if len(d.tcpLinks) > 0 {
		return nil
	}
	for name, prog := range map[string]*ebpf.Program{
		"inet_sock_set_state": d.objs.InetSockSetState,
		"tcp_receive_reset":   d.objs.TcpReceiveReset,
	} {
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			for _, l := range d.tcpLinks {
				l.Close()
			}
			d.tcpLinks = nil
			return fmt.Errorf("attach tp_btf/%s: %w", name, err)
		}
		d.tcpLinks = append(d.tcpLinks, l)
	}
	return nil
}

// ReadConns delivers closed connections to fn until ctx is done or the
// datapath is closed (a normal end, not an error).
func (d *Datapath) ReadConns(ctx context.Context, fn func(*ConnEvent)) error {
	rd, err := ringbuf.NewReader(d.objs.ConnEvents)
	if err != nil {
		return fmt.Errorf("open conn_events ringbuf: %w", err)
	}
	go func() {
		<-ctx.Done()
		rd.Close()
	}()
	var rec ringbuf.Record
	var e ConnEvent
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read conn_events: %w", err)
		}
		if err := DecodeConnEvent(rec.RawSample, &e); err != nil {
			return err
		}
		fn(&e)
	}
}

// sizeOf is btf.Sizeof, kept here so tests do not import btf themselves.
var sizeOf = btf.Sizeof
