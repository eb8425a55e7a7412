#!/usr/bin/env bash
# Installs what this machine lacks for building and testing ebpfnet, from
# Debian's packages. Runs apt-get update first, and only when something is
# missing. Usage: scripts/deps.sh [build|test|bench]
set -euo pipefail
want=${1:-test}

need=()
have() { command -v "$1" >/dev/null 2>&1; }
# command -> Debian package
check() { have "$1" || need+=("$2"); }

check go golang-go
check ip iproute2
if [ "$want" != build ]; then
  check clang clang
  check clang-format clang-format   # make lint: bpf/.clang-format
  check llvm-strip llvm
  [ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
  check bpftool bpftool
  check iptables iptables
  check nstat iproute2
  check ss iproute2
  check iperf3 iperf3
  check conntrack conntrack
  check sysctl procps
  check setpriv util-linux
  check etcd etcd-server   # the Kubernetes tests run a real kube-apiserver on etcd
  check kubectl kubectl    # kubectl apply --dry-run=server of examples/kubernetes
  # The test node (internal/k8stest/node.go): containerd + runc + the CNI plugins.
  check containerd containerd
  check runc runc
  check tcpdump tcpdump     # counts the non-IP frames on the test node's pod veths
  check prometheus prometheus   # the Prometheus backend test (examples/backends/prometheus)
  check dig dnsutils       # the DNS tests' client
  [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)   # the DNS tests' resolver
  check getent libc-bin    # glibc's resolver (the DNS tests)
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  [ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)   # the image's CA bundle
fi
if [ "$want" = bench ]; then
  check ethtool ethtool    # the map-type study turns GRO on for its veth
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need[*]}; run as root or install them: apt-get install ${need[*]}" >&2
    exit 1
  fi
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Kernel file systems the programs and tests use.
if [ "$(id -u)" = 0 ]; then
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
fi
