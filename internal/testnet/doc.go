// Package testnet is test-only support: it gates privileged tests and builds
// a Kubernetes-like node out of network namespaces (a bridge, veth "pods",
// an uplink to a "remote" host) and drives traffic between them.
package testnet
