//go:build bench

package bench

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/ebpfnet/ebpfnet/internal/testnet"
	"github.com/ebpfnet/ebpfnet/receiver/ebpfnetreceiver"
)

// startReceiver runs the receiver with default settings on the pod
// interfaces of node, its three signals into tc, mc and lc (one shared
// kernel pipeline), and returns its Shutdown.
func startReceiver(t *testing.T, node *testnet.Node, tc consumer.Traces, mc consumer.Metrics, lc consumer.Logs) (cfg *ebpfnetreceiver.Config, stop func()) {
	return startConfigured(t, node, tc, mc, lc, nil)
}

// ebpfnetConfig is the receiver's config.
type ebpfnetConfig = ebpfnetreceiver.Config

// startReceiverWith starts the receiver with nop consumers and its config
// changed by set.
func startReceiverWith(t *testing.T, node *testnet.Node, set func(*ebpfnetConfig)) (*ebpfnetConfig, func()) {
	return startConfigured(t, node, consumertest.NewNop(), consumertest.NewNop(), consumertest.NewNop(), set)
}

func startConfigured(t *testing.T, node *testnet.Node, tc consumer.Traces, mc consumer.Metrics, lc consumer.Logs, change func(*ebpfnetConfig)) (cfg *ebpfnetreceiver.Config, stop func()) {
	t.Helper()
	f := ebpfnetreceiver.NewFactory()
	cfg = f.CreateDefaultConfig().(*ebpfnetreceiver.Config)
	cfg.Interfaces.Include = fmt.Sprintf("^%s-", testnet.Prefix(node.ID))
	if change != nil {
		change(cfg)
	}
	set := receivertest.NewNopSettings(f.Type())
	ctx := context.Background()
	tr, err := f.CreateTraces(ctx, set, cfg, tc)
	require.NoError(t, err)
	mr, err := f.CreateMetrics(ctx, set, cfg, mc)
	require.NoError(t, err)
	lr, err := f.CreateLogs(ctx, set, cfg, lc)
	require.NoError(t, err)
	comps := []component.Component{tr, mr, lr}
	for _, c := range comps {
		require.NoError(t, c.Start(ctx, componenttest.NewNopHost()))
	}
	return cfg, func() {
		for _, c := range comps {
			require.NoError(t, c.Shutdown(ctx))
		}
	}
}

// busyClient lets a load generator in ns open connections to one server
// port at a high rate: a wide ephemeral port range, and TIME_WAIT ports
// reused, as a busy client would.
func busyClient(t *testing.T, ns *testnet.Netns) {
	t.Helper()
	for _, sc := range []string{"net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"} {
		_, err := ns.Exec("sysctl", "-qw", sc)
		require.NoError(t, err)
	}
}
