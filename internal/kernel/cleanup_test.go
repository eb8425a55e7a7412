package kernel

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestHelperAttachAndWait is not a test: run as a child process by the
// SIGKILL tests, it loads, attaches to $EBPFNET_IFACE in $EBPFNET_MODE,
// prints its program IDs and waits to be killed.
func TestHelperAttachAndWait(t *testing.T) {
	iface := os.Getenv("EBPFNET_IFACE")
	if iface == "" {
		t.Skip("helper process for the SIGKILL tests, not a test of its own; skipped unless run by them (privileged tests)")
	}
	d, err := Load(Options{MaxFlows: 64})
	require.NoError(t, err)
	_, err = d.SetMode(AttachMode(os.Getenv("EBPFNET_MODE")))
	require.NoError(t, err)
	l, err := netlink.LinkByName(iface)
	require.NoError(t, err)
	require.NoError(t, d.Attach(l.Attrs().Index, iface, RoleEndpoint, 0))
	ids, err := d.ProgramIDs()
	require.NoError(t, err)
	fmt.Printf("READY %v\n", ids)
	time.Sleep(time.Hour)
}

// dummy creates an interface to attach to (a veth pair: this kernel has no
// dummy driver).
func dummy(t *testing.T, name string) int {
	testnet.Must(t, "ip", "link", "add", name, "type", "veth", "peer", "name", name+"p")
	t.Cleanup(func() { _, _ = exec.Command("ip", "link", "del", name).CombinedOutput() })
	testnet.Must(t, "ip", "link", "set", name, "up")
	l, err := netlink.LinkByName(name)
	require.NoError(t, err)
	return l.Attrs().Index
}

// startAndKill runs the helper attached to iface and kills it with SIGKILL.
// It returns the helper's program IDs.
func startAndKill(t *testing.T, iface string, mode AttachMode) []uint32 {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAttachAndWait$", "-test.count=1")
	cmd.Env = append(os.Environ(), "EBPFNET_IFACE="+iface, "EBPFNET_MODE="+string(mode))
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	var ids []uint32
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "READY ["); ok {
			for _, f := range strings.Fields(strings.TrimSuffix(rest, "]")) {
				id, err := strconv.ParseUint(f, 10, 32)
				require.NoError(t, err)
				ids = append(ids, uint32(id))
			}
			break
		}
	}
	require.NotEmpty(t, ids, "helper did not get ready")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	return ids
}

// programsGone waits until none of the program IDs exists any more.
func programsGone(ids []uint32) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		alive := 0
		for _, id := range ids {
			if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id)); err == nil {
				p.Close()
				alive++
			}
		}
		if alive == 0 {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func tcxPrograms(t *testing.T, ifindex int) int {
	n := 0
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
		require.NoError(t, err)
		n += len(res.Programs)
	}
	return n
}

// TestSIGKILLLeavesNothingTCX: tcx links belong to the process; when it is
// killed the kernel detaches and frees everything.
func TestSIGKILLLeavesNothingTCX(t *testing.T) {
	testnet.RequireRoot(t)
	ifindex := dummy(t, "ekill0")
	ids := startAndKill(t, "ekill0", AttachTCX)
	require.True(t, programsGone(ids), "programs %v still loaded after SIGKILL", ids)
	require.Zero(t, tcxPrograms(t, ifindex), "tcx programs left on the interface")
}

func ourFilters(t *testing.T, ifindex int) int {
	l, err := netlink.LinkByIndex(ifindex)
	require.NoError(t, err)
	n := 0
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := netlink.FilterList(l, parent)
		require.NoError(t, err)
		for _, f := range fs {
			if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, tcFilterPrefix) {
				n++
			}
		}
	}
	return n
}

