package testnet

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// Node is a Kubernetes-like node built in the test process's network
// namespace (the "host"): a bridge with veth "pods" in their own namespaces
// (like a bridge CNI), and an uplink veth to a "remote" host namespace that
// routes the pod subnet through the node. Names carry a per-node id so that
// tests select exactly their interfaces.
//
// Addresses: pods 10.250.<id>.0/24 and fd00:250:<id>::/64 (bridge .1 / ::1),
// uplink 10.251.<id>.1/30 <-> remote .2, fd00:251:<id>::1/64 <-> ::2.
// Every neighbor entry is static, so no ARP or neighbor discovery runs: the
// only packets on the wires are the ones the test sends.
type Node struct {
	ID     int
	Bridge string
	Uplink string // host side of the uplink veth
	Remote *Host
	Pods   []*Pod

	bridgeMAC string
	uplinkMAC string
	tb        testing.TB
}

// Host is a namespace with one interface "eth0".
type Host struct {
	NS   *Netns
	IPv4 netip.Addr
	IPv6 netip.Addr
	MAC  string
}

// Pod is a Host behind a veth whose host side is Veth, on the node's bridge.
type Pod struct {
	Host
	Name string
	Veth string
}

// Prefix returns the interface name prefix of node id's endpoint veths.
func Prefix(id int) string { return fmt.Sprintf("ep%d", id) }

// UplinkName returns the uplink interface name of node id.
func UplinkName(id int) string { return fmt.Sprintf("eu%d", id) }

