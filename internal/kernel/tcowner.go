package kernel

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tcOwner makes this process's clsact filters its own, so that two agents
// on one node (a DaemonSet's surge update on a kernel without tcx) each
// count with their own filters, and neither removes the other's: the
// filters carry a random handle, in their handle and name, and the process
// holds an abstract unix socket of that name while it lives. Agents run in
// the host's network namespace, where every agent's socket is visible: a
// filter of ours whose socket nobody holds was left by a killed process.
type tcOwner struct {
	handle uint32
	fd     int
}

// tcOwnerTries bounds the draws of a handle another agent holds.
const tcOwnerTries = 16

func newTCOwner() (*tcOwner, error) {
	for range tcOwnerTries {
		h := rand.Uint32()
		if h == 0 {
			continue // not a filter handle
		}
		fd, err := bindOwnerSocket(h)
		if errors.Is(err, unix.EADDRINUSE) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("tc filter owner socket: %w", err)
		}
		return &tcOwner{handle: h, fd: fd}, nil
	}
	return nil, errors.New("tc filter owner socket: no free handle")
}

func (o *tcOwner) close() {
	if o != nil {
		_ = unix.Close(o.fd)
	}
}

func bindOwnerSocket(h uint32) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: fmt.Sprintf("@ebpfnet-tc-%08x", h)}); err != nil {
		_ = unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// ownerAlive reports whether a process holds handle h's socket.
func ownerAlive(h uint32) bool {
	fd, err := bindOwnerSocket(h)
	if err == nil {
		_ = unix.Close(fd)
		return false
	}
	return errors.Is(err, unix.EADDRINUSE)
}

// tcFilterName is the name of our filter of one direction and owner.
func tcFilterName(dir string, h uint32) string {
	return fmt.Sprintf("%s%s_%08x", tcFilterPrefix, dir, h)
}

// staleFilter reports whether a filter is ours and its owner is gone
// (names without an owner are of versions before owners: stale).
func staleFilter(name string) bool {
	rest, ok := strings.CutPrefix(name, tcFilterPrefix)
	if !ok {
		return false
	}
	i := strings.LastIndexByte(rest, '_')
	if i < 0 {
		return true
	}
	h, err := strconv.ParseUint(rest[i+1:], 16, 32)
	return err != nil || !ownerAlive(uint32(h))
}

// removeStaleFilters deletes the clsact filters that killed agents left
// behind, on every interface; a live agent's filters are left alone. It
// returns how many it removed.
func removeStaleFilters() (int, error) {
	links, err := linkList()
	if err != nil {
		return 0, fmt.Errorf("list interfaces for stale tc filters: %w", err)
	}
	removed := 0
	var errs []error
	for _, l := range links {
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			filters, err := netlink.FilterList(l, parent)
			if err != nil {
				continue // no clsact qdisc
			}
			for _, f := range filters {
				bf, ok := f.(*netlink.BpfFilter)
				if !ok || !staleFilter(bf.Name) {
					continue
				}
				if err := netlink.FilterDel(bf); err != nil && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("remove stale tc filter %s from %s: %w", bf.Name, l.Attrs().Name, err))
					continue
				}
				removed++
			}
		}
	}
	return removed, errors.Join(errs...)
}
