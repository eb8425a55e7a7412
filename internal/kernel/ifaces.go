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
// Every link or route update invalidates the uplink FIB cache.
// It returns after the existing interfaces were handled. Errors on single
// interfaces go to onError; the watch goes on.
func (d *Datapath) WatchInterfaces(ctx context.Context, sel Selector, onError func(error)) error {
	updates, routes, subErr, done, err := subscribeNetlink()
	if err != nil {
		return err
	}
	// List after subscribing, so no interface created in between is missed.
	links, err := netlink.LinkList()
	if err != nil {
		close(done)
		return fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		d.handleLink(l, false, sel, onError)
	}
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case err := <-subErr:
				onError(fmt.Errorf("netlink link updates: %w", err))
			case u, ok := <-updates:
				if !ok {
					onError(fmt.Errorf("netlink link updates closed: new interfaces are no longer attached"))
					return
				}
				d.handleLink(u.Link, u.Header.Type == unix.RTM_DELLINK, sel, onError)
				d.routesChanged(onError)
			case _, ok := <-routes:
				if !ok {
					routes = nil // the interval's invalidation still bounds the FIB cache
					onError(fmt.Errorf("netlink route updates closed: the uplink FIB cache follows route changes only every interval"))
					continue
				}
				d.routesChanged(onError)
			}
		}
	}()
	return nil
}

// subscribeNetlink subscribes to link and route updates until done is
// closed; subscription errors arrive on subErr (the first one pending).
func subscribeNetlink() (chan netlink.LinkUpdate, chan netlink.RouteUpdate, chan error, chan struct{}, error) {
	updates, routes := make(chan netlink.LinkUpdate, 256), make(chan netlink.RouteUpdate, 256)
	done, subErr := make(chan struct{}), make(chan error, 1)
	onErr := func(err error) {
		select {
		case subErr <- err:
		default:
		}
	}
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("subscribe to netlink link updates: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{ErrorCallback: onErr}); err != nil {
		close(done)
		return nil, nil, nil, nil, fmt.Errorf("subscribe to netlink route updates: %w", err)
	}
	return updates, routes, subErr, done, nil
}

// routesChanged invalidates the uplink programs' FIB cache.
func (d *Datapath) routesChanged(onError func(error)) {
	if err := d.InvalidateFIB(); err != nil && !errors.Is(err, ErrClosed) {
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
	links, err := netlink.LinkList()
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(links))
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}
