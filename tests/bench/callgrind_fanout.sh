#!/bin/bash
# Instructions the broker spends on a fanout whose queues grow (issue 12,
# item 8), counted by callgrind: repeatable on a shared, noisy machine where
# rates are not. Not a test.
#
#   tests/bench/callgrind_fanout.sh build/release/cli/sluiced [paged|memory]
#
# sluiced runs under valgrind --tool=callgrind; sluice-perf publishes 100,000
# messages of 256 B to a fanout of 4 queues, 4 consumers reading 500 msg/s
# each (manual ack per message, no prefetch limit), so the queues grow and
# page ("paged", the default) — or, with "memory", the same load with the
# memory limits raised so that nothing pages. Prints the total instruction
# count (Ir) and the 15 functions with the most; the callgrind output stays
# in the printed directory for callgrind_annotate. About 4 minutes.
set -euo pipefail
sluiced=$(readlink -f "$1")
mode=${2:-paged}
perf=${SLUICE_PERF:-$(dirname "$sluiced")/sluice-perf}
work=$(mktemp -d /tmp/sluice-callgrind.XXXXXX)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
extra=()
[ "$mode" = memory ] && extra=(--queue-memory-messages 10000000 --queue-memory-bytes 1000000000 --message-memory-limit 2000000000)
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$sluiced" --data-dir "$work/data" \
    --amqp-port "$port" --http-port 0 --prometheus-port 0 "${extra[@]}" > "$work/sluiced.log" 2>&1 &
vg=$!
for _ in $(seq 120); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 1; done
"$perf" --port "$port" -C 100000 -s 256 --fanout-queues 4 -y 4 --consumer-rate 500 --json > "$work/perf.json"
kill -INT $vg
wait $vg || true
echo "mode $mode: $(grep -o 'refs: *[0-9,]*' "$work/sluiced.log")"
callgrind_annotate --inclusive=no "$work/callgrind.out" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '3,17p' | cut -c1-150
echo "output: $work"
