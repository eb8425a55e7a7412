package k8stest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The test node's addresses: the node (and the API server it advertises) on
// a veth to a namespace standing for the rest of the network, and the pod
// range of its bridge CNI.
const (
	NodeName    = "ebpfnet-node"
	nodeCIDR    = "10.250.0.1/24"
	remoteCIDR  = "10.250.0.2/24"
	PodCIDR     = "10.252.0.0/24"
	PauseImage  = "registry.k8s.io/pause:3.10"
	nodeIface   = "ebn-node"
	remoteNetns = "ebn-remote"
)

// NodeAddr is the node's address (the API server's too).
var NodeAddr = netip.MustParsePrefix(nodeCIDR).Addr()

// Node is a real single-node cluster: the control plane of StartWith plus
// kube-controller-manager and kube-scheduler, a kubelet on containerd (runc,
// Debian's bridge, host-local, loopback and portmap CNI plugins) and
// kube-proxy in iptables mode, all on this machine. Images come from
// archives the tests build (nothing can be pulled here). Every process is
// stopped when the test ends.
type Node struct {
	*Cluster
	// Containerd is containerd's socket; Ctr runs ctr against it.
	Containerd string
	run        string // short directory for sockets and the node's state
	mu         sync.Mutex
	exited     []string // processes that exited, with their logs' tails
	stopping   bool
}

// StartNode starts the node and waits until it is Ready. pause is the
// archive of the sandbox image (PauseImage).
func StartNode(t testing.TB, pause string) *Node {
	t.Helper()
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc", "/usr/lib/cni/bridge", "iptables", "conntrack"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("the test node needs %s: run scripts/deps.sh: %v", b, err)
		}
	}
	lockNode(t)
	// What a killed run left.
	sweepDeadNode()
	sweepNode(KubeBinary(t))
	setupNetwork(t)
	n := &Node{}
	n.Cluster = StartWith(t, Options{Address: NodeAddr, ServiceAccounts: true})
	run, err := os.MkdirTemp("/tmp", "ebn") // socket paths must stay short
	if err != nil {
		t.Fatal(err)
	}
	n.run = run
	t.Cleanup(func() { _ = os.RemoveAll(run) })
	// After containerd and the node's components stopped (cleanups run
	// last first): the pods, their shims, mounts, networks and rules.
	t.Cleanup(func() { sweepNode(n.bin) })
	n.startContainerd(t)
	n.Import(t, pause)
	n.startComponents(t)
	n.waitReady(t)
	return n
}

// lockNode makes node tests of different packages (go test runs packages
// in parallel) take turns: one machine has one cni0, one set of kube-proxy
// rules. Held until the test ends.
func lockNode(t testing.TB) {
	f, err := os.OpenFile(filepath.Join(CacheDir(t), "node.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
}

// setupNetwork makes the node's address: a veth to a namespace of the
// test's own (nothing leaves the machine).
func setupNetwork(t testing.TB) {
	run := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	_ = exec.Command("ip", "link", "del", nodeIface).Run() // left by a killed run
	_ = exec.Command("ip", "netns", "del", remoteNetns).Run()
	run("ip", "netns", "add", remoteNetns)
	run("ip", "link", "add", nodeIface, "type", "veth", "peer", "name", "eth0", "netns", remoteNetns)
	run("ip", "addr", "add", nodeCIDR, "dev", nodeIface)
	run("ip", "link", "set", nodeIface, "up")
	run("ip", "-n", remoteNetns, "addr", "add", remoteCIDR, "dev", "eth0")
	run("ip", "-n", remoteNetns, "link", "set", "eth0", "up")
	run("ip", "-n", remoteNetns, "link", "set", "lo", "up")
	run("sysctl", "-qw", "net.ipv4.ip_forward=1")
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", nodeIface).Run()
		_ = exec.Command("ip", "netns", "del", remoteNetns).Run()
	})
}

// daemon starts a process of the node, logging to name.log, and stops it
// when the test ends; one that exits before is reported by Alive.
func (n *Node) daemon(t testing.TB, name string, args ...string) {
	cmd := exec.Command(args[0], args[1:]...)
	f := logFile(t, n.dir, name+".log")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		n.mu.Lock()
		n.exited = append(n.exited, fmt.Sprintf("%s exited (%v): %s", name, err, n.logTail(name+".log")))
		n.mu.Unlock()
		close(done)
	}()
	t.Cleanup(func() {
		n.mu.Lock()
		n.stopping = true
		n.mu.Unlock()
		_ = cmd.Process.Kill()
		<-done
	})
}

// Alive fails the test if a process of the node exited.
func (n *Node) Alive(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.exited) > 0 && !n.stopping {
		t.Fatalf("the test node lost a process: %s", strings.Join(n.exited, "\n"))
	}
}

