// Package flow is the model between the kernel and the converters: Flow,
// Conn and LiveConn with their enums, the Batch of one interval, the
// connection identity (ConnIDs), and the joins that complete a batch (the
// local endpoint of a flow, the connection a TCP flow belongs to, the Service
// a UDP socket sent to, the backend the node's NAT chose, the pod of a
// socket's cgroup). Each join takes its lookups as injected functions, so the
// model imports neither the kernel nor Kubernetes.
package flow