// TestSIGKILLLeavesNothingTC: clsact filters outlive a killed process (the
// kernel holds them); the next start removes them before attaching.
func TestSIGKILLLeavesNothingTC(t *testing.T) {
	testnet.RequireRoot(t)
	ifindex := dummy(t, "ekill1")
	ids := startAndKill(t, "ekill1", AttachTC)
	require.Equal(t, 2, ourFilters(t, ifindex), "clsact filters survive SIGKILL")
	d := loadForTest(t, 64)
	_, err := d.SetMode(AttachTC)
	require.NoError(t, err)
	require.Zero(t, ourFilters(t, ifindex), "stale filters removed at start")
	require.True(t, programsGone(ids), "programs %v still loaded", ids)
}

// TestCloseDetachesEverything: after Close nothing of ours is attached.
func TestCloseDetachesEverything(t *testing.T) {
	testnet.RequireRoot(t)
	for _, mode := range []AttachMode{AttachTCX, AttachTC} {
		ifindex := dummy(t, "ecl"+string(mode))
		d, err := Load(Options{MaxFlows: 64})
		require.NoError(t, err)
		_, err = d.SetMode(mode)
		require.NoError(t, err)
		require.NoError(t, d.Attach(ifindex, "eclose", RoleEndpoint, 0))
		ids, err := d.ProgramIDs()
		require.NoError(t, err)
		require.NoError(t, d.Close())
		require.Zero(t, tcxPrograms(t, ifindex), mode)
		require.Zero(t, ourFilters(t, ifindex), mode)
		require.True(t, programsGone(ids), mode)
	}
}

// TestHelperLoadUnprivileged is not a test: run by TestUnprivilegedLoadError
// without capabilities, it prints Load's error.
func TestHelperLoadUnprivileged(t *testing.T) {
	if os.Getenv("EBPFNET_UNPRIV") == "" {
		t.Skip("helper process for TestUnprivilegedLoadError, not a test of its own; skipped unless run by it (privileged tests)")
	}
	_, err := Load(Options{MaxFlows: 64})
	fmt.Printf("ERROR %v\n", err)
}

// TestUnprivilegedLoadError drops every capability and checks that Load
// fails with an error naming each missing one.
func TestUnprivilegedLoadError(t *testing.T) {
	testnet.RequireRoot(t)
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
		os.Args[0], "-test.run=^TestHelperLoadUnprivileged$", "-test.count=1")
	cmd.Env = append(os.Environ(), "EBPFNET_UNPRIV=1")
	out, _ := cmd.CombinedOutput()
	require.Contains(t, string(out), "ERROR missing privileges")
	for _, c := range []string{"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "no privileged: true needed"} {
		require.Contains(t, string(out), c)
	}
}

// TestHelperMinimalCaps is not a test: run by TestMinimalCapabilities with
// only CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, it does what the receiver
// does (load, attach to a veth, TCP tracking incl. the cgroup programs, one
// connection, drain) and prints OK or the first error.
func TestHelperMinimalCaps(t *testing.T) {
	veth := os.Getenv("EBPFNET_MINCAPS")
	if veth == "" {
		t.Skip("helper process for TestMinimalCapabilities, not a test of its own; skipped unless run by it (privileged tests)")
	}
	err := func() error {
		d, err := Load(Options{MaxFlows: 1024})
		if err != nil {
			return err
		}
		defer d.Close()
		if _, err := d.SetMode(AttachAuto); err != nil {
			return err
		}
		link, err := net.InterfaceByName(veth)
		if err != nil {
			return err
		}
		if err := d.Attach(link.Index, veth, RoleEndpoint, 0); err != nil {
			return err
		}
		if err := d.AttachTCP(); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		// The conntrack lookup of kube-proxy's DNAT (CAP_NET_ADMIN).
		ct, err := OpenConntrack()
		if err != nil {
			return err
		}
		_, _, err = ct.Backend(unix.IPPROTO_TCP, c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort())
		ct.Close()
		if err != nil {
			return err
		}
		_, _ = c.Read(make([]byte, 1))
		c.Close()
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		n := 0
		if err := d.readEvents(ctx, func(*ConnEvent) { n++ }); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("no connection reported")
		}
		if _, err := d.drainEntries(nil); err != nil {
			return err
		}
		_, err = d.Counters()
		return err
	}()
	if err != nil {
		fmt.Printf("ERROR %v\n", err)
		return
	}
	fmt.Println("OK")
}

