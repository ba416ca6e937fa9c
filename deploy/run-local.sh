#!/usr/bin/env bash
# Builds Sluice (release preset) and runs the broker in the foreground:
#
#   deploy/run-local.sh [sluiced options...]
#
# Same as: deploy/install-deps.sh && cmake --preset release &&
#          cmake --build --preset release && build/release/cli/sluiced
#
# Defaults: AMQP on 5672, HTTP (metrics, API, dashboard) on 15672, data in
# ./sluice-data (relative to where you run it), user guest/guest from loopback
# only. Options are passed on to sluiced (see README.md).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

"$repo_root/deploy/install-deps.sh"
(cd "$repo_root" && cmake --preset release && cmake --build --preset release)
exec "$repo_root/build/release/cli/sluiced" "$@"
