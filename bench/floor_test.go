//go:build bench

package bench

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/kernel"
)

// emptyTC is a tc program that only returns TCX_NEXT.
func emptyTC() asm.Instructions { return asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()} }

// emptyProgramCost attaches a two-instruction tcx program (return TCX_NEXT)
// to the veths and returns its ns/run under the load run by load(): the
// floor of what bpf_stats reports on this machine.
func emptyProgramCost(t *testing.T, load func(), veths ...string) float64 {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "MIT", Instructions: emptyTC()})
	require.NoError(t, err)
	defer prog.Close()
	return programCost(t, prog, load, veths...)
}

// programCost attaches prog to both tcx hooks of the veths and returns its
// ns/run (bpf_stats, which must be on) under the load run by load().
func programCost(t *testing.T, prog *ebpf.Program, load func(), veths ...string) float64 {
	var links []link.Link
	for _, v := range veths {
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			l, err := link.AttachTCX(link.TCXOptions{Interface: linkIndex(t, v), Program: prog, Attach: at})
			require.NoError(t, err)
			links = append(links, l)
		}
	}
	defer func() {
		for _, l := range links {
			l.Close()
		}
	}()
	before, err := prog.Stats()
	require.NoError(t, err)
	load()
	after, err := prog.Stats()
	require.NoError(t, err)
	s := kernel.ProgramStats{RuntimeNs: uint64(after.Runtime - before.Runtime), Runs: after.RunCount - before.RunCount}
	return s.PerRun()
}
