#!/usr/bin/env bash
# Builds CoreDNS for the real node's cluster DNS (TestAgentOnRealNode) from
# the test-only module internal/corednstest/build (CoreDNS v1.15.0 with the
# kubernetes, hosts, log, errors, health and ready plugins; its committed
# go.sum pins every dependency) and prints the binary's path. Cached by the
# module's hash in ~/.cache/ebpfnet/coredns-<hash>/coredns: about 2 minutes
# the first time on 2 cores, nothing after.
set -euo pipefail
cd "$(dirname "$0")/.."
mod=internal/corednstest/build
key=$(cat "$mod/go.sum" "$mod/main.go" | sha256sum | cut -c1-16)
out="${XDG_CACHE_HOME:-$HOME/.cache}/ebpfnet/coredns-$key/coredns"
if [ ! -x "$out" ]; then
  mkdir -p "$(dirname "$out")"
  echo "building CoreDNS (github.com/coredns/coredns v1.15.0) into $out" >&2
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out.tmp" .)
  mv "$out.tmp" "$out"
fi
echo "$out"
