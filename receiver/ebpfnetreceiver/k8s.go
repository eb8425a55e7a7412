package ebpfnetreceiver

import (
	"fmt"

	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ebpfnet/ebpfnet/internal/k8s"
)

// startPeers starts the Kubernetes peer resolver when configured. A
// configuration that cannot work (no in-cluster service account, a missing
// kubeconfig) fails Start with a clear error; an API server that is down or
// forbids the watch does not: the resolver logs it, retries, and peers are
// enriched once it answers.
func startPeers(cfg K8sConfig, logger *zap.Logger) (*k8s.Resolver, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	var rc *rest.Config
	var err error
	switch cfg.AuthType {
	case "kubeConfig":
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if cfg.Kubeconfig != "" {
			rules.ExplicitPath = cfg.Kubeconfig
		}
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	default:
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("k8s peer enrichment (auth_type %s): %w", cfg.AuthType, err)
	}
	rc.UserAgent = "ebpfnet-receiver"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("k8s client: %w", err)
	}
	var opts []k8s.Option
	if cfg.NetworkPolicies {
		opts = append(opts, k8s.WithPolicies())
	}
	r, err := k8s.New(client, logger.With(zap.String("part", "k8s")), opts...)
	if err != nil {
		return nil, err
	}
	r.Start()
	return r, nil
}
