// Package bench holds the `make bench` suite (build tag "bench"): overhead
// and scale scenarios on the real kernel, between network namespaces. It
// writes docs/BENCHMARKS.md. It is not part of `make test`.
package bench
