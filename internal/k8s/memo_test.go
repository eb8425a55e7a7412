package k8s

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestMemoHoldsUntilReset: within one interval a memo answers from what it
// saw first; after Reset it sees the change.
func TestMemoHoldsUntilReset(t *testing.T) {
	client := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.5"}})
	r, err := New(client, zap.NewNop())
	require.NoError(t, err)
	r.Start()
	defer r.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.True(t, r.WaitSynced(ctx))

	ip := netip.MustParseAddr("10.244.0.5")
	m := NewMemo(r)
	p, ok := m.Lookup(ip)
	require.True(t, ok)
	require.Equal(t, "a", p.Name)

	require.NoError(t, client.CoreV1().Pods("ns").Delete(ctx, "a", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { _, ok := r.Lookup(ip); return !ok }, 5*time.Second, 10*time.Millisecond)
	p, ok = m.Lookup(ip)
	require.True(t, ok, "the memo keeps the interval's answer")
	require.Equal(t, "a", p.Name)
	m.Reset()
	_, ok = m.Lookup(ip)
	require.False(t, ok)
}
