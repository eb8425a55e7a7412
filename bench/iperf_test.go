//go:build bench

package bench

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// iperfResult is what one iperf3 run measured.
type iperfResult struct {
	BitsPerSecond float64
	PacketsPerSec float64 // UDP: datagrams the server received per second
}

type iperfMode struct {
	name string
	args []string
	udp  bool
}

var iperfModes = []iperfMode{
	{"TCP, 1 stream", nil, false},
	{"TCP, 4 streams", []string{"-P", "4"}, false},
	{"UDP, 64-byte payload, unlimited rate", []string{"-u", "-l", "64", "-b", "0"}, true},
}

// runIperf runs one iperf3 client in client against a one-off server in server.
func runIperf(t *testing.T, client, server *testnet.Netns, dst string, port int, seconds int, m iperfMode) iperfResult {
	t.Helper()
	srv := inNetns(server, "iperf3", "-s", "-1", "-p", strconv.Itoa(port))
	require.NoError(t, srv.Start())
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	time.Sleep(300 * time.Millisecond)
	out, err := inNetns(client, append([]string{"iperf3", "-c", dst, "-p", strconv.Itoa(port), "-t", strconv.Itoa(seconds), "-J"}, m.args...)...).Output()
	require.NoError(t, err, "iperf3: %s", out)
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			Sum struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				Packets       float64 `json:"packets"`
				LostPackets   float64 `json:"lost_packets"`
				Seconds       float64 `json:"seconds"`
			} `json:"sum"`
		} `json:"end"`
	}
	require.NoError(t, json.Unmarshal(out, &r))
	if m.udp {
		s := r.End.Sum
		return iperfResult{BitsPerSecond: s.BitsPerSecond, PacketsPerSec: (s.Packets - s.LostPackets) / s.Seconds}
	}
	return iperfResult{BitsPerSecond: r.End.SumReceived.BitsPerSecond}
}

// inNetns is a command in ns, or in the test's own namespace (the node)
// when ns is nil.
func inNetns(ns *testnet.Netns, args ...string) *exec.Cmd {
	if ns == nil {
		return exec.Command(args[0], args[1:]...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
}

// attached loads the datapath, attaches it to the pods' veths as pod
// endpoints, and drains it every second until stopped.
func attached(t *testing.T, veths ...string) (*kernel.Datapath, func()) {
	t.Helper()
	d, err := kernel.Load(kernel.Options{MaxFlows: 131072})
	require.NoError(t, err)
	_, err = d.SetMode(kernel.AttachTCX)
	require.NoError(t, err)
	for _, v := range veths {
		require.NoError(t, d.Attach(linkIndex(t, v), v, kernel.RoleEndpoint, 0))
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]flow.Flow, 0, 1024)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				buf, _ = d.Drain(buf[:0])
			}
		}
	}()
	return d, func() {
		close(stop)
		<-done
		require.NoError(t, d.Close())
	}
}

func linkIndex(t *testing.T, name string) int {
	out := testnet.Must(t, "cat", fmt.Sprintf("/sys/class/net/%s/ifindex", name))
	i, err := strconv.Atoi(string(out[:len(out)-1]))
	require.NoError(t, err)
	return i
}
