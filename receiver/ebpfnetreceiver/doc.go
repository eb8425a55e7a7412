// Package ebpfnetreceiver is an OpenTelemetry Collector receiver that loads
// eBPF programs into the running kernel (internal/kernel), aggregates
// network flows and TCP connections there, and emits them as metrics, flow
// log records and one span per connection side.
//
// This package only wires the rooms (docs/architecture.md): the factory and
// config, one kernel pipeline per config shared by every signal that names
// the receiver (shared.go), and each interval's read (internal/kernel) →
// join (internal/flow, with lookups from internal/k8s and conntrack) → emit
// (internal/convert) in receiver.go. metadata.yaml is the contract of what it
// emits; documentation.md is generated from it.
package ebpfnetreceiver

//go:generate go tool -modfile=../../internal/tools/go.mod mdatagen metadata.yaml
//go:generate go run ./internal/docgen
