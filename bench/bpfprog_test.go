//go:build bench

package bench

// Loading the bench-only BPF programs (bpf/bench) and driving a veth with
// them: shared by the map-type study, the breakdown and the variants.

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// compileStudy builds bpf/bench/maptypes.c with the flags of the receiver's
// own object and loads it.
func compileStudy(t *testing.T) *ebpf.Collection { return compileBench(t, "maptypes") }

// compileBench builds bpf/bench/<name>.c with the flags of the receiver's own
// object and loads it.
func compileBench(t *testing.T, name string) *ebpf.Collection {
	return loadBench(t, compileBenchSpec(t, name), nil)
}

// compileBenchSpec builds bpf/bench/<name>.c with the flags of the receiver's
// own object.
func compileBenchSpec(t *testing.T, name string) *ebpf.CollectionSpec {
	return compileBPF(t, "../bpf/bench/"+name+".c")
}

// compileBPF compiles a C file of bpf/ with go generate's clang flags (see
// internal/kernel/gen.go) and the extra ones.
func compileBPF(t *testing.T, src string, extra ...string) *ebpf.CollectionSpec {
	obj := filepath.Join(t.TempDir(), strings.TrimSuffix(filepath.Base(src), ".c")+".o")
	args := append([]string{"-O2", "-g", "-Wall", "-Werror", "-mcpu=v3", "-target", "bpfel", "-I", "../bpf"}, extra...)
	args = append(args, "-c", src, "-o", obj)
	out, err := exec.Command("clang", args...).CombinedOutput()
	require.NoError(t, err, "clang %s: %s", strings.Join(args, " "), out)
	spec, err := ebpf.LoadCollectionSpec(obj)
	require.NoError(t, err)
	return spec
}

// loadBench loads spec, with the maps of maps (a collection loaded before)
// instead of new ones when given, and closes it with the test.
func loadBench(t *testing.T, spec *ebpf.CollectionSpec, maps map[string]*ebpf.Map) *ebpf.Collection {
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: maps})
	require.NoError(t, err)
	t.Cleanup(coll.Close)
	return coll
}

// drainRing reads the study ring until stop is closed, as a flow agent's
// reader would; it returns the records read.
func drainRing(t *testing.T, m *ebpf.Map) (stop func() int) {
	rd, err := ringbuf.NewReader(m)
	require.NoError(t, err)
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		var rec ringbuf.Record
		for {
			if err := rd.ReadInto(&rec); err != nil {
				if errors.Is(err, os.ErrClosed) {
					return
				}
				continue
			}
			n++
		}
	}()
	return func() int {
		rd.Close()
		<-done
		return n
	}
}

// generate sends repeat frames out of ifname in ns, from the kernel: the
// study's XDP generator run once with BPF_PROG_TEST_RUN in live-frames mode
// (xdp-trafficgen's method), giving successive frames flows distinct
// (source, destination) port pairs, on one thread pinned to CPU 0.
func generate(coll *ebpf.Collection, ns *testnet.Netns, ifname string, frame []byte, flows, repeat uint32) error {
	return ns.Do(func() error {
		var set unix.CPUSet
		set.Set(0)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return err
		}
		defer func() {
			for i := 0; i < runtime.NumCPU(); i++ {
				set.Set(i)
			}
			_ = unix.SchedSetaffinity(0, &set)
		}()
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		if err := coll.Variables["gen_ifindex"].Set(uint32(ifc.Index)); err != nil {
			return err
		}
		if err := coll.Variables["gen_flows"].Set(flows); err != nil {
			return err
		}
		if _, err := coll.Programs["generate"].Run(&ebpf.RunOptions{Data: frame, Repeat: repeat,
			Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES, BatchSize: 64}); err != nil {
			return fmt.Errorf("XDP live-frames generator: %w", err)
		}
		return nil
	})
}

// Frames of the generator's warm-up run: every flow of the many-flow runs at
// least once, and long enough (0.2–1 s) to estimate the rate.
const warmFrames = 1 << 20

// vethRate measures the packets/s the host side of a veth (vethName)
// receives from the generator in the pod (ns, eth0) over d, in a window
// inside one run of the generator. Each BPF_PROG_TEST_RUN of an XDP program
// switches the kernel's XDP dispatcher to the program and back, waiting for
// an RCU grace period each time (bpf_dispatcher_change_prog,
// synchronize_rcu: 10-20 ms here), in which nothing is sent: a rate taken
// over runs of a fixed count measures those waits as well (with 2^16 frames
// a run, the sending CPU idled for more than half of the time, and every
// program measured the same rate). A warm-up run of warmFrames estimates
// the rate, which sizes the measured run to outlast the window; a run that
// ends before the window does is made longer and run again.
func vethRate(t *testing.T, coll *ebpf.Collection, ns *testnet.Netns, vethName string, frame []byte, flows uint32, d time.Duration) float64 {
	const lead, tail = 300 * time.Millisecond, 700 * time.Millisecond
	start := time.Now()
	require.NoError(t, generate(coll, ns, "eth0", frame, flows, warmFrames))
	guess := float64(warmFrames) / time.Since(start).Seconds() // waits included: low
	for try := 0; try < 4; try++ {
		repeat := math.Min(guess*(lead+d+tail).Seconds()*float64(uint(1)<<try), math.MaxUint32)
		done := make(chan error, 1)
		rx0 := testnet.Stats(t, vethName).RxPackets
		go func() { done <- generate(coll, ns, "eth0", frame, flows, uint32(repeat)) }()
		time.Sleep(lead)
		rxA, tA := testnet.Stats(t, vethName).RxPackets, time.Now()
		time.Sleep(d)
		rxB, tB := testnet.Stats(t, vethName).RxPackets, time.Now()
		ended := false
		select {
		case err := <-done:
			require.NoError(t, err)
			ended = true
		default:
			require.NoError(t, <-done)
		}
		if !ended && rxA > rx0 { // sending all through the window
			return float64(rxB-rxA) / tB.Sub(tA).Seconds()
		}
	}
	t.Fatalf("the generator's run did not outlast a %v window four times, the last %.0f frames long", d, guess*(lead+d+tail).Seconds()*8)
	return 0
}
