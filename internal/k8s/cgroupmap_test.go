package k8s

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestCgroupsOnRealHierarchy: pod and container cgroups created in the
// machine's cgroup2 hierarchy (cgroupfs driver layout) are found by the id
// the kernel gives them; one created later is found on its first lookup.
func TestCgroupsOnRealHierarchy(t *testing.T) {
	testnet.RequireRoot(t)
	root, err := kernel.Cgroup2Root()
	require.NoError(t, err)
	const uid = "0f8a3c2e-1111-4222-8333-944455566677"
	base := filepath.Join(root, "ebpfnet-test-kubepods")
	pod := filepath.Join(base, "burstable", "pod"+uid)
	cid1 := "1111111111111111111111111111111111111111111111111111111111111111"
	cid2 := "2222222222222222222222222222222222222222222222222222222222222222"
	require.NoError(t, os.MkdirAll(filepath.Join(pod, cid1), 0o755))
	t.Cleanup(func() {
		for _, d := range []string{filepath.Join(pod, cid1), filepath.Join(pod, cid2), pod, filepath.Join(base, "burstable"), base} {
			_ = os.Remove(d) // cgroup directories are removed with rmdir, innermost first
		}
	})
	ino := func(p string) uint64 {
		var st syscall.Stat_t
		require.NoError(t, syscall.Stat(p, &st))
		return st.Ino
	}
	c := NewCgroups(root)
	c.minRescan = 10 * time.Millisecond
	require.Equal(t, CgroupIdentity{uid, cid1}, c.Lookup(ino(filepath.Join(pod, cid1))))
	require.Equal(t, CgroupIdentity{PodUID: uid}, c.Lookup(ino(pod)))
	require.Equal(t, CgroupIdentity{}, c.Lookup(ino(root)), "the root is no pod's")

	require.NoError(t, os.Mkdir(filepath.Join(pod, cid2), 0o755))
	time.Sleep(20 * time.Millisecond)
	require.Equal(t, CgroupIdentity{uid, cid2}, c.Lookup(ino(filepath.Join(pod, cid2))))

	// The id the kernel side records for a connection made from inside the
	// container's cgroup is the one that resolves.
	d, err := kernel.Load(kernel.Options{MaxFlows: 64})
	require.NoError(t, err)
	defer d.Close()
	require.NoError(t, d.AttachTCP())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		if conn, err := ln.Accept(); err == nil {
			conn.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	script := fmt.Sprintf("echo $$ > %s/cgroup.procs && exec 3<>/dev/tcp/127.0.0.1/%d", filepath.Join(pod, cid2), port)
	out, err := exec.Command("bash", "-c", script).CombinedOutput()
	require.NoError(t, err, "%s", out)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var got []CgroupIdentity
	_ = d.ReadConns(ctx, func(e *flow.Conn) {
		if e.Role == flow.Client && int(e.Remote.Port()) == port {
			got = append(got, c.Lookup(e.CgroupID))
		}
	})
	require.Equal(t, []CgroupIdentity{{uid, cid2}}, got)
}

// TestDropsOfAHostNetworkPodsSocket: a socket of a process in a pod's
// cgroup on the node's network (a hostNetwork pod) that never reads its
// datagrams: the kernel's drops (SOCKET_RCVBUFF, in the node's namespace)
// carry the socket's cgroup, which names the pod.
func TestDropsOfAHostNetworkPodsSocket(t *testing.T) {
	testnet.RequireRoot(t)
	root, err := kernel.Cgroup2Root()
	require.NoError(t, err)
	const uid = "0f8a3c2e-3333-4222-8333-944455566677"
	cid := "3333333333333333333333333333333333333333333333333333333333333333"
	base := filepath.Join(root, "ebpfnet-test-drops-kubepods")
	pod := filepath.Join(base, "pod"+uid)
	require.NoError(t, os.MkdirAll(filepath.Join(pod, cid), 0o755))
	t.Cleanup(func() {
		for _, d := range []string{filepath.Join(pod, cid), pod, base} {
			_ = os.Remove(d)
		}
	})
	d, err := kernel.Load(kernel.Options{MaxFlows: 64})
	require.NoError(t, err)
	defer d.Close()
	require.NoError(t, d.AttachTCP())
	_, err = d.Drain(nil)
	require.NoError(t, err)

	const port = 47391
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec python3 -c "
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
s.bind(('127.0.0.1', %d))
print('ready', flush=True)
time.sleep(3)"`, filepath.Join(pod, cid), port)
	cmd := exec.Command("bash", "-c", script)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	_, err = stdout.Read(make([]byte, 6)) // "ready"
	require.NoError(t, err)
	conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
	require.NoError(t, err)
	for range 200 {
		_, _ = conn.Write(make([]byte, 1000))
	}
	conn.Close()
	time.Sleep(100 * time.Millisecond)
	_, err = d.Drain(nil)
	require.NoError(t, err)
	var pkts uint64
	for _, dr := range d.Drops(nil) {
		if dr.Reason == "SOCKET_RCVBUFF" && dr.Local.Port() == port {
			require.Equal(t, CgroupIdentity{uid, cid}, NewCgroups(root).Lookup(dr.CgroupID), "the socket's cgroup names the pod")
			pkts += dr.Packets
		}
	}
	require.Greater(t, pkts, uint64(100), "a 1-byte buffer holds next to nothing")
}

// TestCgroupsNewContainerAfterAMiss: a lookup of an id no scan knows
// (here, one long gone) spends the rescan period; a container created right
// after is still found on its first lookup, its id being newer than every
// id the last scan saw. Cgroups of no pod are remembered as such, so their
// sockets do not rescan.
func TestCgroupsNewContainerAfterAMiss(t *testing.T) {
	testnet.RequireRoot(t)
	root, err := kernel.Cgroup2Root()
	require.NoError(t, err)
	const uid = "0f8a3c2e-4444-4222-8333-944455566677"
	pod := filepath.Join(root, "ebpfnet-test-miss-kubepods", "pod"+uid)
	cid := "4444444444444444444444444444444444444444444444444444444444444444"
	require.NoError(t, os.MkdirAll(pod, 0o755))
	t.Cleanup(func() {
		for _, d := range []string{filepath.Join(pod, cid), pod, filepath.Dir(pod)} {
			_ = os.Remove(d)
		}
	})
	c := NewCgroups(root)
	require.Equal(t, CgroupIdentity{}, c.Lookup(1), "an id of no cgroup: a scan")
	scanned := c.lastScan
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(root, &st))
	require.Equal(t, CgroupIdentity{}, c.Lookup(st.Ino), "the root: known, no pod's")
	require.Equal(t, scanned, c.lastScan, "a known cgroup of no pod does not rescan")

	require.NoError(t, os.Mkdir(filepath.Join(pod, cid), 0o755))
	require.NoError(t, syscall.Stat(filepath.Join(pod, cid), &st))
	time.Sleep(30 * time.Millisecond)
	require.Equal(t, CgroupIdentity{uid, cid}, c.Lookup(st.Ino), "found well within the 1 s rescan period")
}
