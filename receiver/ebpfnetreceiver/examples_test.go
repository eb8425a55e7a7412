package ebpfnetreceiver

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestExampleConfigsValidate: the receiver sections of the example
// collector configs (local and Kubernetes) unmarshal and validate, and the
// DaemonSet is unprivileged: exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN,
// read-only root filesystem.
func TestExampleConfigsValidate(t *testing.T) {
	var cmap corev1.ConfigMap
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "kubernetes", "20-agent-config.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &cmap))
	local, err := os.ReadFile(filepath.Join("..", "..", "examples", "local", "config.yaml"))
	require.NoError(t, err)
	for name, text := range map[string]string{"kubernetes": cmap.Data["config.yaml"], "local": string(local)} {
		var raw map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(text), &raw), name)
		conf := confmap.NewFromStringMap(raw)
		sub, err := conf.Sub("receivers::ebpfnet")
		require.NoError(t, err, name)
		cfg := NewFactory().CreateDefaultConfig().(*Config)
		require.NoError(t, sub.Unmarshal(cfg), name)
		require.NoError(t, cfg.Validate(), name)
		if name == "kubernetes" {
			require.True(t, cfg.K8s.Enabled)
			require.Equal(t, "/host/sys/fs/cgroup", cfg.CgroupPath)
		}
	}

	var ds appsv1.DaemonSet
	b, err = os.ReadFile(filepath.Join("..", "..", "examples", "kubernetes", "30-agent-daemonset.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &ds))
	require.Len(t, ds.Spec.Template.Spec.Containers, 1)
	sc := ds.Spec.Template.Spec.Containers[0].SecurityContext
	require.NotNil(t, sc)
	require.False(t, sc.Privileged != nil && *sc.Privileged, "no privileged: true")
	require.True(t, sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem)
	require.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
	require.ElementsMatch(t, []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN"}, sc.Capabilities.Add)
	pod := ds.Spec.Template.Spec
	require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, pod.SecurityContext.SeccompProfile.Type, "the runtime's default seccomp profile")
	require.Nil(t, sc.SeccompProfile, "no container-level override (Unconfined)")
	c := pod.Containers[0]
	require.NotNil(t, c.ReadinessProbe, "readiness from the health_check extension")
	require.NotNil(t, c.LivenessProbe)
}
