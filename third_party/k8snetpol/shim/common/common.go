// Package common stands in for k8s.io/kubernetes/test/e2e/network/common:
// SIGDescribe registers the cases of its body.
package common

import "github.com/ebpfnet/ebpfnet/third_party/k8snetpol/shim/ginkgo"

// SIGDescribe runs its body (its last argument) to register its cases.
func SIGDescribe(text string, args ...any) bool {
	return ginkgo.Context("[sig-network] "+text, args...)
}
