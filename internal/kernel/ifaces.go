package kernel

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Selector decides which interfaces the programs attach to, and in which role.
type Selector struct {
	Include *regexp.Regexp // attach to interfaces whose name matches
	Exclude *regexp.Regexp // ...unless it matches this (may be nil)
	Uplink  *regexp.Regexp // matching included interfaces are uplinks; others endpoints
}

// Select returns whether name is watched and its role.
func (s Selector) Select(name string) (Role, bool) {
	if s.Include == nil || !s.Include.MatchString(name) {
		return 0, false
	}
	if s.Exclude != nil && s.Exclude.MatchString(name) {
		return 0, false
	}
	if s.Uplink != nil && s.Uplink.MatchString(name) {
		return RoleUplink, true
	}
	return RoleEndpoint, true
}

// WatchInterfaces attaches to every existing interface the selector picks
// and keeps doing so for interfaces created later (netlink link updates,
// so within milliseconds), detaching from removed ones, until ctx is done.
// Every link or route update invalidates the uplink programs' caches.
// It returns after the existing interfaces were handled. Errors on single
// interfaces go to onError; the watch goes on.
func (d *Datapath) WatchInterfaces(ctx context.Context, sel Selector, onError func(error)) error {
	w, err := subscribeNetlink()
	if err != nil {
		return err
	}
	// List after subscribing, so no interface created in between is missed.
	links, err := linkList()
	if err != nil {
		close(w.done)
		return fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		d.handleLink(l, false, sel, onError)
	}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-ctx.Done():
				return
			case err := <-w.errs:
				onError(fmt.Errorf("netlink updates: %w", err))
			case u, ok := <-w.links:
				if !ok {
					onError(fmt.Errorf("netlink link updates closed: new interfaces are no longer attached"))
					return
				}
				d.handleLink(u.Link, u.Header.Type == unix.RTM_DELLINK, sel, onError)
				d.routesChanged(onError) // a link going down moves routes too
			case _, ok := <-w.routes:
				if !ok {
					w.routes = nil // the interval's invalidation still bounds the caches
					onError(fmt.Errorf("netlink route updates closed: the uplink FIB cache follows route changes only every interval"))
					continue
				}
				d.routesChanged(onError)
			}
		}
	}()
	return nil
}

// netlinkWatch is a subscription to link and route updates, until done is
// closed; subscription errors arrive on errs (the first one pending).
type netlinkWatch struct {
	links  chan netlink.LinkUpdate
	routes chan netlink.RouteUpdate
	errs   chan error
	done   chan struct{}
}

func subscribeNetlink() (*netlinkWatch, error) {
	w := &netlinkWatch{links: make(chan netlink.LinkUpdate, 256), routes: make(chan netlink.RouteUpdate, 256),
		errs: make(chan error, 1), done: make(chan struct{})}
	onErr := func(err error) {
		select {
		case w.errs <- err:
		default:
		}
	}
	if err := netlink.LinkSubscribeWithOptions(w.links, w.done, netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return nil, fmt.Errorf("subscribe to netlink link updates: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(w.routes, w.done, netlink.RouteSubscribeOptions{ErrorCallback: onErr}); err != nil {
		close(w.done)
		return nil, fmt.Errorf("subscribe to netlink route updates: %w", err)
	}
	return w, nil
}

// routesChanged invalidates the uplink programs' caches.
func (d *Datapath) routesChanged(onError func(error)) {
	if err := d.InvalidateUplinkCaches(); err != nil && !errors.Is(err, ErrClosed) {
		onError(err)
	}
}

func (d *Datapath) handleLink(l netlink.Link, deleted bool, sel Selector, onError func(error)) {
	attrs := l.Attrs()
	if deleted {
		if err := d.Detach(attrs.Index); err != nil {
			onError(err)
		}
		return
	}
	role, ok := sel.Select(attrs.Name)
	if !ok {
		// Renamed out of the selection.
		if err := d.Detach(attrs.Index); err != nil {
			onError(err)
		}
		return
	}
	master := 0
	if attrs.MasterIndex > 0 {
		if m, err := netlink.LinkByIndex(attrs.MasterIndex); err == nil && m.Type() == "bridge" {
			master = attrs.MasterIndex
		}
	}
	if err := d.Attach(attrs.Index, attrs.Name, role, master); err != nil {
		onError(err)
	}
}

// InterfaceNames lists this network namespace's interfaces (for messages
// about the selection; nil when netlink cannot list them).
func InterfaceNames() []string {
	links, err := linkList()
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(links))
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// dumpRetries is how many times linkList dumps again when the kernel
// interrupted a dump (an interface came or went during it).
const dumpRetries = 10

// linkList lists this namespace's interfaces. A dump the kernel marks
// interrupted (NLM_F_DUMP_INTR: the interfaces changed while it ran, as on
// a node where pods start) may have missed or doubled one: it is dumped
// again, and only a dump interrupted every time is an error.
func linkList() ([]netlink.Link, error) {
	var err error
	for range dumpRetries {
		var links []netlink.Link
		if links, err = netlink.LinkList(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return links, err
		}
	}
	return nil, err
}
