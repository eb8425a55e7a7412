// Package ginkgo stands in for github.com/onsi/ginkgo/v2 in the copied
// NetworkPolicy e2e suite: containers run their bodies at registration,
// By logs, DeferCleanup defers to the end of the case.
package ginkgo

import (
	"fmt"

	"github.com/ebpfnet/ebpfnet/third_party/k8snetpol/shim/framework"
)

// Context runs its body (its last argument) to register the cases in it.
func Context(text string, args ...any) bool {
	framework.Path = append(framework.Path, text)
	defer func() { framework.Path = framework.Path[:len(framework.Path)-1] }()
	body, ok := args[len(args)-1].(func())
	if !ok {
		panic(fmt.Sprintf("Context %q: the last argument is a %T, not func()", text, args[len(args)-1]))
	}
	body()
	return true
}

// BeforeEach: the suite's are skips for Windows nodes; the nodes are Linux.
func BeforeEach(func()) bool { return true }

// By logs a step.
func By(text string, _ ...func()) { framework.Logf("STEP: %s", text) }

// DeferCleanup calls fn(args...) when the case ends.
func DeferCleanup(fn any, args ...any) {
	framework.Cleanups = append(framework.Cleanups, func() { call(fn, args) })
}

// GinkgoRecover: failures in the suite's goroutines are not expected (its
// probe workers only report).
func GinkgoRecover() {}
