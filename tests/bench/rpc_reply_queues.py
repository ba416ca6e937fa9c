"""A program, not a test (issue 12, item 5): a million RPC calls, each with
its own exclusive reply queue, must leave the broker's memory and data dir
where they started.

  /usr/bin/python3 tests/bench/rpc_reply_queues.py build/release/cli/sluiced [CALLS] [CLIENTS]

Starts sluiced on free ports with a temporary data dir, notes its RSS and the
data dir's size, runs `sluice-perf --rpc-queue-per-call` (CLIENTS clients,
default 4, CALLS calls in all, default 1,000,000: every call declares an
exclusive auto-delete reply queue, consumes from it, and cancels once the
reply is in, which deletes the queue), then waits up to 60 s for the RSS and
the data dir to settle and prints before / peak / after, with the queue count
the broker reports. SLUICE_PERF names another sluice-perf."""
import json, os, subprocess, sys, tempfile, time, urllib.request, base64
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from conftest import free_port, amqp_answers, wait_for
from test_storage_space import dir_bytes

exe = sys.argv[1]
calls = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
clients = int(sys.argv[3]) if len(sys.argv) > 3 else 4
perf = os.environ.get("SLUICE_PERF") or os.path.join(os.path.dirname(os.path.abspath(exe)), "sluice-perf")
work = tempfile.mkdtemp(prefix="sluice-rpc-queues-")
port, http = free_port(), free_port()
data = work + "/d"
broker = subprocess.Popen([exe, "--amqp-port", str(port), "--http-port", str(http), "--prometheus-port", "0",
                           "--data-dir", data], stdout=open(work + "/log", "wb"), stderr=subprocess.STDOUT)


def rss_kib():
    for line in open("/proc/%d/status" % broker.pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def disk_kib():
    return dir_bytes(data) // 1024


def queues():
    req = urllib.request.Request("http://127.0.0.1:%d/api/overview" % http)
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["object_totals"]["queues"]


try:
    wait_for(lambda: amqp_answers("127.0.0.1", port), 15)
    time.sleep(1)  # let start-up allocations settle before the baseline (not a synchronisation)
    before = (rss_kib(), disk_kib(), queues())
    per_client = calls // clients
    r = subprocess.run([perf, "--port", str(port), "--rpc-queue-per-call", "-x", str(clients), "-y", "1",
                        "-C", str(per_client), "--queue-pattern", "rpc-%d", "--json", "--quiet",
                        "--broker-pid", str(broker.pid)], capture_output=True, text=True)
    s = json.loads(r.stdout.strip().splitlines()[-1])
    peak = s["broker_peak_rss_kib"]
    deadline = time.monotonic() + 60
    after = (rss_kib(), disk_kib(), queues())
    while time.monotonic() < deadline and (after[1] > before[1] + 1024 or after[2] > before[2]):
        time.sleep(1)
        after = (rss_kib(), disk_kib(), queues())
    print("calls %d in %.1f s (%.0f calls/s, p99 %.0f us)" % (s["rpc_calls"], s["duration_s"], s["rpc_calls_per_s"],
                                                            s["latency_us"]["p99"]))
    print("RSS KiB      before %8d  peak %8s  after %8d" % (before[0], peak, after[0]))
    print("data dir KiB before %8d              after %8d" % (before[1], after[1]))
    print("queues       before %8d              after %8d" % (before[2], after[2]))
finally:
    broker.terminate()
    broker.wait(30)
