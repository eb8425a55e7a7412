// Command kube-apiserver is the real Kubernetes API server, built from the
// module proxy for the tests of internal/k8s and the receiver (its own
// module: k8s.io/kubernetes is not meant to be a dependency of ours).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
