package kernel

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// Reasons names the running kernel's drop reasons (enum skb_drop_reason,
// with the subsystem reasons its high 16 bits select) and reset reasons
// (enum sk_rst_reason), read from its BTF: the values moved between
// kernels, so no number is compared with a literal.
type Reasons struct {
	drop   map[uint32]string
	byName map[string]uint32
	reset  map[uint32]string
	subsys map[uint32]string // subsystem id (value >> 16) -> name
}

// dropSubsysShift is SKB_DROP_REASON_SUBSYS_SHIFT: a reason's subsystem is
// in its high 16 bits (SKB_DROP_REASON_SUBSYS_MASK, read from BTF too).
const dropSubsysShift = 16

// subsysEnums are the enums that name a subsystem's reasons, by the
// subsystem's name in enum skb_drop_reason_subsys, and the module whose BTF
// holds them when it is not built in.
var subsysEnums = map[string]struct{ enum, module string }{
	"OPENVSWITCH":       {"ovs_drop_reason", "openvswitch"},
	"MAC80211_UNUSABLE": {"mac80211_drop_reason", "mac80211"},
}

// LoadReasons reads the reason names from the kernel's BTF. A kernel
// without enum skb_drop_reason (before 5.17) is an error; one without
// sk_rst_reason (before 6.10) has no reset reasons.
func LoadReasons() (*Reasons, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("kernel BTF: %w", err)
	}
	r := &Reasons{drop: map[uint32]string{}, byName: map[string]uint32{}, reset: map[uint32]string{}, subsys: map[uint32]string{}}
	drop, err := enumByName(spec, "skb_drop_reason")
	if err != nil {
		return nil, fmt.Errorf("drop reasons: %w (kernels before 5.17 have none)", err)
	}
	for _, v := range drop.Values {
		name, ok := strings.CutPrefix(v.Name, "SKB_DROP_REASON_")
		if !ok {
			name = strings.TrimPrefix(v.Name, "SKB_") // SKB_CONSUMED
		}
		if name == "SUBSYS_MASK" {
			continue
		}
		r.drop[uint32(v.Value)] = name
		r.byName[name] = uint32(v.Value)
	}
	if sub, err := enumByName(spec, "skb_drop_reason_subsys"); err == nil {
		for _, v := range sub.Values {
			name := strings.TrimPrefix(v.Name, "SKB_DROP_REASON_SUBSYS_")
			if name != "NUM" && name != "CORE" {
				r.subsys[uint32(v.Value)] = name
				r.addSubsys(spec, name)
			}
		}
	}
	if rst, err := enumByName(spec, "sk_rst_reason"); err == nil {
		for _, v := range rst.Values {
			r.reset[uint32(v.Value)] = strings.TrimPrefix(v.Name, "SK_RST_REASON_")
		}
	}
	return r, nil
}

// addSubsys adds the names of a subsystem's own enum, from vmlinux or its
// module's BTF when the module is loaded; otherwise Drop names its values
// by number.
func (r *Reasons) addSubsys(spec *btf.Spec, subsys string) {
	se, ok := subsysEnums[subsys]
	if !ok {
		return
	}
	e, err := enumByName(spec, se.enum)
	if err != nil {
		mod, merr := btf.LoadKernelModuleSpec(se.module)
		if merr != nil {
			return
		}
		if e, err = enumByName(mod, se.enum); err != nil {
			return
		}
	}
	for _, v := range e.Values {
		if !strings.HasSuffix(v.Name, "_MAX") {
			r.drop[uint32(v.Value)] = v.Name
			r.byName[v.Name] = uint32(v.Value)
		}
	}
}

func enumByName(spec *btf.Spec, name string) (*btf.Enum, error) {
	var e *btf.Enum
	if err := spec.TypeByName(name, &e); err != nil {
		return nil, fmt.Errorf("enum %s in the kernel BTF: %w", name, err)
	}
	return e, nil
}

// Drop is the name of a drop reason: the kernel's without SKB_DROP_REASON_
// (NETFILTER_DROP, NO_SOCKET, ...); a subsystem's value it has no name for
// is SUBSYSTEM_n, any other unknown value (or any, with no names: nil)
// UNKNOWN_n.
func (r *Reasons) Drop(v uint32) string {
	if r == nil {
		return fmt.Sprintf("UNKNOWN_%d", v)
	}
	if name, ok := r.drop[v]; ok {
		return name
	}
	if sub, ok := r.subsys[v>>dropSubsysShift]; ok && v>>dropSubsysShift != 0 {
		return fmt.Sprintf("%s_%d", sub, v&0xffff)
	}
	return fmt.Sprintf("UNKNOWN_%d", v)
}

// Reset is the name of a reset reason without SK_RST_REASON_ (NO_SOCKET,
// TCP_ABORT_ON_CLOSE, ...).
func (r *Reasons) Reset(v uint32) string {
	if r == nil {
		return fmt.Sprintf("UNKNOWN_%d", v)
	}
	if name, ok := r.reset[v]; ok {
		return name
	}
	return fmt.Sprintf("UNKNOWN_%d", v)
}

// HasResetReasons reports whether the kernel names reset reasons (6.10+).
func (r *Reasons) HasResetReasons() bool { return r != nil && len(r.reset) > 0 }

// DropNames are the drop reason names the kernel has.
func (r *Reasons) DropNames() []string {
	out := make([]string, 0, len(r.byName))
	for n := range r.byName {
		out = append(out, n)
	}
	return out
}

// ignoreBitmap is the drop_ignored bitmap of the named core reasons; names
// this kernel does not have are returned, not an error (a list written for
// several kernels).
func (r *Reasons) ignoreBitmap(names []string) (bits [4]uint64, unknown []string, err error) {
	for _, n := range names {
		v, ok := r.byName[n]
		if !ok {
			unknown = append(unknown, n)
			continue
		}
		if v >= 256 {
			err = errors.Join(err, fmt.Errorf("drop reason %s (%#x) is a subsystem reason: only core reasons can be ignored", n, v))
			continue
		}
		bits[v>>6] |= 1 << (v & 63)
	}
	return bits, unknown, err
}
