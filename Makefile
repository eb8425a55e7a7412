# ebpfnet — eBPF network receiver for the OpenTelemetry Collector.
SHELL := /bin/bash
GO ?= go
BUILDER := $(GO) tool -modfile=internal/tools/go.mod builder
DIST := dist/otelcol-ebpfnet
COLLECTOR := $(DIST)/otelcol-ebpfnet
GOTEST_FLAGS ?= -count=1
# Tests load programs into the running kernel: they run as root.
export CGO_ENABLED := 0

.PHONY: all deps generate check-generate build run test unit bench lint clean vmlinux image image-push jaeger coredns

all: build

deps:
	@scripts/deps.sh test

# Regenerates the bpf2go bindings (clang 14, vendored vmlinux.h), the
# mdatagen code, the dashboard and the copy of Kubernetes' NetworkPolicy e2e
# suite (third_party/k8snetpol). All outputs are committed.
generate: deps
	$(GO) generate ./internal/kernel/... ./receiver/...
	cd internal/tools && $(GO) run ./dashboard -out ../../examples/backends/grafana/ebpfnet.json
	scripts/netpol-e2e.sh

# Proves that the committed generated files are what `make generate` makes.
GENERATED := internal/kernel/ebpfnet_bpfel.go internal/kernel/ebpfnet_bpfel.o receiver/ebpfnetreceiver/internal/metadata \
	receiver/ebpfnetreceiver/documentation.md receiver/ebpfnetreceiver/generated_component_test.go \
	receiver/ebpfnetreceiver/generated_package_test.go examples/backends/grafana/ebpfnet.json \
	third_party/k8snetpol/k8s_*_test.go
check-generate: generate
	@if ! git diff --quiet -- $(GENERATED); then \
		git --no-pager diff --stat -- $(GENERATED); \
		echo "generated files differ from the committed ones: run make generate and commit" >&2; exit 1; fi
	@echo "generated files are byte-identical to the committed ones"

# vmlinux.h is vendored and pinned; regenerate it only deliberately.
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/include/vmlinux.h

$(COLLECTOR): builder-config.yaml go.mod go.sum $(shell find receiver internal bpf -name '*.go' -o -name '*.o' -o -name '*.yaml' 2>/dev/null)
	@scripts/deps.sh build
	scripts/build-collector.sh

build: $(COLLECTOR)

# The collector's OCI image, built without a container daemon
# (internal/image, go-containerregistry). The archive loads with
# `docker load -i`, `ctr -n k8s.io images import` or `kind load image-archive`;
# image-push sends it to REGISTRY (credentials from ~/.docker/config.json).
VERSION := $(shell sed -n 's/^  version: *//p' builder-config.yaml)
IMAGE ?= ebpfnet/otelcol-ebpfnet:$(VERSION)
IMAGE_ARCHIVE ?= dist/otelcol-ebpfnet-$(VERSION).tar
IMAGE_FLAGS = -binary $(COLLECTOR) -version $(VERSION) -revision "$$(git rev-parse HEAD 2>/dev/null)"
image: build
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null) $(GO) run ./internal/image/cmd/ebpfnet-image $(IMAGE_FLAGS) -ref $(IMAGE) -out $(IMAGE_ARCHIVE)

image-push: build
	@test -n "$(REGISTRY)" || { echo "usage: make image-push REGISTRY=registry.example.com/team [INSECURE=1]" >&2; exit 1; }
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null) $(GO) run ./internal/image/cmd/ebpfnet-image $(IMAGE_FLAGS) \
		-push $(REGISTRY)/otelcol-ebpfnet:$(VERSION) $(if $(INSECURE),-insecure)

# Runs the collector with the local example config (no Kubernetes): flows of
# this machine are printed by the debug exporter every interval.
run: build
	@if [ "$$(id -u)" != 0 ]; then echo "make run loads eBPF programs: run it as root (or with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN)" >&2; exit 1; fi
	$(COLLECTOR) --config examples/local/config.yaml

unit:
	$(GO) test $(GOTEST_FLAGS) ./...

# Jaeger v2 for TestBackendJaeger, built once from its pinned module
# (internal/jaegertest/build) into ~/.cache/ebpfnet.
jaeger:
	@scripts/build-jaeger.sh >/dev/null

# CoreDNS for the real node's cluster DNS, built once from its pinned module
# (internal/corednstest/build) into ~/.cache/ebpfnet.
coredns:
	@scripts/build-coredns.sh >/dev/null

test: deps check-generate lint jaeger coredns
	$(GO) test $(GOTEST_FLAGS) -timeout 30m ./...

bench:
	@scripts/deps.sh bench
	scripts/bench.sh

BPF_SOURCES := $(wildcard bpf/*.c bpf/*.h bpf/bench/*.c bpf/bench/*.h)
BPF_HEADERS := $(wildcard bpf/*.h)

# Go: vet (also with the bench tag) and gofmt. C: clang-format (bpf/.clang-format)
# and every header compiled alone, so each includes what it uses.
lint: deps
	$(GO) vet ./...
	$(GO) vet -tags bench ./bench/
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v _bpfel.go))" || { gofmt -l $$(git ls-files '*.go' | grep -v _bpfel.go); exit 1; }
	clang-format --dry-run --Werror $(BPF_SOURCES)
	@for h in $(BPF_HEADERS); do \
		printf '#include "%s"\n' "$$(basename $$h)" | clang -target bpf -O2 -Wall -Werror -Wno-unused-function -mcpu=v3 \
			-Ibpf -fsyntax-only -x c - || { echo "$$h does not compile alone: it must include what it uses" >&2; exit 1; }; \
	done
	@echo "lint: Go and C clean; every BPF header compiles alone"

clean:
	rm -rf dist
