package ebpfnetreceiver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/ebpfnet/ebpfnet/internal/kernel"
	"github.com/ebpfnet/ebpfnet/internal/testnet"
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
		// make run (local) and the agent show every signal: flows, flow
		// records and connection spans.
		for _, signal := range []string{"metrics", "logs", "traces"} {
			receivers, err := conf.Sub("service::pipelines::" + signal)
			require.NoError(t, err)
			require.Contains(t, receivers.Get("receivers"), "ebpfnet", "%s: a %s pipeline from the receiver", name, signal)
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

// TestExampleMemoryBudget: the example agent's memory settings are one
// budget. The DaemonSet's limit holds the BPF maps at the example's sizes
// (planned by the kernel's own accounting, plus their per-CPU part on a
// 64-CPU node), GOMEMLIMIT and slack for what the Go runtime does not
// count (the binary's pages, C); the memory_limiter refuses data well
// below GOMEMLIMIT (else the collector garbage-collects without pause);
// the batch processor does not merge the receiver's calls past
// max_records_per_call.
func TestExampleMemoryBudget(t *testing.T) {
	testnet.RequireRoot(t)
	var cmap corev1.ConfigMap
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "kubernetes", "20-agent-config.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &cmap))
	var conf struct {
		Receivers struct {
			Ebpfnet map[string]any `json:"ebpfnet"`
		} `json:"receivers"`
		Processors struct {
			MemoryLimiter struct {
				LimitMiB int64 `json:"limit_mib"`
				SpikeMiB int64 `json:"spike_limit_mib"`
			} `json:"memory_limiter"`
			Batch struct {
				MaxSize int `json:"send_batch_max_size"`
			} `json:"batch"`
		} `json:"processors"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(cmap.Data["config.yaml"]), &conf))
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	require.NoError(t, confmap.NewFromStringMap(conf.Receivers.Ebpfnet).Unmarshal(cfg))

	var ds appsv1.DaemonSet
	b, err = os.ReadFile(filepath.Join("..", "..", "examples", "kubernetes", "30-agent-daemonset.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &ds))
	c := ds.Spec.Template.Spec.Containers[0]
	limit := c.Resources.Limits.Memory().Value()
	var goMemLimit int64
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			q, err := resource.ParseQuantity(strings.TrimSuffix(e.Value, "B")) // 360MiB -> 360Mi
			require.NoError(t, err)
			goMemLimit = q.Value()
		}
	}
	require.NotZero(t, goMemLimit, "the DaemonSet sets GOMEMLIMIT")

	plan, err := kernel.PlanMemory(kernel.Options{MaxFlows: uint32(cfg.MaxFlows), MaxConns: uint32(cfg.MaxConnections), RingSize: uint32(cfg.RingBufferSize)})
	require.NoError(t, err)
	// The per-CPU part: the flow_cache slots are almost all of it.
	perCPU := float64(plan.Bytes("flow_cache")+plan.Bytes("counters")) / float64(plan.CPUs)
	kernel64 := float64(plan.Total()) + perCPU*float64(64-plan.CPUs)
	const slack = 64 << 20
	t.Logf("limit %d MiB: maps on 64 CPUs %.0f MiB + GOMEMLIMIT %d MiB + slack %d MiB", limit>>20, kernel64/(1<<20), goMemLimit>>20, slack>>20)
	require.LessOrEqual(t, kernel64+float64(goMemLimit)+slack, float64(limit), "the pod's limit holds the maps, GOMEMLIMIT and slack")
	require.NotZero(t, conf.Processors.MemoryLimiter.LimitMiB, "memory_limiter in MiB, not a percentage of a limit that also holds the maps")
	require.LessOrEqual(t, float64(conf.Processors.MemoryLimiter.LimitMiB<<20), 0.75*float64(goMemLimit), "the limiter refuses well below GOMEMLIMIT")
	require.Less(t, conf.Processors.MemoryLimiter.SpikeMiB, conf.Processors.MemoryLimiter.LimitMiB)
	require.NotZero(t, conf.Processors.Batch.MaxSize)
	require.LessOrEqual(t, conf.Processors.Batch.MaxSize, cfg.MaxRecordsPerCall, "batches no larger than the receiver's calls")
}
