package kernel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/internal/flow"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestDropReasonNamesMatchTracefs: the names read from BTF are the ones the
// kernel's own tracepoints print (the __print_symbolic tables of the
// kfree_skb and tcp_send_reset formats in tracefs), value by value.
func TestDropReasonNamesMatchTracefs(t *testing.T) {
	testnet.RequireRoot(t)
	tracefs := mountTracefs(t)
	r, err := LoadReasons()
	require.NoError(t, err)
	for _, tc := range []struct {
		event string
		name  func(uint32) string
		min   int
	}{
		{"skb/kfree_skb", r.Drop, 50},
		{"tcp/tcp_send_reset", r.Reset, 10},
	} {
		format, err := os.ReadFile(filepath.Join(tracefs, "events", tc.event, "format"))
		require.NoError(t, err)
		table := symbolicTable(t, string(format), "REC->reason")
		require.GreaterOrEqual(t, len(table), tc.min, "%s names its reasons", tc.event)
		for v, want := range table {
			require.Equal(t, want, tc.name(v), "%s reason %d", tc.event, v)
		}
	}
}

// symbolicTable parses the { value, "NAME" } pairs of the __print_symbolic
// of field in a tracefs format.
func symbolicTable(t *testing.T, format, field string) map[uint32]string {
	i := strings.Index(format, "__print_symbolic("+field)
	require.GreaterOrEqual(t, i, 0, "no symbolic table of %s in %s", field, format)
	body := format[i:]
	body = body[:strings.Index(body, "})")+1]
	out := map[uint32]string{}
	for _, m := range regexp.MustCompile(`\{ *(\d+), *"([A-Z0-9_]+)" *\}`).FindAllStringSubmatch(body, -1) {
		v, err := strconv.ParseUint(m[1], 10, 32)
		require.NoError(t, err)
		out[uint32(v)] = m[2]
	}
	return out
}

// mountTracefs returns tracefs's mount point, mounting it if needed.
func mountTracefs(t *testing.T) string {
	const dir = "/sys/kernel/tracing"
	if _, err := os.Stat(filepath.Join(dir, "events")); err == nil {
		return dir
	}
	if err := unix.Mount("tracefs", dir, "tracefs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		t.Fatalf("mount tracefs at %s: %v", dir, err)
	}
	return dir
}

// dropNode is a node with two pods and the datapath attached to their
// veths, the bridge and the uplink, counting drops of every reason.
type dropNode struct {
	*testnet.Node
	d    *Datapath
	a, b *testnet.Pod
	ends *flow.Endpoints
}

func newDropNode(t *testing.T, id int) *dropNode {
	return newDropNodeWith(t, id, Options{MaxFlows: 4096})
}

func newDropNodeWith(t *testing.T, id int, opts Options) *dropNode {
	n := &dropNode{Node: testnet.NewNode(t, id), ends: flow.NewEndpoints()}
	n.a, n.b = n.AddPod(t, 2), n.AddPod(t, 3)
	d, err := Load(opts)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	n.d = d
	_, err = d.SetMode(AttachAuto)
	require.NoError(t, err)
	br, err := netlink.LinkByName(n.Bridge)
	require.NoError(t, err)
	for _, p := range []*testnet.Pod{n.a, n.b} {
		l, err := netlink.LinkByName(p.Veth)
		require.NoError(t, err)
		require.NoError(t, d.Attach(l.Attrs().Index, p.Veth, RoleEndpoint, br.Attrs().Index))
	}
	up, err := netlink.LinkByName(n.Uplink)
	require.NoError(t, err)
	require.NoError(t, d.Attach(up.Attrs().Index, n.Uplink, RoleUplink, 0))
	require.NoError(t, d.AttachTCP())
	n.drops(t) // start from empty tables
	return n
}

// drops drains one interval and returns its drops, resolved to pods.
func (n *dropNode) drops(t *testing.T) []flow.Drop {
	flows, err := n.d.Drain(nil)
	require.NoError(t, err)
	b := &flow.Batch{Flows: flows, Drops: n.d.Drops(nil)}
	n.ends.Resolve(b)
	n.ends.ResolveDrops(b, n.d.HostNetns())
	return b.Drops
}

