// Package build pins Jaeger v2 (the OpenTelemetry-Collector-based jaeger
// binary of github.com/jaegertracing/jaeger v1.76.0) for the Jaeger
// backend test: scripts/build-jaeger.sh builds its cmd/jaeger from this
// module. A module of its own, with a committed go.sum made once: the
// checksum database answers 404 for some of Jaeger's dependencies, so a
// fresh go.sum cannot be made on every machine, while a complete one is
// checked without asking it. Nothing here is part of ebpfnet.
package build
