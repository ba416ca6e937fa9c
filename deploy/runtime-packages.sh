#!/usr/bin/env bash
# Prints the Debian packages that hold the shared libraries some binaries
# need, one per line: what a runtime image must apt-get install to run them.
#
#   deploy/runtime-packages.sh build/release/cli/sluiced [more binaries...]
#
# Used by deploy/Dockerfile so that its runtime stage follows the build's
# real dependencies (a new library in the link line needs no Dockerfile edit).
# Fails if a library belongs to no installed package.
set -euo pipefail

if (($# < 1)); then
  echo "usage: $0 BINARY..." >&2
  exit 2
fi

missing=0
packages=()
while read -r lib; do
  [[ -n "$lib" ]] || continue
  pkg=""
  # Debian 12 merges /lib into /usr/lib: dpkg knows each file under one of them.
  for path in "$lib" "/usr$lib" "${lib#/usr}" "$(readlink -f "$lib")"; do
    if pkg="$(dpkg-query -S "$path" 2>/dev/null | head -n1 | cut -d: -f1)" && [[ -n "$pkg" ]]; then
      break
    fi
  done
  if [[ -z "$pkg" ]]; then
    echo "runtime-packages: no package holds $lib" >&2
    missing=1
    continue
  fi
  packages+=("$pkg")
done < <(for bin in "$@"; do ldd "$bin"; done | awk '/=> \// { print $3 }' | sort -u)

((missing == 0)) || exit 1
printf '%s\n' "${packages[@]}" | sort -u
