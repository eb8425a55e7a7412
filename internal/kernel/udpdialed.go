package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// UDPDialedKey is a UDP destination a socket sent to, with the socket's
// local port (struct udp_dialed_key).
type UDPDialedKey = ebpfnetUdpDialedKey

// UDPDialed is a destination a local UDP socket sent to, as the application
// passed it (before any socket-level load balancer rewrote it).
type UDPDialed struct {
	LocalPort uint16
	Dialed    netip.AddrPort // IPv4 unmapped
}

// UDPDialed appends the UDP destinations sent to within maxIdle (by
// CLOCK_MONOTONIC, as the programs stamp them) and deletes older entries.
// The map is written by the cgroup/sendmsg4/6 and connect4/6 programs
// (AttachTCP); without them it stays empty.
func (d *Datapath) UDPDialed(dst []UDPDialed, maxIdle time.Duration) ([]UDPDialed, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return dst, ErrClosed
	}
	now := MonotonicNow() // the programs stamp with the coarse clock of the same base
	var stale []UDPDialedKey
	err := d.readUDPDialed(func(key *UDPDialedKey, last uint64) {
		if now > last && time.Duration(now-last) > maxIdle {
			stale = append(stale, *key)
			return
		}
		a := netip.AddrFrom16(key.Addr)
		if key.Family == 4 || a.Is4In6() {
			a = a.Unmap()
		}
		dst = append(dst, UDPDialed{LocalPort: key.LocalPort, Dialed: netip.AddrPortFrom(a, key.Port)})
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
	if d.batchOK {
		if d.udpKeys == nil {
			d.udpKeys, d.udpVals = make([]UDPDialedKey, drainBatch), make([]uint64, drainBatch)
		}
		var cursor ebpf.MapBatchCursor
		for {
			n, err := m.BatchLookup(&cursor, d.udpKeys, d.udpVals, nil)
			for i := 0; i < n; i++ {
				visit(&d.udpKeys[i], d.udpVals[i])
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
