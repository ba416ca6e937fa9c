#!/usr/bin/env bash
# Runs every test, the same way for a person and for CI (.ci/run calls this):
#
#   1. deps     deploy/install-deps.sh --test
#   2. release  cmake --workflow --preset release   (configure, build, ctest)
#   3. asan     cmake --workflow --preset asan      (same, ASan + UBSan)
#   4. fuzz     tests/fuzz/run.sh 60                (clang build/fuzz; each libFuzzer
#               target 60 s from its seed corpus; any crash, leak, timeout or
#               property violation fails)
#
# Stops at the first phase that fails and exits with its status. Prints each
# phase's duration, and a summary at the end.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Let ccache reuse objects built in another checkout of the repository (CI
# builds in a fresh clone): paths under the checkout are hashed relative to it.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"

run_start=$(date +%s)
summary=()

print_summary() {
  echo "=== run-all: summary"
  local line
  for line in "${summary[@]}"; do echo "    $line"; done
  echo "    total: $(( $(date +%s) - run_start ))s"
}

phase() {
  local name=$1; shift
  local start rc=0
  start=$(date +%s)
  echo "=== run-all: phase $name: $*"
  "$@" || rc=$?
  local secs=$(( $(date +%s) - start ))
  if ((rc != 0)); then
    summary+=("$name: FAILED (exit $rc) after ${secs}s")
    echo "=== run-all: phase $name FAILED (exit $rc) after ${secs}s"
    print_summary
    exit "$rc"
  fi
  summary+=("$name: ok, ${secs}s")
  echo "=== run-all: phase $name ok, ${secs}s"
}

echo "=== run-all: $(git rev-parse --short HEAD 2>/dev/null || echo 'no git'), $(nproc) cores, CI=${CI:-}"
phase deps    deploy/install-deps.sh --test
phase release cmake --workflow --preset release
phase asan    cmake --workflow --preset asan
phase fuzz    tests/fuzz/run.sh "${FUZZ_SECONDS:-60}"
print_summary
