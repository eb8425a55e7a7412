// Package admissionapi stands in for k8s.io/pod-security-admission/api.
package admissionapi

// Level is a Pod Security level.
type Level string

// LevelBaseline is the level the suite's namespaces get.
const LevelBaseline Level = "baseline"