// sum adds up the drops of reason whose local endpoint and peer are these.
func sum(drops []flow.Drop, kind flow.DropKind, reason string, local netip.AddrPort, peer netip.Addr) (flow.Drop, int) {
	var out flow.Drop
	n := 0
	for _, d := range drops {
		if d.Kind == kind && d.Reason == reason && d.Local == local && d.Peer == peer {
			if n == 0 {
				out = d
			} else {
				out.Packets += d.Packets
				out.Bytes += d.Bytes
			}
			n++
		}
	}
	return out, n
}

// netnsInode is the inode of a named namespace.
func netnsInode(t *testing.T, ns *testnet.Netns) uint32 {
	var st unix.Stat_t
	require.NoError(t, unix.Stat("/run/netns/"+ns.Name, &st))
	return uint32(st.Ino)
}

// snmp reads a namespace's MIB counter (testnet.SNMP).
func snmp(t *testing.T, ns *testnet.Netns, file, group, name string) uint64 {
	v, err := testnet.SNMP(ns, file, group, name)
	require.NoError(t, err)
	return v
}

// ruleCounters reads an iptables rule's counters (testnet.RuleCounters).
func ruleCounters(t *testing.T, ns *testnet.Netns, chain, comment string) (packets, bytes uint64) {
	p, b, err := testnet.RuleCounters(ns, chain, comment)
	require.NoError(t, err)
	return p, b
}

// sendUDP sends count datagrams of size bytes from ns to dst, from an
// unconnected socket, and returns its port.
func sendUDP(t *testing.T, ns *testnet.Netns, dst netip.AddrPort, count, size int) uint16 {
	var conn net.PacketConn
	require.NoError(t, ns.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", ":0")
		return err
	}))
	defer conn.Close()
	for range count {
		_, err := conn.WriteTo(make([]byte, size), net.UDPAddrFromAddrPort(dst))
		require.NoError(t, err)
	}
	time.Sleep(100 * time.Millisecond) // let the last ones land
	return uint16(conn.LocalAddr().(*net.UDPAddr).Port)
}

