package kernel

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AttachMode selects how programs are attached to interfaces.
type AttachMode string

const (
	// AttachAuto uses tcx where the kernel has it (6.6+), clsact otherwise.
	AttachAuto AttachMode = "auto"
	// AttachTCX uses tcx links: detached by the kernel when the process exits.
	AttachTCX AttachMode = "tcx"
	// AttachTC uses classic clsact bpf filters added through netlink.
	AttachTC AttachMode = "tc"
)

// tcFilterPrefix names our clsact filters (tcFilterName) so that a later
// start can remove filters a killed process left behind (tcx links need no
// such cleanup).
const tcFilterPrefix = "ebpfnet_"

// tcFilterPriority is the priority of our clsact filters.
const tcFilterPriority = 1

// attachments is the interface side of the datapath: the programs attached
// to each interface, the bridges of endpoint ports, and the names of
// interfaces (kept for two drains after a detach: their last flows are still
// reported). Guarded by Datapath.mu.
type attachments struct {
	mode      AttachMode
	owner     *tcOwner // tc mode: whose filters ours are
	links     map[int]*attachment
	masters   map[int]int // bridge ifindex -> number of attached endpoint ports
	uplinkGen uint32      // fib_gen: bumped whenever what the uplink FIB cache answers may have changed
	names     map[int]string
	gone      map[int]int // detached ifindex -> Datapath drains at detach
}

func newAttachments() attachments {
	return attachments{links: make(map[int]*attachment), masters: make(map[int]int),
		names: make(map[int]string), gone: make(map[int]int)}
}

// forget drops the names of interfaces detached before the previous drain:
// their last flows were reported by it.
func (a *attachments) forget(drains int) {
	for ifindex, at := range a.gone {
		if drains-at > 2 {
			delete(a.gone, ifindex)
			delete(a.names, ifindex)
		}
	}
}

type attachment struct {
	name   string
	role   Role
	master int
	at     int                  // the Datapath's drains when attached: new in the interval drained next (DrainFlows learns it first)
	links  []link.Link          // tcx
	tc     []*netlink.BpfFilter // clsact
}

// ProbeTCX reports whether the kernel supports tcx links, by attaching a
// two-instruction program to the loopback interface and detaching it.
func ProbeTCX() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("load tcx probe program: %w", err)
	}
	defer prog.Close()
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo for tcx probe: %w", err)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: lo.Attrs().Index, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return err
	}
	return l.Close()
}

// SetMode chooses the attach mode; AttachAuto probes for tcx. It returns the
// mode chosen and, when auto fell back, the reason.
func (d *Datapath) SetMode(mode AttachMode) (AttachMode, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var fallback error
	switch mode {
	case AttachTCX, AttachTC:
	case AttachAuto, "":
		mode = AttachTCX
		if err := ProbeTCX(); err != nil {
			mode = AttachTC
			fallback = fmt.Errorf("tcx not available (%w), using clsact filters", err)
		}
	default:
		return "", fmt.Errorf("unknown attach mode %q", mode)
	}
	d.ifaces.mode = mode
	// Whatever the mode: a killed tc-mode agent's filters would count on.
	if _, err := removeStaleFilters(); err != nil {
		return "", err
	}
	if mode == AttachTC && d.ifaces.owner == nil {
		owner, err := newTCOwner()
		if err != nil {
			return "", err
		}
		d.ifaces.owner = owner
	}
	return mode, fallback
}

// Attach attaches the programs of role to the interface. master is the
// ifindex of the bridge the interface is enslaved to, or 0. Attaching an
// interface that is attached already is a no-op.
func (d *Datapath) Attach(ifindex int, name string, role Role, master int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if a, ok := d.ifaces.links[ifindex]; ok {
		return d.setMasterLocked(a, ifindex, master)
	}
	ingress, egress := d.objs.EndpointIngress, d.objs.EndpointEgress
	if role == RoleUplink {
		ingress, egress = d.objs.UplinkIngress, d.objs.UplinkEgress
	}
	a := &attachment{name: name, role: role, at: d.tables.drains}
	var err error
	if d.ifaces.mode == AttachTC {
		err = a.attachTC(ifindex, d.ifaces.owner.handle, ingress, egress)
	} else {
		err = a.attachTCX(ifindex, ingress, egress)
	}
	if err != nil {
		a.close(ifindex)
		return fmt.Errorf("attach %s to %s: %w", d.ifaces.mode, name, err)
	}
	if role == RoleEndpoint {
		if err := d.markCounted(ifindex, countedEndpoint); err != nil {
			a.close(ifindex)
			return fmt.Errorf("attach to %s: %w", name, err)
		}
	}
	d.ifaces.links[ifindex] = a
	d.ifaces.names[ifindex] = name
	delete(d.ifaces.gone, ifindex)
	return d.setMasterLocked(a, ifindex, master)
}