func (n *Node) startContainerd(t testing.TB) {
	n.Containerd = filepath.Join(n.run, "containerd.sock")
	cni := filepath.Join(n.run, "cni")
	if err := os.MkdirAll(cni, 0o755); err != nil {
		t.Fatal(err)
	}
	// The addresses host-local hands out are kept in this run's directory:
	// in its default, /var/lib/cni, those of pods a test's teardown killed
	// without a CNI DEL accumulated until the range was exhausted.
	writeFile(t, filepath.Join(cni, "10-ebpfnet.conflist"), []byte(fmt.Sprintf(cniConfig, PodCIDR, filepath.Join(n.run, "cni-ipam"))))
	conf := filepath.Join(n.run, "containerd.toml")
	// restrict_oom_score_adj: this machine withholds CAP_SYS_RESOURCE, so a
	// negative oom_score_adj fails (runc then reports only "can't get final
	// child's PID from pipe").
	writeFile(t, conf, []byte(fmt.Sprintf(containerdConfig, filepath.Join(n.run, "root"), filepath.Join(n.run, "state"),
		n.Containerd, PauseImage, cni)))
	n.daemon(t, "containerd", "containerd", "--config", conf)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := n.Ctr("version"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s: %s", n.Containerd, n.logTail("containerd.log"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const containerdConfig = `version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`

const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "ebpfnet-test",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}`

// Ctr runs ctr in containerd's k8s.io namespace (the kubelet's).
func (n *Node) Ctr(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"--address", n.Containerd, "-n", "k8s.io"}, args...)...).CombinedOutput()
	return string(out), err
}

// Import imports an image archive for the kubelet.
func (n *Node) Import(t testing.TB, archive string) {
	t.Helper()
	if out, err := n.Ctr("images", "import", archive); err != nil {
		t.Fatalf("ctr images import %s: %v: %s", archive, err, out)
	}
}

func (n *Node) startComponents(t testing.TB) {
	kc := n.Kubeconfig
	podCIDR := PodCIDR
	n.daemon(t, "kube-controller-manager", n.bin, "kube-controller-manager", "--kubeconfig="+kc,
		"--service-account-private-key-file="+n.ServiceAccountKey(), "--root-ca-file="+filepath.Join(n.CertDir(), "apiserver.crt"),
		"--use-service-account-credentials=false", "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0",
		"--cluster-cidr="+podCIDR, "--allocate-node-cidrs=false", "--controllers=*,-nodeipam,-cloud-node-lifecycle")
	n.daemon(t, "kube-scheduler", n.bin, "kube-scheduler", "--kubeconfig="+kc, "--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port=0")
	conf := filepath.Join(n.run, "kubelet.yaml")
	writeFile(t, conf, []byte(fmt.Sprintf(kubeletConfig, "unix://"+n.Containerd)))
	n.daemon(t, "kubelet", n.bin, "kubelet", "--kubeconfig="+kc, "--config="+conf,
		"--root-dir="+filepath.Join(n.run, "kubelet"), "--cert-dir="+filepath.Join(n.run, "kubelet-pki"),
		"--hostname-override="+NodeName, "--node-ip="+NodeAddr.String(), "--address="+NodeAddr.String())
	n.daemon(t, "kube-proxy", n.bin, "kube-proxy", "--kubeconfig="+kc, "--proxy-mode=iptables",
		"--hostname-override="+NodeName, "--cluster-cidr="+podCIDR, "--conntrack-max-per-core=0",
		"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(freePort(t)), "--healthz-bind-address=127.0.0.1:"+strconv.Itoa(freePort(t)))
}

// kubeletConfig is the kubelet's configuration for this machine: cgroup v1
// hybrid (failCgroupV1: false, the cgroupfs driver), swap on, no
// filesystem info for the root device (localStorageCapacityIsolation). It
// serves on the node's address of the test veth only (--address), to the
// API server (logs), without client authentication; pods resolve through
// the cluster DNS (RunCoreDNS).
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: %q
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
localStorageCapacityIsolation: false
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
readOnlyPort: 0
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 0
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {}
enforceNodeAllocatable: []
resolvConf: /etc/resolv.conf
clusterDNS: [` + ClusterDNS + `]
clusterDomain: ` + ClusterDomain + `
`

func (n *Node) waitReady(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		n.Alive(t)
		node, err := n.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err == nil {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return
				}
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("node %s not Ready after 2 minutes (%v); kubelet: %s", NodeName, err, n.logTail("kubelet.log"))
		}
		time.Sleep(time.Second)
	}
}

func (n *Node) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(n.dir, name))
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// Log is the log of a node process (containerd, kubelet, kube-proxy, ...).
func (n *Node) Log(name string) string { return n.logTail(name + ".log") }
