#!/usr/bin/env bash
# Builds the collector distribution from builder-config.yaml with ocb, the
# version pinned in internal/tools/go.mod. The generated module replaces the
# receiver module with this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
out=dist/otelcol-ebpfnet
mkdir -p "$out"
builder=(go tool -modfile=internal/tools/go.mod builder)
# ocb writes main.go/components.go/go.mod, tidies and compiles. If its own
# `go mod tidy` trips over a test-only dependency the module proxy does not
# serve, the sources are already generated: finish with a tolerant tidy.
if ! "${builder[@]}" --config=builder-config.yaml --skip-compilation >/tmp/ocb.log 2>&1; then
  if [ ! -f "$out/go.mod" ]; then cat /tmp/ocb.log >&2; exit 1; fi
  echo "ocb's go mod tidy failed; retrying with go mod tidy -e" >&2
  (cd "$out" && go mod tidy -e >/dev/null 2>&1)
fi
(cd "$out" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o otelcol-ebpfnet .)
echo "built $out/otelcol-ebpfnet"
