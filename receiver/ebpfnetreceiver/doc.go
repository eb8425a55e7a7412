// Package ebpfnetreceiver is an OpenTelemetry Collector receiver that loads
// eBPF programs into the node's kernel, aggregates network flows there, and
// emits them as OTLP metrics and logs.
//
//go:generate go tool -modfile=../../internal/tools/go.mod mdatagen metadata.yaml
package ebpfnetreceiver
