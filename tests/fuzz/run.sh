#!/bin/sh
# Builds the libFuzzer targets with clang in build/fuzz (preset "fuzz") and runs each for
# SECONDS seconds (default 60) from its seed corpus. Exits non-zero when a
# target finds a crash, leak, timeout or property violation; the reproducer
# is left in build/fuzz/findings/<target>/.
#
#   tests/fuzz/run.sh [SECONDS] [target...]   (targets: fuzz_frame fuzz_field_table fuzz_session)
#
# Environment: FUZZ_JOBS (parallel fuzzing processes per target, default 1),
# FUZZ_ARGS (extra libFuzzer flags). Every configure/build takes the shared
# build lock (/tmp/sluice-build.lock).
set -eu

seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-"fuzz_frame fuzz_field_table fuzz_session"}

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build="$repo/build/fuzz"
lock=/tmp/sluice-build.lock

if [ ! -f "$build/build.ninja" ] && [ ! -f "$build/Makefile" ]; then
    (cd "$repo" && flock "$lock" cmake --preset fuzz)  # CMakePresets.json: clang, -fsanitize=fuzzer-no-link,...
fi
# shellcheck disable=SC2086
flock "$lock" cmake --build "$build" --target $targets

status=0
for t in $targets; do
    case $t in
        fuzz_frame) seeds="$here/corpus/frame" ;;
        fuzz_field_table) seeds="$here/corpus/table" ;;
        fuzz_session) seeds="$here/corpus/session" ;;
        *) echo "unknown target $t" >&2; exit 2 ;;
    esac
    # New inputs go to a scratch corpus; the checked-in seeds stay as they are.
    work="$build/corpus/$t"
    findings="$build/findings/$t"
    mkdir -p "$work" "$findings"
    log="$build/$t.log"
    echo "== $t: ${seconds}s, seeds $seeds, log $log"
    parallel=""
    if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then parallel="-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS"; fi
    # shellcheck disable=SC2086
    if (cd "$build" && ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" \
       UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
       "$build/tests/fuzz/$t" "$work" "$seeds" \
           -dict="$here/amqp.dict" \
           -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
           -artifact_prefix="$findings/" -print_final_stats=1 $parallel ${FUZZ_ARGS:-} >"$log" 2>&1); then
        grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|cov: ' "$log" | tail -3
    else
        status=1
        echo "!! $t FAILED; last lines of $log:" >&2
        tail -40 "$log" >&2
        ls -l "$findings" >&2
    fi
done
exit $status
