// Package k8stest runs a real Kubernetes control plane for tests: Debian's
// etcd and a kube-apiserver built from the Go module proxy (its own module
// in ./kube, one binary of all the components, built once and cached), both
// on loopback. Tests create
// Nodes, Pods, Services and EndpointSlices through it; no kubelet or
// controller runs, so the test sets what they would (pod IPs through the
// status subresource, EndpointSlices).
package k8stest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeVersion is the Kubernetes built for the tests.
const KubeVersion = "v1.36.3"

// ServiceCIDR is the range the API server allocates ClusterIPs from.
const ServiceCIDR = "10.96.0.0/16"

// Token is the bearer token of the admin user (system:masters).
const Token = "ebpfnet-test-admin-token"

var buildMu sync.Mutex

// KubeBinary returns the cached binary of the Kubernetes components
// (./kube: `kube kube-apiserver ...`, `kube kubelet ...`), building it
// first if needed (a few minutes the first time; cached in $EBPFNET_CACHE or
// ~/.cache/ebpfnet). Test binaries of several packages run at once: one
// builds, the others wait on the lock and then find the binary.
func KubeBinary(t testing.TB) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	dir := CacheDir(t)
	bin := filepath.Join(dir, "kube-"+KubeVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	lock, err := os.OpenFile(filepath.Join(dir, "kube.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	_, self, _, _ := runtime.Caller(0)
	t.Logf("building the Kubernetes %s components into %s (first run only, a few minutes)", KubeVersion, bin)
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	// A release build stamps its version; without it the components say
	// v0.0.0-master, which the kubelet's version checks reject.
	v := "k8s.io/component-base/version"
	minor := strings.Split(KubeVersion, ".")[1]
	ldflags := fmt.Sprintf("-s -w -X %[1]s.gitVersion=%[2]s -X %[1]s.gitMajor=1 -X %[1]s.gitMinor=%[3]s -X %[1]s.gitTreeState=clean",
		v, KubeVersion, minor)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", tmp, ".")
	cmd.Dir = filepath.Join(filepath.Dir(self), "kube")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the Kubernetes components: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// CacheDir is where the tests keep what they build: $EBPFNET_CACHE, else
// ~/.cache/ebpfnet.
func CacheDir(t testing.TB) string {
	dir := os.Getenv("EBPFNET_CACHE")
	if dir == "" {
		home, err := os.UserCacheDir()
		if err != nil {
			t.Fatalf("cache dir: %v", err)
		}
		dir = filepath.Join(home, "ebpfnet")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// RequireEtcd returns etcd's path, or fails the test: `make test` installs
// Debian's etcd-server (scripts/deps.sh) before it runs.
func RequireEtcd(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not installed: run scripts/deps.sh (apt-get install etcd-server): %v", err)
	}
	return p
}

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	Client     kubernetes.Interface
	Config     *rest.Config
	Kubeconfig string // path of an admin kubeconfig
	URL        string

	t         testing.TB
	dir       string
	apiserver *exec.Cmd
	apiArgs   []string
	bin       string
	etcd      *exec.Cmd
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startEtcd runs etcd until the test ends and returns its client URL.
func (c *Cluster) startEtcd(etcdBin string) string {
	t, dir := c.t, c.dir
	etcdPort, peerPort := freePort(t), freePort(t)
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	c.etcd = exec.Command(etcdBin, "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", "http://127.0.0.1:"+strconv.Itoa(peerPort),
		"--initial-advertise-peer-urls", "http://127.0.0.1:"+strconv.Itoa(peerPort),
		"--initial-cluster", "default=http://127.0.0.1:"+strconv.Itoa(peerPort),
		"--quota-backend-bytes", strconv.Itoa(4<<30))
	c.etcd.Stdout, c.etcd.Stderr = logFile(t, dir, "etcd.log"), logFile(t, dir, "etcd.log")
	if err := c.etcd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() { stop(c.etcd) })
	return etcdURL
}

// connect makes the cluster's client and the kubeconfig file.
func (c *Cluster) connect() {
	t, dir := c.t, c.dir

	c.Config = &rest.Config{Host: c.URL, BearerToken: Token, TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS: 500, Burst: 1000}
	c.Client = kubernetes.NewForConfigOrDie(c.Config)
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: c.URL, InsecureSkipTLSVerify: true}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: Token}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin"}
	kc.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*kc, c.Kubeconfig); err != nil {
		t.Fatal(err)
	}
}

