package kernel

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// DNSEvent is one answered DNS transaction (struct dns_event).
type DNSEvent = ebpfnetDnsEvent

// DNSEventSize is the size of a dns_event record.
const DNSEventSize = int(unsafe.Sizeof(DNSEvent{}))

// decodeDNS makes the model's lookup of a transaction: its key, when its
// query was first sent, and its response (nil: a timeout).
func decodeDNS(k *ebpfnetDnsKey, queryNs uint64, q []byte, resp *DNSEvent, w wallClock) flow.DNSLookup {
	l := flow.DNSLookup{
		Side:     flow.DNSSide(k.Side),
		Client:   netip.AddrPortFrom(addr(k.Client, 0), k.ClientPort),
		Server:   netip.AddrPortFrom(addr(k.Server, 0), k.ServerPort),
		Protocol: k.Protocol, ID: k.Id, Ifindex: k.Ifindex,
		Start: w.time(queryNs), TimedOut: resp == nil,
	}
	if resp != nil {
		l.Latency = since(resp.ResponseNs, queryNs)
		l.Flags, l.Answers, l.Sends = resp.Flags, resp.Ancount, resp.Sends
	}
	var err error
	if l.Name, l.QType, l.QClass, err = flow.ParseQuestion(q); err != nil {
		l.QuestionErr = err.Error()
	}
	if l.Side == flow.DNSServer {
		l.Endpoint = l.Server.Addr()
	} else {
		l.Endpoint = l.Client.Addr()
	}
	l.TraceID, l.SpanID = flow.LookupIDs(&l)
	return l
}

// ReadDNS delivers answered DNS transactions to fn until ctx is done, then
// those still in the ring (detach first: a cancel loses nothing).
func (d *Datapath) ReadDNS(ctx context.Context, fn func(*flow.DNSLookup)) error {
	w, at := wallClock(WallClockOffset()), time.Now()
	var e DNSEvent
	return readRing(ctx, d.objs.DnsEvents, "dns_events", func(raw []byte) error {
		if len(raw) < DNSEventSize {
			return fmt.Errorf("dns event record too short: %d bytes, want %d", len(raw), DNSEventSize)
		}
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&e)), DNSEventSize), raw[:DNSEventSize])
		if time.Since(at) > time.Second { // the wall clock may be stepped
			w, at = wallClock(WallClockOffset()), time.Now()
		}
		l := decodeDNS(&e.Key, e.QueryNs, e.Question[:min(int(e.Qlen), len(e.Question))], &e, w)
		fn(&l)
		return nil
	})
}

// ExpireDNS appends, as timeouts, the queries waiting longer than timeout
// for their response, and forgets them (a response after that is not
// matched).
func (d *Datapath) ExpireDNS(dst []flow.DNSLookup, timeout time.Duration) ([]flow.DNSLookup, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return dst, ErrClosed
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return dst, fmt.Errorf("read CLOCK_MONOTONIC: %w", err)
	}
	now := uint64(ts.Nano())
	w := wallClock(WallClockOffset())
	var k ebpfnetDnsKey
	var v ebpfnetDnsQueryState
	var old []ebpfnetDnsKey
	it := d.objs.DnsPending.Iterate()
	for it.Next(&k, &v) {
		if since(now, v.QueryNs) < timeout {
			continue
		}
		old = append(old, k)
	}
	if err := it.Err(); err != nil {
		return dst, fmt.Errorf("iterate dns_pending: %w", err)
	}
	for i := range old {
		// Deleted with its value read once more: a response in between
		// took it (and reported it), and it is no timeout.
		if err := d.objs.DnsPending.LookupAndDelete(&old[i], &v); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			return dst, fmt.Errorf("expire DNS query: %w", err)
		}
		dst = append(dst, decodeDNS(&old[i], v.QueryNs, v.Question[:min(int(v.Qlen), len(v.Question))], nil, w))
	}
	return dst, nil
}