// TestDropsMatchKernelCounters: each kind of drop, made between two pods
// of a test node, is counted with the kernel's reason, attributed to the
// right pod and peer, and equals the kernel's own counter of it: an
// iptables rule's counters, the namespace's UDP and TCP MIB counters, the
// run count of a tc program that drops everything.
func TestDropsMatchKernelCounters(t *testing.T) {
	n := newDropNode(t, 27)
	a, b := n.a, n.b
	bNetns := netnsInode(t, b.NS)

	t.Run("netfilter in the receiving pod", func(t *testing.T) {
		rule := []string{"INPUT", "-p", "udp", "-s", a.IPv4.String(), "--dport", "7001", "-m", "comment", "--comment", "ebpfnet-drop-in", "-j", "DROP"}
		_, err := b.NS.Exec(append([]string{"iptables", "-w", "-A"}, rule...)...)
		require.NoError(t, err)
		port := sendUDP(t, a.NS, netip.AddrPortFrom(b.IPv4, 7001), 50, 100)
		drops := n.drops(t)
		pkts, bytes := ruleCounters(t, b.NS, "INPUT", "ebpfnet-drop-in")
		require.EqualValues(t, 50, pkts)
		got, _ := sum(drops, flow.DropPacket, "NETFILTER_DROP", netip.AddrPortFrom(b.IPv4, 7001), a.IPv4)
		require.Equal(t, pkts, got.Packets, "drops = the rule's packets (from port %d): %+v", port, drops)
		require.Equal(t, bytes, got.Bytes, "IP bytes, as iptables counts them")
		require.Equal(t, flow.Receive, got.Direction)
		require.Equal(t, bNetns, got.Netns)
		require.Equal(t, b.IPv4, got.Endpoint, "the receiving pod's")
		require.False(t, got.OnNode)
	})

	t.Run("netfilter forwarding from a pod", func(t *testing.T) {
		rule := []string{"FORWARD", "-p", "udp", "-s", a.IPv4.String(), "-d", n.Remote.IPv4.String(), "--dport", "7002",
			"-m", "comment", "--comment", fmt.Sprintf("ebpfnet-drop-fwd-%d", n.ID), "-j", "DROP"}
		testnet.Must(t, append([]string{"iptables", "-w", "-I"}, rule...)...)
		t.Cleanup(func() { _, _ = runCmd("iptables", append([]string{"-w", "-D"}, rule...)...) })
		port := sendUDP(t, a.NS, netip.AddrPortFrom(n.Remote.IPv4, 7002), 40, 200)
		drops := n.drops(t)
		pkts, bytes := ruleCounters(t, nil, "FORWARD", fmt.Sprintf("ebpfnet-drop-fwd-%d", n.ID))
		require.EqualValues(t, 40, pkts)
		got, _ := sum(drops, flow.DropPacket, "NETFILTER_DROP", netip.AddrPortFrom(a.IPv4, port), n.Remote.IPv4)
		require.Equal(t, pkts, got.Packets, "%+v", drops)
		require.Equal(t, bytes, got.Bytes)
		require.Equal(t, flow.Transmit, got.Direction, "the pod sent it")
		require.Equal(t, a.IPv4, got.Endpoint, "the sending pod's, by its address behind the bridge")
	})

	t.Run("no socket", func(t *testing.T) {
		before := snmp(t, b.NS, "/proc/net/snmp", "Udp:", "NoPorts")
		sendUDP(t, a.NS, netip.AddrPortFrom(b.IPv4, 7003), 30, 64)
		drops := n.drops(t)
		noPorts := snmp(t, b.NS, "/proc/net/snmp", "Udp:", "NoPorts") - before
		require.EqualValues(t, 30, noPorts)
		got, _ := sum(drops, flow.DropPacket, "NO_SOCKET", netip.AddrPortFrom(b.IPv4, 7003), a.IPv4)
		require.Equal(t, noPorts, got.Packets, "NO_SOCKET = UdpNoPorts: %+v", drops)
		require.Equal(t, b.IPv4, got.Endpoint)
	})

	t.Run("receive buffer full", func(t *testing.T) {
		var fd int
		require.NoError(t, b.NS.Do(func() (err error) {
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
			if err != nil {
				return err
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 2048); err != nil {
				return err
			}
			return unix.Bind(fd, &unix.SockaddrInet4{Port: 7004, Addr: b.IPv4.As4()})
		}))
		defer unix.Close(fd)
		before := snmp(t, b.NS, "/proc/net/snmp", "Udp:", "RcvbufErrors")
		sendUDP(t, a.NS, netip.AddrPortFrom(b.IPv4, 7004), 200, 1000) // never read
		drops := n.drops(t)
		errs := snmp(t, b.NS, "/proc/net/snmp", "Udp:", "RcvbufErrors") - before
		require.Greater(t, errs, uint64(150), "a 2 KiB buffer holds a few datagrams")
		got, _ := sum(drops, flow.DropPacket, "SOCKET_RCVBUFF", netip.AddrPortFrom(b.IPv4, 7004), a.IPv4)
		require.Equal(t, errs, got.Packets, "SOCKET_RCVBUFF = UdpRcvbufErrors: %+v", drops)
		require.NotZero(t, got.CgroupID, "the receiving socket's cgroup")
	})

	t.Run("tc programs that drop", func(t *testing.T) {
		closeStats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		require.NoError(t, err)
		defer closeStats.Close()
		for _, tc := range []struct {
			pod    *testnet.Pod
			attach ebpf.AttachType
			reason string
			dir    flow.Direction
		}{
			{b, ebpf.AttachTCXEgress, "TC_EGRESS", flow.Receive},
			{a, ebpf.AttachTCXIngress, "TC_INGRESS", flow.Transmit},
		} {
			runs := dropEverything(t, tc.pod.Veth, tc.attach, func() {
				sendUDP(t, a.NS, netip.AddrPortFrom(b.IPv4, 7005), 25, 300)
			})
			drops := n.drops(t)
			require.EqualValues(t, 25, runs, "%s: only the test's packets crossed", tc.reason)
			var got flow.Drop
			for _, d := range drops {
				if d.Reason == tc.reason && d.Peer == map[bool]netip.Addr{true: a.IPv4, false: b.IPv4}[tc.dir == flow.Receive] {
					got.Packets += d.Packets
					got.Direction, got.Endpoint, got.Interface = d.Direction, d.Endpoint, d.Interface
				}
			}
			require.Equal(t, runs, got.Packets, "%s = the dropping program's runs: %+v", tc.reason, drops)
			require.Equal(t, tc.dir, got.Direction, tc.reason)
			require.Equal(t, tc.pod.IPv4, got.Endpoint, tc.reason)
			require.Equal(t, tc.pod.Veth, got.Interface, tc.reason)
		}
	})

	t.Run("accept queue full", func(t *testing.T) {
		// A handshake whose final ACK finds the accept queue full: b's
		// listener (backlog 1, never accepting) holds one connection and
		// takes two more SYNs; their ACKs are held back in a until both are
		// pending, then b's SYN-ACK retransmits bring them. (A SYN that
		// finds the queue full is consumed, not dropped: ListenOverflows
		// counts it, kfree_skb does not see it; the kernel's own tracepoint
		// agrees, see README "Drops".)
		lfd := listenNoAccept(t, b.NS, netip.AddrPortFrom(b.IPv4, 7006), 1)
		defer unix.Close(lfd)
		before := snmp(t, b.NS, "/proc/net/netstat", "TcpExt:", "ListenOverflows")
		connectNoWait(t, a.NS, netip.AddrPortFrom(b.IPv4, 7006))
		time.Sleep(200 * time.Millisecond)
		hold := []string{"OUTPUT", "-p", "tcp", "--dport", "7006", "--tcp-flags", "SYN,ACK,FIN,RST", "ACK", "-j", "DROP"}
		_, err := a.NS.Exec(append([]string{"iptables", "-w", "-A"}, hold...)...)
		require.NoError(t, err)
		connectNoWait(t, a.NS, netip.AddrPortFrom(b.IPv4, 7006))
		connectNoWait(t, a.NS, netip.AddrPortFrom(b.IPv4, 7006))
		time.Sleep(300 * time.Millisecond)
		_, err = a.NS.Exec(append([]string{"iptables", "-w", "-D"}, hold...)...)
		require.NoError(t, err)
		time.Sleep(2500 * time.Millisecond) // b's SYN-ACK retransmit after 1 s
		drops := n.drops(t)
		overflows := snmp(t, b.NS, "/proc/net/netstat", "TcpExt:", "ListenOverflows") - before
		require.NotZero(t, overflows)
		got, _ := sum(drops, flow.DropPacket, "TCP_LISTEN_OVERFLOW", netip.AddrPortFrom(b.IPv4, 7006), a.IPv4)
		require.Equal(t, overflows, got.Packets, "TCP_LISTEN_OVERFLOW = ListenOverflows: %+v", drops)
		require.Equal(t, b.IPv4, got.Endpoint)
	})
}

