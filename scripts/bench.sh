#!/usr/bin/env bash
# `make bench`: the overhead and scale suite on this machine's kernel. Writes
# docs/BENCHMARKS.md. Needs root (it loads programs and builds namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
go test -tags bench -count=1 -timeout 120m -v ./bench/ "$@" 2>&1 | tee /tmp/ebpfnet-bench.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|rep [0-9]'
echo "wrote docs/BENCHMARKS.md"