// setMasterLocked records that an endpoint interface is (or no longer is) a
// port of bridge master: packets routed from that bridge were counted at
// its ports, so the uplink programs skip them.
func (d *Datapath) setMasterLocked(a *attachment, ifindex, master int) error {
	if a.role != RoleEndpoint || a.master == master {
		return nil
	}
	d.releaseMasterLocked(a)
	if master <= 0 {
		return nil
	}
	if d.ifaces.masters[master] == 0 {
		if err := d.markCounted(master, countedBridge); err != nil {
			return fmt.Errorf("mark bridge %d of %s: %w", master, a.name, err)
		}
	}
	d.ifaces.masters[master]++
	a.master = master
	return nil
}

func (d *Datapath) releaseMasterLocked(a *attachment) {
	if a.master <= 0 {
		return
	}
	d.ifaces.masters[a.master]--
	if d.ifaces.masters[a.master] <= 0 {
		delete(d.ifaces.masters, a.master)
		d.unmarkCounted(a.master)
	}
	a.master = 0
}

// Detach detaches the programs from the interface, if attached.
func (d *Datapath) Detach(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.detachLocked(ifindex)
}

// InterfaceName returns the name of an attached interface, or of one detached
// since the previous Drain (its last flows are still being reported).
func (d *Datapath) InterfaceName(ifindex uint32) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ifaces.names[int(ifindex)]
}

// Attached returns the names of the attached interfaces by ifindex.
func (d *Datapath) Attached() map[int]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[int]string, len(d.ifaces.links))
	for i, a := range d.ifaces.links {
		out[i] = a.name
	}
	return out
}

func (d *Datapath) detachLocked(ifindex int) error {
	a, ok := d.ifaces.links[ifindex]
	if !ok {
		return nil
	}
	delete(d.ifaces.links, ifindex)
	d.ifaces.gone[ifindex] = d.tables.drains
	if a.role == RoleEndpoint {
		d.unmarkCounted(ifindex)
		d.releaseMasterLocked(a)
	}
	return a.close(ifindex)
}

// Values of counted_ifaces: the drop program attributes a drop on an
// endpoint interface to its pod, not one on a bridge.
const (
	countedEndpoint uint8 = 1
	countedBridge   uint8 = 2
)

func (d *Datapath) markCounted(ifindex int, kind uint8) error {
	if err := d.objs.CountedIfaces.Put(uint32(ifindex), kind); err != nil {
		return err
	}
	return d.invalidateUplinkCachesLocked()
}

func (d *Datapath) unmarkCounted(ifindex int) {
	// The entry may be gone with a deleted interface's index; ignore.
	_ = d.objs.CountedIfaces.Delete(uint32(ifindex))
	_ = d.invalidateUplinkCachesLocked() // only fails on a closed datapath
}

// InvalidateUplinkCaches makes every answer of the uplink programs' caches
// stale (the routes changed): the next packet to each destination asks the
// FIB, the next from each interface counted_ifaces.
func (d *Datapath) InvalidateUplinkCaches() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	return d.invalidateUplinkCachesLocked()
}

func (d *Datapath) invalidateUplinkCachesLocked() error {
	d.ifaces.uplinkGen++
	if err := d.objs.UplinkGen.Set(d.ifaces.uplinkGen); err != nil {
		return fmt.Errorf("invalidate the uplink caches: %w", err)
	}
	return nil
}

func (a *attachment) attachTCX(ifindex int, ingress, egress *ebpf.Program) error {
	for _, p := range []struct {
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{{ingress, ebpf.AttachTCXIngress}, {egress, ebpf.AttachTCXEgress}} {
		// Head: see every packet before programs that may redirect it.
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: p.prog, Attach: p.typ, Anchor: link.Head()})
		if err != nil {
			return err
		}
		a.links = append(a.links, l)
	}
	return nil
}

// attachTC adds our filters, with the owner's handle: at one priority,
// each agent's own; every program returns TC_ACT_UNSPEC, so cls_bpf runs
// the next agent's too.
func (a *attachment) attachTC(ifindex int, handle uint32, ingress, egress *ebpf.Program) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	for _, p := range []struct {
		prog   *ebpf.Program
		parent uint32
		dir    string
	}{{ingress, netlink.HANDLE_MIN_INGRESS, "ingress"}, {egress, netlink.HANDLE_MIN_EGRESS, "egress"}} {
		f := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{
				LinkIndex: ifindex, Parent: p.parent, Handle: handle,
				Protocol: unix.ETH_P_ALL, Priority: tcFilterPriority,
			},
			Fd: p.prog.FD(), Name: tcFilterName(p.dir, handle), DirectAction: true,
		}
		if err := netlink.FilterReplace(f); err != nil {
			return fmt.Errorf("add %s filter: %w", p.dir, err)
		}
		a.tc = append(a.tc, f)
	}
	return nil
}

func (a *attachment) close(ifindex int) error {
	var errs []error
	for _, l := range a.links {
		errs = append(errs, l.Close())
	}
	for _, f := range a.tc {
		// ENOENT/ENODEV: the interface, and the filter with it, is gone.
		if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("remove tc filter from %s: %w", a.name, err))
		}
	}
	a.links, a.tc = nil, nil
	return errors.Join(errs...)
}