func runCmd(name string, args ...string) (string, error) {
	return testnet.Run(append([]string{name}, args...)...)
}

// dropEverything attaches a program that drops every packet (TCX_DROP)
// after ours on iface, runs fn, and returns how many packets it ran for.
func dropEverything(t *testing.T, iface string, attach ebpf.AttachType, fn func()) uint64 {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}}) // TCX_DROP
	require.NoError(t, err)
	defer prog.Close()
	l, err := netlink.LinkByName(iface)
	require.NoError(t, err)
	tl, err := link.AttachTCX(link.TCXOptions{Interface: l.Attrs().Index, Program: prog, Attach: attach, Anchor: link.Tail()})
	require.NoError(t, err)
	fn()
	require.NoError(t, tl.Close())
	s, err := prog.Stats()
	require.NoError(t, err)
	return s.RunCount
}

// listenNoAccept listens on addr in ns with backlog and never accepts.
func listenNoAccept(t *testing.T, ns *testnet.Netns, addr netip.AddrPort, backlog int) int {
	var fd int
	require.NoError(t, ns.Do(func() (err error) {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
			return err
		}
		return unix.Listen(fd, backlog)
	}))
	return fd
}

// connectNoWait starts a connect from ns to dst and leaves the socket open
// until the test ends.
func connectNoWait(t *testing.T, ns *testnet.Netns, dst netip.AddrPort) {
	require.NoError(t, ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return err
		}
		t.Cleanup(func() { unix.Close(fd) })
		err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()})
		if errors.Is(err, unix.EINPROGRESS) {
			return nil
		}
		return err
	}))
}

