// Package feature stands in for k8s.io/kubernetes/test/e2e/feature: labels.
package feature

// Labels the suite puts on its cases.
var (
	NetworkPolicy    any = "Feature:NetworkPolicy"
	SCTPConnectivity any = "Feature:SCTPConnectivity"
)
