"""A program, not a test (issue 15, deduplication): what a deduplication
window costs in publish rate, broker CPU and memory.

  /usr/bin/python3 tests/bench/dedup_window.py build/release/cli/sluiced [MESSAGES]

For each scenario below it starts sluiced afresh (free ports, temporary data
dir), runs one `sluice-perf` producer of MESSAGES messages (default
2,000,000; 16-byte bodies, confirms, window 1000) to a direct exchange with
one autoack consumer, and prints the publish rate, broker CPU µs per message,
the broker's peak RSS and its RSS after the run, and the data dir's size.

  off            no deduplication, no header
  header-only    the header on every message, the exchange without a window
  window-1k      x-cache-size 10,000,000, 1,000 distinct keys (most are duplicates)
  window-all     x-cache-size 10,000,000, every message a new key (the window grows to MESSAGES)

Each is run transient and --persistent (durable exchange and queue,
delivery_mode 2: the keys are written and synced with the messages).
SLUICE_PERF names another sluice-perf; SLUICED_ARGS adds sluiced options
(e.g. --dedup-memory-keys 10000000). DEDUP_SCENARIOS=a,b runs only those."""
import json, os, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from conftest import free_port, amqp_answers, wait_for
from test_storage_space import dir_bytes

exe = sys.argv[1]
messages = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000_000
perf = os.environ.get("SLUICE_PERF") or os.path.join(os.path.dirname(os.path.abspath(exe)), "sluice-perf")

SCENARIOS = [
    ("off", []),
    ("header-only", ["--dedup-keys", str(messages)]),
    ("window-1k", ["--dedup-cache", "10000000", "--dedup-keys", "1000"]),
    ("window-all", ["--dedup-cache", "10000000", "--dedup-keys", str(messages)]),
]


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def run(name, extra, persistent):
    work = tempfile.mkdtemp(prefix="sluice-dedup-bench-")
    port = free_port()
    data = work + "/d"
    broker = subprocess.Popen([exe, "--amqp-port", str(port), "--http-port", "0", "--prometheus-port", "0",
                               "--data-dir", data] + os.environ.get("SLUICED_ARGS", "").split(), stdout=open(work + "/log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: amqp_answers("127.0.0.1", port), 15)
        args = [perf, "--port", str(port), "-x", "1", "-y", "1", "--autoack", "-C", str(messages), "-c", "1000",
                "--json", "--quiet", "--no-cleanup", "--broker-pid", str(broker.pid)] + extra
        if persistent:
            args.append("--persistent")
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0:
            print("%s: sluice-perf failed: %s" % (name, r.stderr.strip()))
            return None
        s = json.loads(r.stdout.strip().splitlines()[-1])
        return {
            "scenario": name + (" persistent" if persistent else ""),
            "publish_rate": round(s["publish_rate"]),
            "received": s["received"],
            "cpu_us_per_msg": s.get("broker_cpu_us_per_msg"),
            "peak_rss_mib": round(s["broker_peak_rss_kib"] / 1024, 1),
            "rss_after_mib": round(rss_kib(broker.pid) / 1024, 1),
            "data_dir_mib": round(dir_bytes(data) / 2**20, 1),
        }
    finally:
        broker.terminate()
        try:
            broker.wait(30)
        except subprocess.TimeoutExpired:
            broker.kill()
        subprocess.run(["rm", "-rf", work])


rows = []
for persistent in (False, True):
    for name, extra in SCENARIOS:
        only = os.environ.get("DEDUP_SCENARIOS")
        if only and (name + (" persistent" if persistent else "")) not in only.split(","):
            continue
        row = run(name, extra, persistent)
        if row:
            rows.append(row)
            print("%-26s publish %8d msg/s  received %8d  broker CPU %6s us/msg  peak RSS %7.1f MiB  "
                  "RSS after %7.1f MiB  data dir %7.1f MiB" % (
                      row["scenario"], row["publish_rate"], row["received"], row["cpu_us_per_msg"],
                      row["peak_rss_mib"], row["rss_after_mib"], row["data_dir_mib"]), flush=True)
print(json.dumps({"messages": messages, "rows": rows}))
