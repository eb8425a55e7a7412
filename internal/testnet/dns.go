package testnet

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// Dnsmasq runs Debian's dnsmasq in ns on addr:53 until the test ends,
// authoritative for .test from hosts (lines of /etc/hosts; other .test
// names are NXDOMAIN), without a cache, with extra options (records), and
// waits until it answers.
func Dnsmasq(tb testing.TB, ns *Netns, addr string, hosts string, extra ...string) {
	tb.Helper()
	path, err := exec.LookPath("dnsmasq")
	if err != nil {
		tb.Fatalf("dnsmasq (Debian dnsmasq-base, installed by scripts/deps.sh): %v", err)
	}
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts), 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, path, "--keep-in-foreground", "--no-resolv", "--no-hosts",
		"--addn-hosts="+filepath.Join(dir, "hosts"), "--listen-address="+addr, "--bind-interfaces", "--port=53",
		"--local=/test/", "--user=root", "--pid-file="+filepath.Join(dir, "pid"), "--cache-size=0")
	cmd.Args = append(cmd.Args, extra...)
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if Dig(ns, "@"+addr, "ready.test").Status != "" {
			return
		}
	}
	tb.Fatalf("dnsmasq in %s does not answer at %s", ns.Name, addr)
}

// DigResult is what dig said of one lookup.
type DigResult struct {
	Status  string // NOERROR, NXDOMAIN, ...; "" when no answer came (timeout)
	Latency time.Duration
	Size    int // bytes of the answer dig received
	Output  string
}

var (
	digStatus = regexp.MustCompile(`status: ([A-Z]+)`)
	digTime   = regexp.MustCompile(`Query time: (\d+) msec`)
	digSize   = regexp.MustCompile(`MSG SIZE\s+rcvd: (\d+)`)
)

// Dig runs Debian's dig in ns with one try of at most two seconds.
func Dig(ns *Netns, args ...string) DigResult {
	out, _ := ns.Exec(append([]string{"dig", "+tries=1", "+time=2"}, args...)...)
	r := DigResult{Output: out}
	if m := digStatus.FindStringSubmatch(out); m != nil {
		r.Status = m[1]
	}
	if m := digTime.FindStringSubmatch(out); m != nil {
		ms, _ := strconv.Atoi(m[1])
		r.Latency = time.Duration(ms) * time.Millisecond
	}
	if m := digSize.FindStringSubmatch(out); m != nil {
		r.Size, _ = strconv.Atoi(m[1])
	}
	return r
}
