package k8s

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/ebpfnet/ebpfnet/internal/k8stest"
)

// TestKubernetesExamples: examples/kubernetes is accepted by a real API
// server (kubectl apply -k --dry-run=server), and its RBAC is enough for the
// resolver's informers and no more than read-only.
func TestKubernetesExamples(t *testing.T) {
	c := k8stest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := filepath.Join("..", "..", "examples", "kubernetes")
	// The namespace and the RBAC for real (impersonation needs them), the
	// rest validated by the server without being persisted.
	_, err := c.Kubectl(ctx, "apply", "-f", filepath.Join(dir, "00-namespace.yaml"), "-f", filepath.Join(dir, "10-rbac.yaml"))
	require.NoError(t, err)
	out, err := c.Kubectl(ctx, "apply", "--dry-run=server", "-k", dir)
	require.NoError(t, err)
	for _, obj := range []string{"daemonset.apps/ebpfnet-agent", "configmap/ebpfnet-agent", "deployment.apps/otel-gateway",
		"deployment.apps/otel-sampler", "service/otel-gateway", "service/otel-sampler"} {
		require.Contains(t, out, obj+" created (server dry run)")
	}

	sa := "system:serviceaccount:ebpfnet:ebpfnet-agent"
	for _, allowed := range []string{"list pods", "watch services", "list endpointslices.discovery.k8s.io", "watch nodes",
		"list replicasets.apps", "watch jobs.batch", "list namespaces"} {
		out, err := c.Kubectl(ctx, append([]string{"auth", "can-i", "--as=" + sa}, strings.Fields(allowed)...)...)
		require.NoError(t, err, allowed)
		require.Equal(t, "yes", lastLine(out), allowed)
	}
	for _, denied := range []string{"get secrets", "create pods", "delete pods", "update nodes", "list configmaps"} {
		out, _ := c.Kubectl(ctx, append([]string{"auth", "can-i", "--as=" + sa}, strings.Fields(denied)...)...)
		require.Equal(t, "no", lastLine(out), denied)
	}

	// The resolver, as the agent's service account, syncs every cache.
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: sa}
	r, err := New(kubernetes.NewForConfigOrDie(cfg), zap.NewNop())
	require.NoError(t, err)
	r.Start()
	defer r.Stop()
	require.True(t, r.WaitSynced(ctx), "the example RBAC lets the resolver list and watch what it needs")
	require.Zero(t, r.WatchFailures())
}

// lastLine drops kubectl's warnings (it writes them to the same output).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
