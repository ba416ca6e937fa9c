"""A program, not a test (issue 12, item 8: idle RSS): what an idle sluiced
keeps resident, and where.

  /usr/bin/python3 tests/bench/idle_rss.py build/release/cli/sluiced [ROUNDS]

Starts sluiced ROUNDS times (default 3) on free ports with a fresh data dir,
waits until it answers AMQP and one AMQP connection has logged in and closed
(so the password hash and TLS library are initialised, as on any broker that
has seen a client), then prints VmRSS, its anonymous and file-backed parts,
and the mappings that hold the most resident memory (the binary, each shared
library, the heap). Clean file-backed pages are shared with the page cache
and given back under memory pressure; they still count in RSS, which is
what the targets (and `ps`) measure."""
import os, socket, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from conftest import free_port, amqp_answers, wait_for

exe = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3


def login(port):
    # The smallest AMQP client that logs in (PLAIN guest/guest) and leaves.
    import pika
    pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port)).close()


def breakdown(pid):
    rollup = {}
    for line in open("/proc/%d/smaps_rollup" % pid):
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            rollup[parts[0].rstrip(":")] = int(parts[1])
    by_map, name = {}, None
    for line in open("/proc/%d/smaps" % pid):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            name = fields[5] if len(fields) > 5 else "[anon]"
        elif fields[0] == "Rss:":
            by_map[name] = by_map.get(name, 0) + int(fields[1])
    return rollup, by_map


results = []
for i in range(rounds):
    work = tempfile.mkdtemp(prefix="sluice-idle-")
    port = free_port()
    broker = subprocess.Popen([exe, "--amqp-port", str(port), "--http-port", str(free_port()),
                               "--prometheus-port", "0", "--data-dir", work + "/d"],
                              stdout=open(work + "/log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: amqp_answers("127.0.0.1", port), 15)
        login(port)
        time.sleep(1)  # let the connection's teardown finish before reading (not a synchronisation)
        rollup, by_map = breakdown(broker.pid)
        results.append(rollup["Rss"])
        print("round %d: RSS %.1f MiB (anonymous %.1f, file-backed %.1f)" %
              (i + 1, rollup["Rss"] / 1024, rollup["Anonymous"] / 1024, (rollup["Rss"] - rollup["Anonymous"]) / 1024))
        if i == 0:
            for n, kib in sorted(by_map.items(), key=lambda kv: -kv[1])[:8]:
                print("  %7.1f MiB  %s" % (kib / 1024, n))
    finally:
        broker.kill()
        broker.wait()
print("idle RSS MiB: min %.1f, max %.1f over %d starts" % (min(results) / 1024, max(results) / 1024, rounds))
