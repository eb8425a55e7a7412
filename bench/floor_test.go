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
	in, eg := emptyHookCosts(t, load, veths...)
	return (in + eg) / 2
}

// emptyHookCosts is emptyProgramCost per hook.
func emptyHookCosts(t *testing.T, load func(), veths ...string) (ingress, egress float64) {
	// One program per hook: each has its own run-time stats. Closed on
	// return: the sections call this once per repetition and load.
	in, eg := newEmptyTCX(t), newEmptyTCX(t)
	defer in.Close()
	defer eg.Close()
	return hookCosts(t, in, eg, load, veths...)
}

// attachHooks attaches in to the tcx ingress and eg to the tcx egress of
// the veths until detach is called.
func attachHooks(t *testing.T, in, eg *ebpf.Program, veths ...string) (detach func()) {
	var links []link.Link
	for i, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		p := []*ebpf.Program{in, eg}[i]
		for _, v := range veths {
			l, err := link.AttachTCX(link.TCXOptions{Interface: linkIndex(t, v), Program: p, Attach: at})
			require.NoError(t, err)
			links = append(links, l)
		}
	}
	return func() {
		for _, l := range links {
			l.Close()
		}
	}
}

// newEmptyTCX is the two-instruction program (return TCX_NEXT); the caller
// closes it.
func newEmptyTCX(t *testing.T) *ebpf.Program {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "MIT", Instructions: emptyTC()})
	require.NoError(t, err)
	return p
}

// emptyTCX is newEmptyTCX closed with the test.
func emptyTCX(t *testing.T) *ebpf.Program {
	p := newEmptyTCX(t)
	t.Cleanup(func() { p.Close() })
	return p
}

// hookCosts attaches in to the tcx ingress and eg to the tcx egress of the
// veths and returns the ns/run of each (bpf_stats, which must be on) under
// the load run by load().
func hookCosts(t *testing.T, in, eg *ebpf.Program, load func(), veths ...string) (ingress, egress float64) {
	hooks := []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress}
	progs := []*ebpf.Program{in, eg}
	defer attachHooks(t, in, eg, veths...)()
	before := make([]*ebpf.ProgramStats, len(hooks))
	for i, p := range progs {
		s, err := p.Stats()
		require.NoError(t, err)
		before[i] = s
	}
	load()
	cost := make([]float64, len(hooks))
	for i, p := range progs {
		after, err := p.Stats()
		require.NoError(t, err)
		s := kernel.ProgramStats{RuntimeNs: uint64(after.Runtime - before[i].Runtime), Runs: after.RunCount - before[i].RunCount}
		cost[i] = s.PerRun()
	}
	return cost[0], cost[1]
}
