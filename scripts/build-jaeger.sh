#!/usr/bin/env bash
# Builds Jaeger v2 for the Jaeger backend test (TestBackendJaeger) from the
# test-only module internal/jaegertest/build (its committed go.sum pins
# every dependency) and prints the binary's path. Cached by the go.sum's
# hash in ~/.cache/ebpfnet/jaeger-<hash>/jaeger: about 5 minutes the first
# time on 2 cores, nothing after.
set -euo pipefail
cd "$(dirname "$0")/.."
mod=internal/jaegertest/build
key=$(sha256sum "$mod/go.sum" | cut -c1-16)
out="${XDG_CACHE_HOME:-$HOME/.cache}/ebpfnet/jaeger-$key/jaeger"
if [ ! -x "$out" ]; then
  mkdir -p "$(dirname "$out")"
  echo "building Jaeger v2 (github.com/jaegertracing/jaeger v1.76.0) into $out" >&2
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out.tmp" github.com/jaegertracing/jaeger/cmd/jaeger)
  mv "$out.tmp" "$out"
fi
echo "$out"