// NewNode builds node id (1..200); everything is removed at test cleanup.
func NewNode(tb testing.TB, id int) *Node {
	tb.Helper()
	RequireRoot(tb)
	n := &Node{ID: id, Bridge: fmt.Sprintf("ebr%d", id), Uplink: UplinkName(id), tb: tb}
	n.cleanupStale()
	tb.Cleanup(n.cleanup)
	restoreSysctls(tb, map[string]string{
		"net.ipv4.ip_forward":                        "1",
		"net.ipv6.conf.all.forwarding":               "1",
		"net.ipv6.conf.default.accept_dad":           "0",
		"net.ipv6.conf.default.accept_ra":            "0",
		"net.ipv6.conf.default.router_solicitations": "0",
	})

	// An explicit address: a bridge without one takes its lowest port's,
	// which would make the pods' static gateway entries stale.
	Must(tb, "ip", "link", "add", n.Bridge, "address", fmt.Sprintf("02:eb:00:00:%02x:01", id), "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
	quietLink(tb, nil, n.Bridge)
	Must(tb, "ip", "addr", "add", fmt.Sprintf("10.250.%d.1/24", id), "dev", n.Bridge)
	Must(tb, "ip", "addr", "add", fmt.Sprintf("fd00:250:%d::1/64", id), "dev", n.Bridge, "nodad")
	Must(tb, "ip", "link", "set", n.Bridge, "up")
	n.bridgeMAC = linkMAC(tb, n.Bridge)

	remote := &Netns{Name: fmt.Sprintf("ebpfnet-%d-remote", id)}
	Must(tb, "ip", "netns", "add", remote.Name)
	n.Remote = &Host{NS: remote, IPv4: netip.MustParseAddr(fmt.Sprintf("10.251.%d.2", id)), IPv6: netip.MustParseAddr(fmt.Sprintf("fd00:251:%d::2", id))}
	Must(tb, "ip", "link", "add", n.Uplink, "type", "veth", "peer", "name", "eth0", "netns", remote.Name)
	quietLink(tb, nil, n.Uplink)
	Must(tb, "ip", "addr", "add", fmt.Sprintf("10.251.%d.1/30", id), "dev", n.Uplink)
	Must(tb, "ip", "addr", "add", fmt.Sprintf("fd00:251:%d::1/64", id), "dev", n.Uplink, "nodad")
	Must(tb, "ip", "link", "set", n.Uplink, "up")
	n.uplinkMAC = linkMAC(tb, n.Uplink)
	quietNamespace(tb, remote)
	quietLink(tb, remote, "eth0")
	mustNS(tb, remote, "ip", "addr", "add", n.Remote.IPv4.String()+"/30", "dev", "eth0")
	mustNS(tb, remote, "ip", "addr", "add", n.Remote.IPv6.String()+"/64", "dev", "eth0", "nodad")
	mustNS(tb, remote, "ip", "link", "set", "eth0", "up")
	mustNS(tb, remote, "ip", "link", "set", "lo", "up")
	mustNS(tb, remote, "ip", "route", "add", fmt.Sprintf("10.250.%d.0/24", id), "via", fmt.Sprintf("10.251.%d.1", id))
	mustNS(tb, remote, "ip", "-6", "route", "add", fmt.Sprintf("fd00:250:%d::/64", id), "via", fmt.Sprintf("fd00:251:%d::1", id))
	n.Remote.MAC = nsLinkMAC(tb, remote, "eth0")
	// Static neighbors both ways on the uplink.
	Must(tb, "ip", "neigh", "replace", n.Remote.IPv4.String(), "lladdr", n.Remote.MAC, "dev", n.Uplink, "nud", "permanent")
	Must(tb, "ip", "-6", "neigh", "replace", n.Remote.IPv6.String(), "lladdr", n.Remote.MAC, "dev", n.Uplink, "nud", "permanent")
	mustNS(tb, remote, "ip", "neigh", "replace", fmt.Sprintf("10.251.%d.1", id), "lladdr", n.uplinkMAC, "dev", "eth0", "nud", "permanent")
	mustNS(tb, remote, "ip", "-6", "neigh", "replace", fmt.Sprintf("fd00:251:%d::1", id), "lladdr", n.uplinkMAC, "dev", "eth0", "nud", "permanent")
	return n
}

// AddPod adds pod number idx (2..250) on the bridge.
func (n *Node) AddPod(tb testing.TB, idx int) *Pod {
	tb.Helper()
	ns := &Netns{Name: fmt.Sprintf("ebpfnet-%d-pod%d", n.ID, idx)}
	p := &Pod{
		Name: fmt.Sprintf("pod%d", idx),
		Veth: fmt.Sprintf("%s-%d", Prefix(n.ID), idx),
		Host: Host{NS: ns,
			IPv4: netip.MustParseAddr(fmt.Sprintf("10.250.%d.%d", n.ID, idx)),
			IPv6: netip.MustParseAddr(fmt.Sprintf("fd00:250:%d::%x", n.ID, idx))},
	}
	Must(tb, "ip", "netns", "add", ns.Name)
	quietNamespace(tb, ns)
	Must(tb, "ip", "link", "add", p.Veth, "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
	// A bridge port needs no addresses: no IPv6 on the host side of the veth.
	Must(tb, "sysctl", "-qw", "net.ipv6.conf."+p.Veth+".disable_ipv6=1")
	quietLink(tb, ns, "eth0")
	Must(tb, "ip", "link", "set", p.Veth, "master", n.Bridge)
	Must(tb, "ip", "link", "set", p.Veth, "up")
	mustNS(tb, ns, "ip", "addr", "add", p.IPv4.String()+"/24", "dev", "eth0")
	mustNS(tb, ns, "ip", "addr", "add", p.IPv6.String()+"/64", "dev", "eth0", "nodad")
	mustNS(tb, ns, "ip", "link", "set", "eth0", "up")
	mustNS(tb, ns, "ip", "link", "set", "lo", "up")
	mustNS(tb, ns, "ip", "route", "add", "default", "via", fmt.Sprintf("10.250.%d.1", n.ID))
	mustNS(tb, ns, "ip", "-6", "route", "add", "default", "via", fmt.Sprintf("fd00:250:%d::1", n.ID))
	p.MAC = nsLinkMAC(tb, ns, "eth0")

	// Static neighbors: pod <-> gateway, pod <-> every other pod.
	mustNS(tb, ns, "ip", "neigh", "replace", fmt.Sprintf("10.250.%d.1", n.ID), "lladdr", n.bridgeMAC, "dev", "eth0", "nud", "permanent")
	mustNS(tb, ns, "ip", "-6", "neigh", "replace", fmt.Sprintf("fd00:250:%d::1", n.ID), "lladdr", n.bridgeMAC, "dev", "eth0", "nud", "permanent")
	Must(tb, "ip", "neigh", "replace", p.IPv4.String(), "lladdr", p.MAC, "dev", n.Bridge, "nud", "permanent")
	Must(tb, "ip", "-6", "neigh", "replace", p.IPv6.String(), "lladdr", p.MAC, "dev", n.Bridge, "nud", "permanent")
	for _, o := range n.Pods {
		mustNS(tb, ns, "ip", "neigh", "replace", o.IPv4.String(), "lladdr", o.MAC, "dev", "eth0", "nud", "permanent")
		mustNS(tb, ns, "ip", "-6", "neigh", "replace", o.IPv6.String(), "lladdr", o.MAC, "dev", "eth0", "nud", "permanent")
		mustNS(tb, o.NS, "ip", "neigh", "replace", p.IPv4.String(), "lladdr", p.MAC, "dev", "eth0", "nud", "permanent")
		mustNS(tb, o.NS, "ip", "-6", "neigh", "replace", p.IPv6.String(), "lladdr", p.MAC, "dev", "eth0", "nud", "permanent")
	}
	n.Pods = append(n.Pods, p)
	return p
}

// quietNamespace turns off what would send packets the test did not ask for.
func quietNamespace(tb testing.TB, ns *Netns) {
	for _, kv := range []string{
		"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0",
		"net.ipv6.conf.all.router_solicitations=0", "net.ipv6.conf.default.router_solicitations=0",
		// Send the unsolicited MLD reports of a new interface at once, so
		// that WaitQuiet sees the end of them.
		"net.ipv6.conf.default.mldv2_unsolicited_report_interval=1", "net.ipv6.conf.default.mldv1_unsolicited_report_interval=1",
	} {
		mustNS(tb, ns, "sysctl", "-qw", kv)
	}
}

// quietLink makes an interface send no IPv6 control traffic of its own
// accord beyond the first MLD reports, and those at once (ns nil: the host).
func quietLink(tb testing.TB, ns *Netns, name string) {
	tb.Helper()
	for _, kv := range []string{"accept_dad=0", "accept_ra=0", "router_solicitations=0",
		"mldv1_unsolicited_report_interval=1", "mldv2_unsolicited_report_interval=1"} {
		args := []string{"sysctl", "-qw", "net.ipv6.conf." + strings.ReplaceAll(name, ".", "/") + "." + kv}
		if ns == nil {
			Must(tb, args...)
		} else {
			mustNS(tb, ns, args...)
		}
	}
}

func mustNS(tb testing.TB, ns *Netns, args ...string) string {
	tb.Helper()
	out, err := ns.Exec(args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func linkMAC(tb testing.TB, name string) string {
	tb.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		tb.Fatal(err)
	}
	return l.Attrs().HardwareAddr.String()
}

func nsLinkMAC(tb testing.TB, ns *Netns, name string) string {
	tb.Helper()
	var mac string
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		mac = l.Attrs().HardwareAddr.String()
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return mac
}

func (n *Node) cleanupStale() {
	_, _ = run("ip", "link", "del", n.Bridge)
	_, _ = run("ip", "link", "del", n.Uplink)
	// Pod veths of an earlier run whose namespace a leftover process still
	// holds (a test killed by a timeout does not run its cleanups).
	links, _ := run("ip", "-br", "link")
	for _, line := range strings.Split(links, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			name, _, _ := strings.Cut(f[0], "@")
			if strings.HasPrefix(name, Prefix(n.ID)+"-") {
				_, _ = run("ip", "link", "del", name)
			}
		}
	}
	out, _ := run("ip", "netns", "list")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], fmt.Sprintf("ebpfnet-%d-", n.ID)) {
			_, _ = run("ip", "netns", "del", f[0])
		}
	}
}

