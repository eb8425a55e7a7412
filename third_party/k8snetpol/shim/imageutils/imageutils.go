// Package imageutils stands in for k8s.io/kubernetes/test/utils/image.
package imageutils

// Agnhost is the suite's server image.
const Agnhost = 0

// GetE2EImage names the image (the pods here run nothing).
func GetE2EImage(int) string { return "registry.k8s.io/e2e-test-images/agnhost" }