// resetTrace records the kernel's tcp_send_reset events in a tracefs
// instance of its own until the test ends.
type resetTrace struct{ dir string }

func newResetTrace(t *testing.T) *resetTrace {
	dir := filepath.Join(mountTracefs(t), "instances", fmt.Sprintf("ebpfnet-rst-%d", os.Getpid()))
	require.NoError(t, os.Mkdir(dir, 0o755))
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(dir, "events/tcp/tcp_send_reset/enable"), []byte("0"), 0)
		_ = syscall.Rmdir(dir)
	})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "events/tcp/tcp_send_reset/enable"), []byte("1"), 0))
	return &resetTrace{dir: dir}
}

// reasons returns the reasons the kernel printed for resets from src.
func (r *resetTrace) reasons(t *testing.T, src netip.AddrPort) []string {
	out, err := os.ReadFile(filepath.Join(r.dir, "trace"))
	require.NoError(t, err)
	var got []string
	re := regexp.MustCompile(`src=(\S+) dest=\S+ .*reason=([A-Z_]+)`)
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		if m[1] == src.String() {
			got = append(got, m[2])
		}
	}
	return got
}

// TestResetReasons: an abort (SO_LINGER 0), a reset to a closed port and a
// keepalive timeout, each with the reason the kernel's own tracepoint
// prints for it; tracked connections carry it, the closed port's reset is
// counted by its endpoints.
func TestResetReasons(t *testing.T) {
	n := newDropNode(t, 28)
	r, err := LoadReasons()
	require.NoError(t, err)
	if !r.HasResetReasons() {
		t.Fatalf("this kernel (6.10+ expected in CI) names no reset reasons")
	}
	trace := newResetTrace(t)
	a, b := n.a, n.b
	ln, err := testnet.ListenTCP(b.NS, netip.AddrPortFrom(b.IPv4, 7101))
	require.NoError(t, err)
	defer ln.Close()

	// An abort: SO_LINGER 0 and close.
	abortPort := dialThen(t, a.NS, netip.AddrPortFrom(b.IPv4, 7101), func(fd int) {
		require.NoError(t, unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}))
	})
	// A keepalive timeout: the peer goes silent (its namespace drops what
	// a sends) while a probes every second, twice.
	var keepPort uint16
	func() {
		keepPort = dialThen(t, a.NS, netip.AddrPortFrom(b.IPv4, 7101), func(fd int) {
			for opt, v := range map[int]int{unix.TCP_KEEPIDLE: 1, unix.TCP_KEEPINTVL: 1, unix.TCP_KEEPCNT: 2} {
				require.NoError(t, unix.SetsockoptInt(fd, unix.IPPROTO_TCP, opt, v))
			}
			require.NoError(t, unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1))
			_, err := b.NS.Exec("iptables", "-w", "-A", "INPUT", "-s", a.IPv4.String(), "-p", "tcp", "--dport", "7101", "-j", "DROP")
			require.NoError(t, err)
			time.Sleep(5 * time.Second) // idle 1 s, 2 probes 1 s apart, then the reset
		})
	}()
	_, err = b.NS.Exec("iptables", "-w", "-F", "INPUT")
	require.NoError(t, err)
	// A reset to a closed port.
	_, err = testnet.Dial(a.NS, netip.AddrPortFrom(b.IPv4, 7102), 0, time.Second)
	require.ErrorIs(t, err, unix.ECONNREFUSED)
	time.Sleep(200 * time.Millisecond)

	conns := readConns(t, n.d, 2*time.Second)
	for _, tc := range []struct {
		name string
		port uint16
	}{{"abort", abortPort}, {"keepalive timeout", keepPort}} {
		src := netip.AddrPortFrom(a.IPv4, tc.port)
		kernel := trace.reasons(t, src)
		require.Len(t, kernel, 1, "%s: the kernel traced one reset from %s", tc.name, src)
		c, ok := conns[src]
		require.True(t, ok, "%s: connection from %s reported", tc.name, src)
		require.Equal(t, kernel[0], c.ResetReason, tc.name)
		require.EqualValues(t, 1, c.ResetsSent, tc.name)
	}
	require.Equal(t, "TCP_KEEPALIVE_TIMEOUT", conns[netip.AddrPortFrom(a.IPv4, keepPort)].ResetReason)

	kernel := trace.reasons(t, netip.AddrPortFrom(b.IPv4, 7102))
	require.Equal(t, []string{"NO_SOCKET"}, kernel, "the closed port's reset")
	got, _ := sum(n.drops(t), flow.DropResetNoSocket, kernel[0], netip.AddrPortFrom(b.IPv4, 7102), a.IPv4)
	require.EqualValues(t, 1, got.Packets, "one reset sent without a socket")
	require.Equal(t, b.IPv4, got.Endpoint)
}