func (n *Node) cleanup() {
	n.cleanupStale()
	for _, p := range n.Pods {
		_, _ = run("ip", "link", "del", p.Veth)
	}
}

// DelPod removes a pod (its namespace and veth).
func (n *Node) DelPod(tb testing.TB, p *Pod) {
	tb.Helper()
	Must(tb, "ip", "link", "del", p.Veth)
	Must(tb, "ip", "netns", "del", p.NS.Name)
}

func restoreSysctls(tb testing.TB, set map[string]string) {
	for k, v := range set {
		path := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
		old, err := os.ReadFile(path)
		if err != nil {
			tb.Fatalf("read %s: %v", k, err)
		}
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			tb.Fatalf("set %s: %v", k, err)
		}
		tb.Cleanup(func() { _ = os.WriteFile(path, old, 0o644) })
	}
}

// LinkStats are an interface's kernel counters (as `ip -s link` shows them).
type LinkStats struct {
	RxBytes, RxPackets, TxBytes, TxPackets uint64
}

// Sub returns s - o.
func (s LinkStats) Sub(o LinkStats) LinkStats {
	return LinkStats{s.RxBytes - o.RxBytes, s.RxPackets - o.RxPackets, s.TxBytes - o.TxBytes, s.TxPackets - o.TxPackets}
}

// Stats reads an interface's counters through netlink.
func Stats(tb testing.TB, name string) LinkStats {
	tb.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		tb.Fatal(err)
	}
	s := l.Attrs().Statistics
	return LinkStats{s.RxBytes, s.RxPackets, s.TxBytes, s.TxPackets}
}

// WaitQuiet waits until none of the interfaces' counters moves for 300 ms
// (at most 5 s), so that setup traffic is over before a test measures.
func WaitQuiet(tb testing.TB, names ...string) {
	tb.Helper()
	snap := func() []LinkStats {
		var s []LinkStats
		for _, n := range names {
			s = append(s, Stats(tb, n))
		}
		return s
	}
	deadline := time.Now().Add(5 * time.Second)
	prev := snap()
	for time.Now().Before(deadline) {
		time.Sleep(300 * time.Millisecond)
		cur := snap()
		same := true
		for i := range cur {
			same = same && cur[i] == prev[i]
		}
		if same {
			return
		}
		prev = cur
	}
	tb.Fatalf("interfaces %v never went quiet", names)
}
