package k8stest

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
)

// TestNodeRunsPods: the real node runs a Deployment of the test workload
// behind a ClusterIP Service, pods get addresses of the CNI's range on real
// veths, and a client pod's requests to the Service succeed through the
// real kube-proxy's rules.
func TestNodeRunsPods(t *testing.T) {
	testnet.RequireRoot(t)
	n := StartNode(t, ProgramImage(t, "internal/k8stest/pause", PauseImage))
	n.Import(t, ProgramImage(t, "internal/k8stest/testapp", TestAppImage))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	svc := n.RunTestApp(ctx, t, "shop", 2)
	client := n.RunTestClient(ctx, t, "shop", "client", svc.Spec.ClusterIP, 1000)
	pods, err := n.Client.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, p := range pods.Items {
		require.True(t, netip.MustParsePrefix(PodCIDR).Contains(netip.MustParseAddr(p.Status.PodIP)), p.Name)
	}
	ok := assert.Eventually(t, func() bool {
		return strings.Count(n.PodLog(ctx, t, "shop", client), "received=1000 err=<nil>") >= 3
	}, time.Minute, time.Second)
	n.Alive(t)
	require.True(t, ok, "client requests through the Service: %s\nkube-proxy: %s", n.PodLog(ctx, t, "shop", client), n.Log("kube-proxy"))
}
