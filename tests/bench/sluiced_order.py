#!/usr/bin/python3
"""Writes cli/sluiced.order: the functions sluiced runs, for the linker to
place together (lld's --symbol-ordering-file; cli/CMakeLists.txt).

    /usr/bin/python3 tests/bench/sluiced_order.py build/release/cli/sluiced [cli/sluiced.order]

Why: the kernel maps a program's code 64 KiB around each page it touches
(fault-around), so an idle broker whose start-up code is spread over the
whole binary keeps most of its 10 MiB of code resident though it ran 2 MiB
of it (issue 12: idle RSS 15.1 → 11.2 MiB with this order and the static
libraries). The order changes no behaviour: a function missing from it is
placed after the listed ones, a listed name that no longer exists is
ignored. Regenerate it when start-up changes much (tests/bench/idle_rss.py
shows the effect).

How: runs sluiced under valgrind's callgrind (Debian's valgrind) on free
ports with a fresh data dir. Phase 1 is what an idle broker runs: start-up,
one AMQP login (as idle_rss.py does), its timers. Phase 2 is a little of
everything busy (a queue declared, 2,000 persistent messages published with
confirms and consumed with acks, the management API and the Prometheus
scrape). The file lists phase 1's functions, then phase 2's others, each
group in the binary's current address order (which keeps a source file's
functions together).
"""
import base64
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from conftest import amqp_answers, free_port, wait_for  # noqa: E402


def functions_in(dump):
    """Mangled names of the functions that ran in one callgrind dump (any
    object: main() keeps those of the binary)."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", dump],
                         capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        # "  1,234 ( 0.01%)  FILE:FUNCTION [OBJECT]": FILE is ??? without debug
        # information, else a path (relative under ccache's base dir); a
        # function inlined code from several files has a line for each.
        m = re.match(r"\s*[\d,]+ \([^)]*\)\s+(?:\?\?\?|[^:\s]*):([A-Za-z_]\S*)", line)
        if m:
            names.add(m.group(1))
    return names


def busy(port, http_port):
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("order-profile", durable=True)
    props = pika.BasicProperties(delivery_mode=2, correlation_id="c", reply_to="r")
    for i in range(2000):
        ch.basic_publish("", "order-profile", b"x" * (64 + i % 512), props)
    got = 0
    for method, _, _ in ch.consume("order-profile", inactivity_timeout=10):
        if method is None:
            break
        ch.basic_ack(method.delivery_tag)
        got += 1
        if got == 2000:
            break
    ch.cancel()
    ch.queue_delete("order-profile")
    conn.close()
    auth = "Basic " + base64.b64encode(b"guest:guest").decode()
    for path in ("/api/overview", "/api/queues", "/api/connections", "/metrics", "/"):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (http_port, path), headers={"Authorization": auth})
        urllib.request.urlopen(req, timeout=30).read()


def main():
    exe = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "build", "release", "cli", "sluiced"))
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(REPO, "cli", "sluiced.order")
    with tempfile.TemporaryDirectory(prefix="sluiced-order-") as tmp:
        port, http_port, prom_port = free_port(), free_port(), free_port()
        cg = os.path.join(tmp, "cg.out")
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--demangle=no", "--callgrind-out-file=" + cg, exe,
             "--data-dir", os.path.join(tmp, "data"), "--amqp-port", str(port), "--http-port", str(http_port),
             "--prometheus-port", str(prom_port)],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "log"), "w"))
        try:
            wait_for(lambda: amqp_answers("127.0.0.1", port), 180, interval=0.2, what="sluiced under callgrind")
            import pika
            pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port)).close()
            time.sleep(2)  # an idle broker's timers: part of what it runs (not a synchronisation)
            subprocess.run(["callgrind_control", "--dump=idle", str(proc.pid)], check=True,
                           capture_output=True)
            busy(port, http_port)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=300)
        dumps = sorted(glob.glob(cg + "*"), key=os.path.getmtime)
        if len(dumps) < 2:
            sys.exit("sluiced_order: expected two callgrind dumps, got %s" % dumps)
        idle = functions_in(dumps[0])
        everything = set().union(*(functions_in(d) for d in dumps))
    address = {}
    for line in subprocess.run(["nm", "--defined-only", exe], capture_output=True, text=True, check=True).stdout.splitlines():
        f = line.split()
        if len(f) == 3 and f[1] in "tTwW":
            address.setdefault(f[2], int(f[0], 16))
    first = sorted((n for n in idle if n in address), key=address.get)
    then = sorted((n for n in everything - idle if n in address), key=address.get)
    with open(out_path, "w") as f:
        f.write("".join(n + "\n" for n in first + then))
    print("%s: %d functions an idle broker runs, then %d more a busy one does" % (out_path, len(first), len(then)))


if __name__ == "__main__":
    main()
