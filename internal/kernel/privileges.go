package kernel

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrPrivileges is returned (wrapped) when the process lacks a capability
// the receiver needs.
var ErrPrivileges = errors.New("missing privileges")

// Capabilities the receiver needs, and why. CAP_SYS_ADMIN stands in for
// CAP_BPF and CAP_PERFMON on kernels older than 5.8.
var required = []struct {
	bit  uint
	name string
	why  string
}{
	{unix.CAP_BPF, "CAP_BPF", "create BPF maps and load programs"},
	{unix.CAP_PERFMON, "CAP_PERFMON", "load programs that read kernel memory and tracepoints"},
	{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN", "attach programs to network interfaces"},
}

func effectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, err
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, nil
}

// checkPrivileges returns an error naming every capability that is missing.
func checkPrivileges() error {
	caps, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("read process capabilities: %w", err)
	}
	sysAdmin := caps&(1<<unix.CAP_SYS_ADMIN) != 0
	var missing []string
	for _, c := range required {
		if caps&(1<<c.bit) != 0 || (sysAdmin && c.bit != unix.CAP_NET_ADMIN) {
			continue
		}
		missing = append(missing, fmt.Sprintf("%s (to %s)", c.name, c.why))
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: the collector needs %s; grant them in the container's securityContext.capabilities.add (no privileged: true needed)",
			ErrPrivileges, strings.Join(missing, ", "))
	}
	return nil
}

func explainLoadError(err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("load BPF objects: %w (%w: needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; a seccomp or LSM policy may also deny bpf())", err, ErrPrivileges)
	}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("load BPF objects: the kernel verifier rejected a program: %+v", ve)
	}
	return fmt.Errorf("load BPF objects: %w", err)
}
