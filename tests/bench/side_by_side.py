#!/usr/bin/python3
"""Sluice vs RabbitMQ on this machine, in one run.

Starts a private RabbitMQ node (Debian's rabbitmq-server; installed if absent)
and a sluiced, each on loopback with its own data dir, then runs every
scenario against both — interleaved, Sluice then RabbitMQ, scenario by
scenario — with the same load tool (sluice-perf), and prints a table of
absolute figures and Sluice/RabbitMQ ratios (plus one JSON line).

  tests/bench/side_by_side.py [--sluiced PATH] [--perf PATH] [--seconds 10]
                              [--backlog 1000000] [--queues 10000] [--only 1,4]

Scenarios (issue 7):
  1 transient 16 B, 1 producer 1 consumer, autoack          consume rate
  2 persistent 1 KiB, confirms (1000), manual ack, prefetch 500   consume rate
  3 fanout to 4 queues, 4 consumers, 256 B                   delivery rate
  4 RPC, 1 client 1 server                                   calls/s, p50/p99
  5 50 producers + 50 consumers on 50 queues, 128 B, confirms     rate
  6 backlog of N persistent 512 B messages: fill (confirms), drain; peak RSS
  7 10,000 durable queues with one persistent message each: declare rate, RSS/queue

Not a test: it prints numbers. Each broker's CPU per message comes from
/proc/PID/stat (sluice-perf --broker-pid); on this 2-core machine the load
tool shares the CPU, so compare CPU per message where rates saturate.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import amqp_raw  # noqa: E402  (hand-built frames, for the pipelined declares)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("broker exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listens on %d after %ss" % (port, timeout))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sluice:
    name = "Sluice"

    def __init__(self, exe, workdir):
        self.exe, self.dir = exe, os.path.join(workdir, "sluice")
        self.proc = None

    def start(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.port = free_port()
        self.proc = subprocess.Popen([self.exe, "--amqp-port", str(self.port), "--http-port", "0", "--prometheus-port", "0",
                                      "--data-dir", os.path.join(self.dir, "data")],
                                     stdout=open(os.path.join(self.dir, "log"), "w"), stderr=subprocess.STDOUT)
        wait_port(self.port, 20, self.proc)
        self.pid = self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def version(self):
        return "sluiced (this tree)"


class RabbitMQ:
    name = "RabbitMQ"

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "rabbitmq")

    def env(self):
        e = dict(os.environ)
        e.update(RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(self.dist_port),
                 RABBITMQ_NODENAME="sluicebench@localhost", RABBITMQ_MNESIA_BASE=os.path.join(self.dir, "mnesia"),
                 RABBITMQ_LOG_BASE=os.path.join(self.dir, "log"),
                 RABBITMQ_CONFIG_FILE=os.path.join(self.dir, "rabbitmq"),
                 RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.dir, "enabled_plugins"), HOME=self.dir)
        return e

    def start(self):
        if not shutil.which("rabbitmq-server"):
            print("installing Debian's rabbitmq-server ...", flush=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "rabbitmq-server"], check=True,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            # The package starts a system node; we run our own.
            subprocess.run(["systemctl", "stop", "rabbitmq-server"], capture_output=True)
            subprocess.run(["service", "rabbitmq-server", "stop"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.port, self.dist_port = free_port(), free_port()
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write("loopback_users = none\n")
        for sub in ("mnesia", "log"):
            os.makedirs(os.path.join(self.dir, sub))
        # Debian's wrapper drops to the rabbitmq user when started as root.
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", self.dir], check=False)
            os.chmod(os.path.dirname(self.dir), 0o755)
        self.proc = subprocess.Popen(["rabbitmq-server"], env=self.env(),
                                     stdout=open(os.path.join(self.dir, "out.log"), "w"), stderr=subprocess.STDOUT)
        wait_port(self.port, 90, self.proc)
        # The Erlang VM's pid: the beam.smp child listening on our port.
        out = subprocess.run(["ss", "-ltnpH", "sport = :%d" % self.port], capture_output=True, text=True).stdout
        self.pid = int(out.split("pid=")[1].split(",")[0])

    def stop(self):
        subprocess.run(["rabbitmqctl", "-n", "sluicebench@localhost", "stop"], env=self.env(), capture_output=True)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def version(self):
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"], capture_output=True, text=True)
        return "RabbitMQ " + out.stdout.strip()


def perf(args, broker, extra):
    cmd = [args.perf, "--port", str(broker.port), "--broker-pid", str(broker.pid), "--json", "--quiet"] + extra
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("sluice-perf gave no JSON against %s: %s %s" % (broker.name, out.stdout[-500:], out.stderr[-500:]))


def many_queues(args, broker):
    """Declare durable queues and publish one persistent message to each,
    pipelined on one connection (so the client is not the bottleneck)."""
    n, chunk = args.queues, 500
    before = rss_kib(broker.pid)
    c = amqp_raw.RawConnection("127.0.0.1", broker.port, timeout=60)
    c.handshake()
    c.open_channel(1)
    t0 = time.monotonic()
    for start in range(0, n, chunk):
        data = b"".join(amqp_raw.queue_declare(1, "bench-q-%d" % i, durable=True) for i in range(start, min(n, start + chunk)))
        c.send(data)
        for _ in range(start, min(n, start + chunk)):
            c.expect_method(amqp_raw.QUEUE_DECLARE_OK)
    declare_s = time.monotonic() - t0
    props = b"\x02"  # delivery_mode = 2
    for start in range(0, n, chunk):
        c.send(b"".join(amqp_raw.basic_publish(1, "", "bench-q-%d" % i)
                        + amqp_raw.header_frame(1, 1, flags=0x1000, props=props) + amqp_raw.body_frame(1, b"x")
                        for i in range(start, min(n, start + chunk))))
    # A round trip so every publish has been handled before measuring memory.
    c.send(amqp_raw.queue_declare(1, "bench-q-0", durable=True))
    c.expect_method(amqp_raw.QUEUE_DECLARE_OK, timeout=120)
    time.sleep(1)  # let memory settle before reading RSS (not a synchronisation)
    after = rss_kib(broker.pid)
    c.close()
    return {"declare_rate": n / declare_s, "kib_per_queue": max(0, after - before) / n, "rss_mib": after / 1024}


SCENARIOS = [
    (1, "transient 16 B, 1p/1c, autoack", "consume msg/s",
     lambda a: ["-z", str(a.seconds), "-a"], "consume_rate"),
    (2, "persistent 1 KiB, confirms 1000, ack, prefetch 500", "consume msg/s",
     lambda a: ["-z", str(a.seconds), "-s", "1024", "--persistent", "-c", "1000", "-q", "500"], "consume_rate"),
    (3, "fanout to 4 queues, 4 consumers, 256 B", "deliveries/s",
     lambda a: ["-z", str(a.seconds), "-s", "256", "--fanout-queues", "4", "-y", "4", "-a"], "consume_rate"),
    (4, "RPC, 1 client 1 server", "calls/s",
     lambda a: ["-z", str(a.seconds), "--rpc"], "rpc_calls_per_s"),
    (5, "50 producers + 50 consumers, 50 queues, 128 B, confirms", "consume msg/s",
     lambda a: ["-z", str(a.seconds), "-x", "50", "-y", "50", "--queues", "50", "-s", "128", "-c", "1000", "-q", "100"],
     "consume_rate"),
    (6, "backlog of N persistent 512 B: fill, drain", "fill / drain msg/s",
     lambda a: ["--backlog", str(a.backlog), "-s", "512", "--persistent", "-c", "1000", "-q", "500"], None),
]


def fmt(v):
    if v is None:
        return "-"
    if v >= 100:
        return "{:,.0f}".format(v)
    return "{:.2f}".format(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluiced", default=os.path.join(ROOT, "build/release/cli/sluiced"))
    ap.add_argument("--perf", default=os.path.join(ROOT, "build/release/cli/sluice-perf"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--backlog", type=int, default=1000000)
    ap.add_argument("--queues", type=int, default=10000)
    ap.add_argument("--timeout", type=int, default=900, help="per sluice-perf run, seconds")
    ap.add_argument("--only", default="", help="comma-separated scenario numbers")
    args = ap.parse_args()
    only = {int(x) for x in args.only.split(",") if x}
    work = tempfile.mkdtemp(prefix="sluice-bench-")
    brokers = [Sluice(args.sluiced, work), RabbitMQ(work)]
    rows, results = [], {}
    try:
        for b in brokers:
            b.start()
        print("machine: %d cores, %s; %s vs %s; %s" % (os.cpu_count(), os.uname().release,
              brokers[0].version(), brokers[1].version(), time.strftime("%Y-%m-%d %H:%M")), flush=True)
        for num, title, unit, extra, key in SCENARIOS:
            if only and num not in only:
                continue
            r = {}
            for b in brokers:  # interleaved: both brokers, one scenario at a time
                print("scenario %d on %s ..." % (num, b.name), flush=True)
                r[b.name] = perf(args, b, extra(args))
            results[num] = r
            s, q = r["Sluice"], r["RabbitMQ"]
            if num == 6:
                for label, k in (("fill msg/s", "fill_rate"), ("drain msg/s", "drain_rate")):
                    rows.append((num, "%s — %s" % (title, label), s.get(k), q.get(k)))
                rows.append((num, "%s — peak RSS MiB" % title, s.get("broker_peak_rss_kib", 0) / 1024,
                             q.get("broker_peak_rss_kib", 0) / 1024))
            else:
                rows.append((num, "%s — %s" % (title, unit), s.get(key), q.get(key)))
                if num == 4:
                    for p in ("p50", "p99"):
                        rows.append((num, "%s — latency %s µs" % (title, p),
                                     s.get("latency_us", {}).get(p), q.get("latency_us", {}).get(p)))
            rows.append((num, "%s — broker CPU µs/msg" % title, s.get("broker_cpu_us_per_msg"),
                         q.get("broker_cpu_us_per_msg")))
        if not only or 7 in only:
            r = {}
            for b in brokers:
                print("scenario 7 on %s (restarted, so memory per queue starts from an idle broker) ..."
                      % b.name, flush=True)
                b.stop()
                b.start()
                r[b.name] = many_queues(args, b)
            results[7] = r
            title = "%d durable queues, 1 persistent msg each" % args.queues
            rows.append((7, title + " — declares/s", r["Sluice"]["declare_rate"], r["RabbitMQ"]["declare_rate"]))
            rows.append((7, title + " — KiB per queue", r["Sluice"]["kib_per_queue"], r["RabbitMQ"]["kib_per_queue"]))
    finally:
        for b in brokers:
            try:
                b.stop()
            except Exception as e:  # report, keep stopping the others
                print("stopping %s: %s" % (b.name, e))
        shutil.rmtree(work, ignore_errors=True)

    width = max(len(r[1]) for r in rows) if rows else 20
    print()
    print("%-*s %14s %14s %9s" % (width, "scenario", "Sluice", "RabbitMQ", "ratio"))
    for num, label, s, q in rows:
        ratio = (s / q) if (s is not None and q) else None
        print("%-*s %14s %14s %9s" % (width, label, fmt(s), fmt(q), ("%.2fx" % ratio) if ratio else "-"))
    print(json.dumps({"results": {str(k): v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
