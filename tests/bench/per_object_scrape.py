"""A program, not a test: N queues (100k by default), the time of /metrics and
/metrics/per-object, and sluice-perf's RPC rate and p99 with and without a
per-object scrape every second.

  /usr/bin/python3 tests/bench/per_object_scrape.py build/release/cli/sluiced prom [N]

(SLUICE_PERF names another sluice-perf. "api" as the second argument scrapes the HTTP port, for builds before the
Prometheus port existed.) sluice-perf is taken from build/release/cli/."""
import os, socket, subprocess, sys, tempfile, threading, time, urllib.request
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from amqp_raw import RawConnection, queue_declare
from conftest import free_port, amqp_answers, wait_for

exe, metrics_port_kind = sys.argv[1], sys.argv[2]   # "api" or "prom"
N = int(sys.argv[3]) if len(sys.argv) > 3 else 100000
work = tempfile.mkdtemp(prefix="wt13-measure-")
port, http = free_port(), free_port()
prom = free_port()
args = [exe, "--amqp-port", str(port), "--http-port", str(http), "--data-dir", work + "/d"]
if metrics_port_kind == "prom":
    args += ["--prometheus-port", str(prom)]
p = subprocess.Popen(args, stdout=open(work + "/log", "wb"), stderr=subprocess.STDOUT)
wait_for(lambda: amqp_answers("127.0.0.1", port), 15)
c = RawConnection("127.0.0.1", port, timeout=120)
c.handshake(); c.open_channel(1)
batch = b"".join(queue_declare(1, "q%d" % i, nowait=True) for i in range(N))
c.send(batch)
c.send(queue_declare(1, "last")); c.expect_method((50, 11), timeout=300)
mport = prom if metrics_port_kind == "prom" else http
def scrape(path):
    t = time.monotonic()
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (mport, path), timeout=120) as r:
        n = len(r.read())
    return time.monotonic() - t, n
for path in ("/metrics", "/metrics/per-object"):
    ts = [scrape(path) for _ in range(3)]
    print("%s: %s" % (path, ", ".join("%.0f ms (%.1f MB)" % (t * 1000, n / 1e6) for t, n in ts)), flush=True)
perf = os.environ.get("SLUICE_PERF") or os.path.join(os.path.dirname(os.path.abspath(exe)), "sluice-perf")
def rpc(label):
    r = subprocess.run([perf, "--port", str(port), "--rpc", "-x", "1", "-y", "1", "-z", "10", "--queue-pattern", "rpc-%d"],
                       capture_output=True, text=True)
    lines = [l for l in r.stdout.splitlines() if "p99" in l or "calls" in l.lower()]
    print(label, "|", " / ".join(lines[-3:]), flush=True)
rpc("RPC, no scrapes:")
stop = threading.Event()
def scraper():
    while not stop.is_set():
        t0 = time.monotonic(); scrape("/metrics/per-object")
        stop.wait(max(0, 1 - (time.monotonic() - t0)))
th = threading.Thread(target=scraper); th.start()
rpc("RPC, per-object scrape every 1 s:")
stop.set(); th.join()
p.terminate(); p.wait()