// dialThen connects from ns to dst, calls fn with the socket, closes it
// and returns its local port.
func dialThen(t *testing.T, ns *testnet.Netns, dst netip.AddrPort, fn func(fd int)) uint16 {
	var conn *net.TCPConn
	require.NoError(t, ns.Do(func() error {
		c, err := net.DialTimeout("tcp", dst.String(), time.Second)
		if err == nil {
			conn = c.(*net.TCPConn)
		}
		return err
	}))
	raw, err := conn.SyscallConn()
	require.NoError(t, err)
	require.NoError(t, raw.Control(func(fd uintptr) { fn(int(fd)) }))
	port := uint16(conn.LocalAddr().(*net.TCPAddr).Port)
	conn.Close()
	return port
}

// readConns reads closed connections for d, by local address.
func readConns(t *testing.T, d *Datapath, wait time.Duration) map[netip.AddrPort]flow.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	out := map[netip.AddrPort]flow.Conn{}
	_ = d.ReadConns(ctx, func(c *flow.Conn) { out[c.Local] = *c })
	return out
}

// TestDropTableFullIsCounted: with 16-entry drop tables, datagrams to 100
// closed ports (a key each) fill the active table; every drop UdpNoPorts
// counted is in a drained entry (of the table or a CPU's slot) or in
// drops_full (which also counts the host's other drops the table refused:
// other tests run in parallel).
func TestDropTableFullIsCounted(t *testing.T) {
	n := newDropNodeWith(t, 32, Options{MaxFlows: 4096, MaxDrops: 16})
	before := snmp(t, n.b.NS, "/proc/net/snmp", "Udp:", "NoPorts")
	c0, err := n.d.Counters()
	require.NoError(t, err)
	var conn net.PacketConn
	require.NoError(t, n.a.NS.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", ":0")
		return err
	}))
	for port := uint16(7500); port < 7600; port++ {
		_, err := conn.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(n.b.IPv4, port)))
		require.NoError(t, err)
	}
	conn.Close()
	time.Sleep(100 * time.Millisecond)
	drops := n.drops(t)
	noPorts := snmp(t, n.b.NS, "/proc/net/snmp", "Udp:", "NoPorts") - before
	c1, err := n.d.Counters()
	require.NoError(t, err)
	full := c1[flow.ReasonDropsFull].Packets - c0[flow.ReasonDropsFull].Packets
	var recorded uint64
	for _, d := range drops {
		if d.Reason == "NO_SOCKET" && d.Peer == n.a.IPv4 && d.Local.Port() >= 7500 && d.Local.Port() < 7600 {
			recorded += d.Packets
		}
	}
	require.EqualValues(t, 100, noPorts)
	require.Less(t, len(drops), 100, "a 16-entry table (and a slot per CPU and way) holds fewer keys than were dropped")
	require.NotZero(t, full, "the table filled")
	// drops_full counts every drop the full table refused, the host's
	// (other tests' in parallel) with ours: ours are all in it or in the
	// table, exactly so when nothing else drops meanwhile.
	require.GreaterOrEqual(t, recorded+full, noPorts, "recorded %d + counted as not recorded %d", recorded, full)
	t.Logf("UdpNoPorts %d; recorded %d, drops_full %d (others' drops: %d)", noPorts, recorded, full, recorded+full-noPorts)
}
