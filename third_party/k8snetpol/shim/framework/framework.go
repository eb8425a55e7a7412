// Package framework stands in for k8s.io/kubernetes/test/e2e/framework in
// the copied NetworkPolicy e2e suite: the few names it uses, with a
// registry of its cases instead of Ginkgo's, and failures as panics the
// harness turns into test failures.
package framework

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/client-go/kubernetes"

	"github.com/ebpfnet/ebpfnet/third_party/k8snetpol/shim/admissionapi"
)

// Framework is the part of the e2e Framework the suite uses.
type Framework struct {
	BaseName                  string
	ClientSet                 kubernetes.Interface
	SkipNamespaceCreation     bool
	NamespacePodSecurityLevel admissionapi.Level
}

// NewDefaultFramework returns a Framework named baseName.
func NewDefaultFramework(baseName string) *Framework { return &Framework{BaseName: baseName} }

// Case is one It of the suite.
type Case struct {
	Name string
	Run  func(context.Context)
}

// Cases are the suite's Its, in registration order; Path the names of the
// containers (Describe, Context) being registered.
var (
	Cases []Case
	Path  []string
	// Cleanups are DeferCleanup's functions of the running case.
	Cleanups []func()
)

// It registers a case: its last argument is the body.
func (f *Framework) It(name string, args ...any) {
	body, ok := args[len(args)-1].(func(context.Context))
	if !ok {
		panic(fmt.Sprintf("It %q: the last argument is a %T, not func(context.Context)", name, args[len(args)-1]))
	}
	Cases = append(Cases, Case{Name: strings.Join(append(append([]string{}, Path...), name), " "), Run: body})
}

// TestContext holds the one setting the suite reads.
var TestContext = struct{ ClusterDNSDomain string }{ClusterDNSDomain: "cluster.local"}

// Log receives Logf's lines (the harness points it at the running test).
var Log = func(string, ...any) {}

// Logf logs.
func Logf(format string, args ...any) { Log(format, args...) }

// Failure is what Failf and ExpectNoError panic with.
type Failure string

// Failf fails the running case.
func Failf(format string, args ...any) { panic(Failure(fmt.Sprintf(format, args...))) }

// ExpectNoError fails the running case on err.
func ExpectNoError(err error, explain ...any) {
	if err != nil {
		msg := err.Error()
		if len(explain) > 0 {
			if f, ok := explain[0].(string); ok {
				msg = fmt.Sprintf(f, explain[1:]...) + ": " + msg
			}
		}
		panic(Failure(msg))
	}
}

// NodeOSDistroIs: the nodes are Linux.
func NodeOSDistroIs(...string) bool { return false }
