package ebpfnetreceiver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
)

// countLease makes one agent at a time count a node's interfaces, so that
// a rolling update whose new agent starts before the old one stops (a
// DaemonSet's maxSurge) counts the overlap once: the agent that holds the
// lease counts; a new one loads its programs, waits, and attaches the
// moment the holder detaches (its final drain then has everything up to
// that moment). The lease is an abstract unix socket bound in the host
// network namespace, where every agent runs: the holder listens on it, a
// waiter connects and blocks reading until the holder closes it at detach,
// or the kernel does when the holder dies. Agents of different interface
// selections (or node names) do not share a lease.
type countLease struct {
	name string
	mu   sync.Mutex
	ln   *net.UnixListener // while held
}

func newCountLease(cfg *Config) *countLease {
	h := sha256.Sum256([]byte(nodeName(cfg) + "\x00" + cfg.Interfaces.Include + "\x00" + cfg.Interfaces.Exclude + "\x00" + cfg.Interfaces.Uplink))
	return &countLease{name: "@ebpfnet-count-" + hex.EncodeToString(h[:8])}
}

// tryTake takes the lease if nobody holds it.
func (l *countLease) tryTake() (bool, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: l.name, Net: "unix"})
	if errors.Is(err, syscall.EADDRINUSE) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("count lease %s: %w", l.name, err)
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	return true, nil
}

// wait returns once this agent holds the lease, or ctx's error.
func (l *countLease) wait(ctx context.Context) error {
	for {
		if ok, err := l.tryTake(); ok || err != nil {
			return err
		}
		conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: l.name, Net: "unix"})
		if err == nil {
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			_, _ = io.Copy(io.Discard, conn) // until the holder is gone
			stop()
			conn.Close()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// release gives the lease up (waiters take it at once); safe when not held.
func (l *countLease) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		_ = l.ln.Close()
		l.ln = nil
	}
}
