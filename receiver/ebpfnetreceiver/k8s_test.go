package ebpfnetreceiver

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// TestStartPeersClearErrors: a Kubernetes configuration that cannot work
// fails Start with an error that says why; disabled means no resolver.
func TestStartPeersClearErrors(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	r, err := startPeers(K8sConfig{}, zap.NewNop())
	require.NoError(t, err)
	require.Nil(t, r)

	_, err = startPeers(K8sConfig{Enabled: true, AuthType: "serviceAccount"}, zap.NewNop())
	require.ErrorContains(t, err, "k8s peer enrichment (auth_type serviceAccount)")
	require.ErrorContains(t, err, "KUBERNETES_SERVICE_HOST")

	_, err = startPeers(K8sConfig{Enabled: true, AuthType: "kubeConfig", Kubeconfig: "/nonexistent/kubeconfig"}, zap.NewNop())
	require.ErrorContains(t, err, "k8s peer enrichment (auth_type kubeConfig)")
	require.ErrorContains(t, err, "/nonexistent/kubeconfig")
}