// TestMinimalCapabilities: with exactly CAP_BPF, CAP_PERFMON and
// CAP_NET_ADMIN (every other capability out of the bounding set, as the
// example DaemonSet grants them), everything the receiver does in the
// kernel works.
func TestMinimalCapabilities(t *testing.T) {
	testnet.RequireRoot(t)
	node := testnet.NewNode(t, 31)
	pod := node.AddPod(t, 2)
	cmd := exec.Command("setpriv", "--inh-caps=-all", "--bounding-set=-all,+bpf,+perfmon,+net_admin",
		os.Args[0], "-test.run=^TestHelperMinimalCaps$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "EBPFNET_MINCAPS="+pod.Veth)
	out, _ := cmd.CombinedOutput()
	require.Contains(t, string(out), "\nOK\n", "%s", out)
	// And the helper really ran without the rest: CapEff of a process
	// started the same way.
	caps, err := exec.Command("setpriv", "--inh-caps=-all", "--bounding-set=-all,+bpf,+perfmon,+net_admin",
		"grep", "CapEff", "/proc/self/status").CombinedOutput()
	require.NoError(t, err, "%s", caps)
	require.Contains(t, string(caps), "000000c000001000", "CapEff = CAP_NET_ADMIN | CAP_PERFMON | CAP_BPF")
}

// TestTCTwoAgents: two datapaths in tc mode on one interface (a surge
// update without tcx) each count every packet with their own filters, the
// second's start leaves the first's alone, and when one closes the other
// keeps counting.
func TestTCTwoAgents(t *testing.T) {
	testnet.RequireRoot(t)
	ifindex := dummy(t, "etwo0")
	testnet.Must(t, "ip", "link", "set", "etwo0p", "up")
	peer, err := net.InterfaceByName("etwo0p")
	require.NoError(t, err)
	a, b := loadForTest(t, 1024), loadForTest(t, 1024)
	for _, d := range []*Datapath{a, b} {
		_, err := d.SetMode(AttachTC)
		require.NoError(t, err)
		require.NoError(t, d.Attach(ifindex, "etwo0", RoleEndpoint, 0))
	}
	require.Equal(t, 4, ourFilters(t, ifindex), "each agent's two filters")
	send := func(n int) {
		src, dst := netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.77.0.2")
		require.NoError(t, testnet.SendFrames(nil, peer.Name, peer.HardwareAddr, n, func(i int, buf []byte) []byte {
			return testnet.UDPFrame(buf, peer.HardwareAddr, peer.HardwareAddr, src, dst, uint16(2000+i), 9)
		}))
	}
	packets := func(d *Datapath) uint64 {
		flows, err := d.Drain(nil)
		require.NoError(t, err)
		var n uint64
		for _, f := range flows {
			if f.Dst.Addr() == netip.MustParseAddr("10.77.0.2") {
				n += f.Packets
			}
		}
		return n
	}
	send(50)
	require.Equal(t, uint64(50), packets(a), "first agent")
	require.Equal(t, uint64(50), packets(b), "second agent")
	require.NoError(t, a.Close())
	require.Equal(t, 2, ourFilters(t, ifindex), "the closed agent removed its own filters only")
	send(30)
	require.Equal(t, uint64(30), packets(b), "the survivor counts on")
}

// TestStaleTCFiltersRemovedByTCXStart: a killed tc-mode agent's filters
// are removed by a later start in tcx mode too.
func TestStaleTCFiltersRemovedByTCXStart(t *testing.T) {
	testnet.RequireRoot(t)
	ifindex := dummy(t, "ekill2")
	startAndKill(t, "ekill2", AttachTC)
	require.Equal(t, 2, ourFilters(t, ifindex), "clsact filters survive SIGKILL")
	d := loadForTest(t, 64)
	_, err := d.SetMode(AttachTCX)
	require.NoError(t, err)
	require.Zero(t, ourFilters(t, ifindex), "stale filters removed at a tcx start")
}