// Options change how Start runs the control plane.
type Options struct {
	// Address is where kube-apiserver listens and what it advertises (the
	// endpoint of the kubernetes Service): loopback by default; a test
	// interface's address for a node whose pods reach it.
	Address netip.Addr
	// ServiceAccounts enables the ServiceAccount admission plugin (pods
	// get tokens): with a controller manager that creates the accounts.
	ServiceAccounts bool
}

// Start runs etcd and kube-apiserver on loopback until the test ends.
func Start(t testing.TB) *Cluster { return StartWith(t, Options{}) }

// StartWith runs etcd and kube-apiserver until the test ends.
func StartWith(t testing.TB, o Options) *Cluster {
	t.Helper()
	etcdBin := RequireEtcd(t)
	bin := KubeBinary(t)
	dir := t.TempDir()
	c := &Cluster{t: t, dir: dir, bin: bin}
	etcdURL := c.startEtcd(etcdBin)
	c.writeKeys()
	if !o.Address.IsValid() {
		o.Address = netip.MustParseAddr("127.0.0.1")
	}
	port := freePort(t)
	c.URL = "https://" + netip.AddrPortFrom(o.Address, uint16(port)).String()
	c.apiArgs = []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + o.Address.String(), "--advertise-address=" + o.Address.String(),
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--token-auth-file=" + c.TokenFile(),
		"--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + c.ServiceAccountKey(),
		"--service-account-signing-key-file=" + c.ServiceAccountKey(),
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		// The test node's name resolves nowhere: reach its kubelet by address.
		"--kubelet-preferred-address-types=InternalIP",
	}
	if !o.ServiceAccounts {
		// No controller manager creates the default ServiceAccount.
		c.apiArgs = append(c.apiArgs, "--disable-admission-plugins=ServiceAccount")
	}
	c.StartAPIServer()
	t.Cleanup(c.StopAPIServer)
	c.connect()
	return c
}

// writeKeys writes the service-account signing key and the admin token.
func (c *Cluster) writeKeys() {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		c.t.Fatal(err)
	}
	writeFile(c.t, c.ServiceAccountKey(), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	writeFile(c.t, c.TokenFile(), []byte(Token+",admin,admin,system:masters\n"))
}

// ServiceAccountKey is the file of the key that signs service-account tokens.
func (c *Cluster) ServiceAccountKey() string { return filepath.Join(c.dir, "sa.key") }

// TokenFile is the API server's static token file.
func (c *Cluster) TokenFile() string { return filepath.Join(c.dir, "tokens.csv") }

// CertDir holds the API server's self-signed certificate (apiserver.crt:
// the certificate and the CA that signed it).
func (c *Cluster) CertDir() string { return filepath.Join(c.dir, "certs") }

// StartAPIServer (re)starts kube-apiserver with the same flags and waits
// until it is ready.
func (c *Cluster) StartAPIServer() {
	c.t.Helper()
	c.apiserver = exec.Command(c.bin, append([]string{"kube-apiserver"}, c.apiArgs...)...)
	f := logFile(c.t, c.dir, "kube-apiserver.log")
	c.apiserver.Stdout, c.apiserver.Stderr = f, f
	if err := c.apiserver.Start(); err != nil {
		c.t.Fatalf("start kube-apiserver: %v", err)
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	deadline := time.Now().Add(90 * time.Second)
	for {
		req, _ := http.NewRequest("GET", c.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+Token)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(c.dir, "kube-apiserver.log"))
			if len(log) > 4000 {
				log = log[len(log)-4000:]
			}
			c.t.Fatalf("kube-apiserver not ready after 90 s:\n%s", log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// StopAPIServer kills kube-apiserver (etcd keeps the state).
func (c *Cluster) StopAPIServer() {
	if c.apiserver != nil {
		stop(c.apiserver)
		c.apiserver = nil
	}
}

// Kubectl runs kubectl against the cluster.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %v: %w\n%s", args, err, out)
	}
	return string(out), nil
}

func stop(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

func logFile(t testing.TB, dir, name string) *os.File {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func writeFile(t testing.TB, path string, b []byte) {
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } // the test's own self-signed server
