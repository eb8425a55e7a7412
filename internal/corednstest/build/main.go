// Command coredns is CoreDNS (github.com/coredns/coredns) with the plugins
// the test node's cluster DNS uses: kubernetes (the cluster.local zone from
// the API server), hosts, log, errors, health and ready. A module of its
// own, for the real-node DNS test (TestAgentOnRealNode):
// scripts/build-coredns.sh builds it once into ~/.cache/ebpfnet. Nothing
// here is part of ebpfnet.
package main

import (
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
