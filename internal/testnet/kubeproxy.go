package testnet

import (
	"net/netip"
	"os/exec"
	"testing"
)

// KubeProxy installs kube-proxy's iptables-mode chains for one Service with
// one endpoint in the node's (this) network namespace: nat PREROUTING ->
// KUBE-SERVICES -> KUBE-SVC-EBPFNET -> KUBE-SEP-EBPFNET, which DNATs TCP to
// clusterIP:80 to backend:8080. Removed when the test ends.
func KubeProxy(tb testing.TB, clusterIP, backend netip.Addr) {
	tb.Helper()
	chains := []string{"KUBE-SERVICES", "KUBE-SVC-EBPFNET", "KUBE-SEP-EBPFNET"}
	ipt := func(args ...string) { Must(tb, append([]string{"iptables", "-w", "-t", "nat"}, args...)...) }
	for _, ch := range chains {
		_, _ = exec.Command("iptables", "-w", "-t", "nat", "-N", ch).CombinedOutput() // may exist
	}
	ipt("-A", "KUBE-SEP-EBPFNET", "-p", "tcp", "-j", "DNAT", "--to-destination", backend.String()+":8080")
	ipt("-A", "KUBE-SVC-EBPFNET", "-j", "KUBE-SEP-EBPFNET")
	ipt("-A", "KUBE-SERVICES", "-d", clusterIP.String()+"/32", "-p", "tcp", "--dport", "80", "-j", "KUBE-SVC-EBPFNET")
	ipt("-I", "PREROUTING", "-j", "KUBE-SERVICES")
	tb.Cleanup(func() {
		_, _ = exec.Command("iptables", "-w", "-t", "nat", "-D", "PREROUTING", "-j", "KUBE-SERVICES").CombinedOutput()
		for _, op := range []string{"-F", "-X"} {
			for _, ch := range chains {
				_, _ = exec.Command("iptables", "-w", "-t", "nat", op, ch).CombinedOutput()
			}
		}
	})
}
