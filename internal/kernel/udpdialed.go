package kernel

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/internal/flow"
)

// UDPDialedKey is a UDP destination a socket sent to, with the socket's
// local port (struct udp_dialed_key).
type UDPDialedKey = ebpfnetUdpDialedKey

// UDPDialed appends the UDP destinations sent to within maxIdle (by
// CLOCK_MONOTONIC, as the programs stamp them) and deletes older entries.
// The map is written by the cgroup/sendmsg4/6 and connect4/6 programs
// (AttachTCP); without them it stays empty.
func (d *Datapath) UDPDialed(dst []flow.UDPDialed, maxIdle time.Duration) ([]flow.UDPDialed, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return dst, ErrClosed
	}
	now := MonotonicNow() // the programs stamp with the coarse clock of the same base
	var stale []UDPDialedKey
	err := d.readUDPDialed(func(key *UDPDialedKey, last uint64) {
		if since(now, last) > maxIdle {
			stale = append(stale, *key)
			return
		}
		dst = append(dst, decodeUDPDialed(key))
	})
	if err != nil {
		return dst, fmt.Errorf("read udp_dialed: %w", err)
	}
	for i := range stale {
		if err := d.objs.UdpDialed.Delete(&stale[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return dst, fmt.Errorf("delete idle udp_dialed entry: %w", err)
		}
	}
	return dst, nil
}

// readUDPDialed calls visit for every entry of udp_dialed: batch lookups of
// drainBatch entries (a full map of 65,536 in 16 system calls), or two
// system calls per entry where the kernel has no batch operations.
func (d *Datapath) readUDPDialed(visit func(*UDPDialedKey, uint64)) error {
	m := d.objs.UdpDialed
	c := &d.conns
	if d.tables.batchOK {
		if c.udpKeys == nil {
			c.udpKeys, c.udpVals = make([]UDPDialedKey, drainBatch), make([]uint64, drainBatch)
		}
		var cursor ebpf.MapBatchCursor
		for {
			n, err := m.BatchLookup(&cursor, c.udpKeys, c.udpVals, nil)
			for i := 0; i < n; i++ {
				visit(&c.udpKeys[i], c.udpVals[i])
			}
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return nil
			}
			if errors.Is(err, ebpf.ErrNotSupported) && n == 0 {
				break // kernels before 5.6
			}
			if err != nil {
				return err
			}
		}
	}
	var (
		key  UDPDialedKey
		last uint64
	)
	it := m.Iterate()
	for it.Next(&key, &last) {
		visit(&key, last)
	}
	return it.Err()
}
