package testnet

import (
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// Netns is a named network namespace (as `ip netns add` makes them).
type Netns struct {
	Name string
}

// Do runs fn on an OS thread switched into the namespace. Sockets created in
// fn stay in the namespace and may be used from any goroutine afterwards.
func (n *Netns) Do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.Name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", n.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	defer netns.Set(orig) //nolint:errcheck // restoring; a failure leaves the thread locked and Go discards it
	return fn()
}

// Exec runs a command in the namespace and returns its output.
func (n *Netns) Exec(args ...string) (string, error) {
	return run(append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

// Run runs a command and returns its output; the error has the output.
func Run(args ...string) (string, error) { return run(args...) }

func run(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Must runs a command and fails the test if it fails.
func Must(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := run(args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}
