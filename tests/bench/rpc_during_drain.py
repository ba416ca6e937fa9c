"""A program, not a test (issue 12, item 6): the p99 of an RPC flow while
another queue drains a paged backlog — whatever the broker thread waits on
disk for shows here as RPC latency.

  /usr/bin/python3 tests/bench/rpc_during_drain.py build/release/cli/sluiced [BACKLOG] [SIZE] [DRAIN_RATE]

Starts sluiced on free ports with a temporary data dir, measures RPC
(sluice-perf --rpc, 1 client, 1 server, 10 s) on an idle broker, then starts
`sluice-perf --backlog BACKLOG --persistent` (default 1,000,000 x 512 B): once
its fill is done and its drain has begun (its consumer reads at most
DRAIN_RATE msg/s, default 80,000, so that the drain outlasts the RPC run),
the same RPC run again. Prints both, and the backlog's summary. SLUICE_PERF names another sluice-perf (default:
the one beside sluiced)."""
import json, os, subprocess, sys, tempfile, threading, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from conftest import free_port, amqp_answers, wait_for

exe = sys.argv[1]
backlog = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
size = int(sys.argv[3]) if len(sys.argv) > 3 else 512
drain_rate = int(sys.argv[4]) if len(sys.argv) > 4 else 80_000
perf = os.environ.get("SLUICE_PERF") or os.path.join(os.path.dirname(os.path.abspath(exe)), "sluice-perf")
work = tempfile.mkdtemp(prefix="sluice-rpc-drain-")
port = free_port()
broker = subprocess.Popen([exe, "--amqp-port", str(port), "--http-port", "0", "--prometheus-port", "0",
                           "--data-dir", work + "/d"], stdout=open(work + "/log", "wb"), stderr=subprocess.STDOUT)
try:
    wait_for(lambda: amqp_answers("127.0.0.1", port), 15)

    def rpc(label):
        r = subprocess.run([perf, "--port", str(port), "--rpc", "-x", "1", "-y", "1", "-z", "10",
                            "--queue-pattern", "rpc-%d", "--json", "--quiet"], capture_output=True, text=True)
        s = json.loads(r.stdout.strip().splitlines()[-1])
        l = s["latency_us"]
        print("%-28s %8.0f calls/s  p50 %6.0f us  p99 %6.0f us  max %7.0f us"
              % (label, s["rpc_calls_per_s"], l["p50"], l["p99"], l["max"]), flush=True)
        return s

    rpc("RPC, idle broker:")
    drain = subprocess.Popen([perf, "--port", str(port), "--backlog", str(backlog), "--persistent", "-s", str(size),
                              "-c", "1000", "-q", "1000", "-A", "100", "-R", str(drain_rate), "--queue-pattern", "backlog-%d",
                              "--broker-pid", str(broker.pid)],
                             stdout=subprocess.PIPE, text=True)
    draining = threading.Event()
    out = []

    def follow():
        for line in drain.stdout:
            out.append(line)
            if "drain:" in line:
                draining.set()
    t = threading.Thread(target=follow, daemon=True)
    t.start()
    wait_for(lambda: draining.is_set() or drain.poll() is not None, 600, what="the backlog's drain to start")
    during = rpc("RPC, while the backlog drains:")
    drain.wait(900)
    t.join(5)
    for line in out:
        if not line.startswith("["):  # the summary, not the progress lines
            print("  backlog:", line.rstrip(), flush=True)
finally:
    broker.terminate()
    broker.wait(30)
