#!/usr/bin/env bash
# Installs what Sluice needs on Debian 12, and nothing that is already there.
#
#   deploy/install-deps.sh          build dependencies
#   deploy/install-deps.sh --test   also what the tests need (Python, Go and
#                                   Node clients, amqp-tools, etcd) and the Node test
#                                   packages (npm ci in tests/integration/node)
#
# Idempotent and quick to rerun: apt-get runs (after one `apt-get update`) only
# when a package is missing, and npm ci only when node_modules is missing or
# older than package-lock.json. Needs root for apt-get (uses sudo if it is not
# root); when nothing is missing it needs no privileges. Any failure stops it
# with a non-zero exit.
set -euo pipefail

usage() { sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

with_tests=0
for arg in "$@"; do
  case "$arg" in
    --test) with_tests=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install-deps.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

build_packages=(
  build-essential cmake ninja-build ccache pkg-config
  lld   # the linker (CMakeLists.txt: fast links, cli/sluiced.order)
  libboost1.81-dev libboost-program-options1.81-dev libboost-json1.81-dev
  libboost-url1.81-dev
  librocksdb-dev prometheus-cpp-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  amqp-specs python3
)
test_packages=(
  python3-pytest python3-pika python3-amqp python3-kombu python3-yaml amqp-tools
  ca-certificates prometheus chromium
  golang-go golang-github-rabbitmq-amqp091-go-dev   # tests/integration/go: Go 1.19 + amqp091-go, GOPATH mode
  clang libclang-rt-14-dev llvm   # tests/fuzz: clang, libFuzzer + sanitizer runtimes, llvm-symbolizer
  etcd-server etcd-client   # tests/unit/etcd_client_test.cpp: a real etcd 3.4 (/usr/bin/etcd) for the cluster coordinator
  nftables   # tests/integration/cluster_net.py: partitions between namespaces
  e2fsprogs   # tests/integration/test_cluster_jepsen.py: mkfs.ext4 for the loop-mounted data dirs it fills
)
# The machine may already have a newer Node.js than Debian's (e.g. from
# another repository); Debian's npm would conflict with it, so only install
# Node.js and npm when there is no node at all.
if ((with_tests)) && ! command -v node >/dev/null 2>&1; then
  test_packages+=(nodejs npm)
fi

is_installed() {
  [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

wanted=("${build_packages[@]}")
if ((with_tests)); then wanted+=("${test_packages[@]}"); fi

missing=()
for pkg in "${wanted[@]}"; do
  is_installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  as_root=()
  if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1; then
      as_root=(sudo)
    else
      echo "install-deps: missing packages (${missing[*]}) and not root, no sudo" >&2
      exit 1
    fi
  fi
  apt_opts=(-y -q -o DPkg::Lock::Timeout=300)
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}"
  for pkg in "${missing[@]}"; do
    is_installed "$pkg" || { echo "install-deps: $pkg did not install" >&2; exit 1; }
  done
else
  echo "install-deps: all ${#wanted[@]} packages already installed"
fi

if ((with_tests)); then
  node_dir="$repo_root/tests/integration/node"
  if [[ -f "$node_dir/package-lock.json" ]]; then
    command -v npm >/dev/null 2>&1 || {
      echo "install-deps: node is on PATH but npm is not; install npm for that Node.js" >&2
      exit 1
    }
    # npm writes node_modules/.package-lock.json on every install.
    stamp="$node_dir/node_modules/.package-lock.json"
    if [[ ! -f "$stamp" || "$node_dir/package-lock.json" -nt "$stamp" ]]; then
      echo "install-deps: npm ci in tests/integration/node (node $(node --version))"
      (cd "$node_dir" && npm ci --no-audit --no-fund)
    else
      echo "install-deps: tests/integration/node/node_modules is up to date"
    fi
  fi
fi
