package kernel

import (
	"fmt"
	"io"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ProgramStats is the kernel's run-time accounting of one program
// (kernel.bpf_stats_enabled): total time spent in it and number of runs.
type ProgramStats struct {
	RuntimeNs uint64
	Runs      uint64
	// RecursionMisses counts runs the kernel skipped because the program
	// was already running on that CPU (a tracepoint hit from softirq while
	// the program ran in process context).
	RecursionMisses uint64
}

// PerRun is the mean cost of one run in nanoseconds.
func (s ProgramStats) PerRun() float64 {
	if s.Runs == 0 {
		return 0
	}
	return float64(s.RuntimeNs) / float64(s.Runs)
}

// Sub returns s - o.
func (s ProgramStats) Sub(o ProgramStats) ProgramStats {
	return ProgramStats{s.RuntimeNs - o.RuntimeNs, s.Runs - o.Runs, s.RecursionMisses - o.RecursionMisses}
}

// EnableStats turns on the kernel's BPF run-time statistics until the
// returned closer is closed (the same as kernel.bpf_stats_enabled=1; the
// kernel's own measurement adds to every run while enabled:
// docs/BENCHMARKS.md, "Design measurements").
func EnableStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable BPF run-time stats: %w", err)
	}
	return c, nil
}

// ProgramStats returns the statistics of each loaded program by name.
func (d *Datapath) ProgramStats() (map[string]ProgramStats, error) {
	out := make(map[string]ProgramStats)
	for name, p := range map[string]*ebpf.Program{
		ebpfnetProgEndpointIngress: d.objs.EndpointIngress, ebpfnetProgEndpointEgress: d.objs.EndpointEgress,
		ebpfnetProgUplinkIngress: d.objs.UplinkIngress, ebpfnetProgUplinkEgress: d.objs.UplinkEgress,
		ebpfnetProgInetSockSetState: d.objs.InetSockSetState, ebpfnetProgTcpReceiveReset: d.objs.TcpReceiveReset,
		ebpfnetProgTcpSendReset: d.sendReset, ebpfnetProgTcpRetransmitSkb: d.retransmit, // whichever layout this kernel has
		ebpfnetProgTcpSockops: d.objs.TcpSockops, ebpfnetProgRecordConnect4: d.objs.RecordConnect4,
		ebpfnetProgRecordConnect6: d.objs.RecordConnect6, ebpfnetProgRecordSendmsg4: d.objs.RecordSendmsg4,
		ebpfnetProgRecordSendmsg6: d.objs.RecordSendmsg6, ebpfnetProgKfreeSkb: d.kfreeSkb,
	} {
		if p == nil {
			continue // drops off, or a kernel without reasons
		}
		s, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", name, err)
		}
		out[name] = ProgramStats{RuntimeNs: uint64(s.Runtime), Runs: s.RunCount, RecursionMisses: s.RecursionMisses}
	}
	return out, nil
}

// SystemProgramStats sums the statistics of every program loaded in the
// kernel whose name is one of names (the kernel keeps the first 15
// characters of a name). It observes a datapath loaded by another
// component, e.g. the receiver under a benchmark.
func SystemProgramStats(names ...string) (map[string]ProgramStats, error) {
	// cilium/ebpf reports the full name from the program's BTF when it
	// has one, else the kernel's truncated name: match either.
	short := make(map[string]string, 2*len(names))
	for _, n := range names {
		short[n] = n
		if len(n) > unix.BPF_OBJ_NAME_LEN-1 {
			short[n[:unix.BPF_OBJ_NAME_LEN-1]] = n
		}
	}
	out := make(map[string]ProgramStats, len(names))
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			break // ENOENT: no more programs
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		info, err := p.Info()
		var st *ebpf.ProgramStats
		if err == nil {
			st, err = p.Stats()
		}
		p.Close()
		if err != nil {
			continue
		}
		name, ok := short[info.Name]
		if !ok {
			continue
		}
		s := out[name]
		s.RuntimeNs += uint64(st.Runtime)
		s.Runs += st.RunCount
		s.RecursionMisses += st.RecursionMisses
		out[name] = s
	}
	return out, nil
}
