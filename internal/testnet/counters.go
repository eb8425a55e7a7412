package testnet

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// SNMP reads one counter of /proc/net/snmp or /proc/net/netstat (file) in
// ns (nil: the test's own namespace): the column name of the row group
// ("Udp:", "Tcp:", "TcpExt:").
func SNMP(ns *Netns, file, group, name string) (uint64, error) {
	out, err := inNSExec(ns, "cat", file)
	if err != nil {
		return 0, err
	}
	var header []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != group {
			continue
		}
		if header == nil {
			header = f
			continue
		}
		for i := range header {
			if header[i] == name && i < len(f) {
				return strconv.ParseUint(f[i], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("%s: no %s %s", file, group, name)
}

// RuleCounters reads the packet and byte counters of the iptables rule
// with comment in chain of ns (nil: the test's own namespace).
func RuleCounters(ns *Netns, chain, comment string) (packets, bytes uint64, err error) {
	out, err := inNSExec(ns, "iptables", "-w", "-nvxL", chain)
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, "/* "+comment+" */") {
			continue
		}
		f := strings.Fields(line)
		if packets, err = strconv.ParseUint(f[0], 10, 64); err == nil {
			bytes, err = strconv.ParseUint(f[1], 10, 64)
		}
		return packets, bytes, err
	}
	return 0, 0, fmt.Errorf("no iptables rule %q in %s:\n%s", comment, chain, out)
}

func inNSExec(ns *Netns, args ...string) (string, error) {
	if ns == nil {
		return run(args...)
	}
	return ns.Exec(args...)
}
