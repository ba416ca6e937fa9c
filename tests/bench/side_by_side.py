#!/usr/bin/python3
"""Sluice vs LavinMQ and RabbitMQ on this machine, in one run.

Starts a sluiced, a LavinMQ (when its binary exists: ../shared/peers/ builds
v1.1.5 from source and starts it) and a private RabbitMQ node (Debian's
rabbitmq-server; installed if absent), each on loopback with its own data dir,
then runs every scenario against every broker — interleaved: one scenario
against each broker in turn before the next scenario — with the same load tool
(sluice-perf), and prints a table of absolute figures and Sluice/LavinMQ and
Sluice/RabbitMQ ratios (plus one JSON line).

  tests/bench/side_by_side.py [--sluiced PATH] [--perf PATH] [--lavinmq PATH]
                              [--brokers sluice,lavinmq,rabbitmq] [--seconds 10]
                              [--backlog 1000000] [--queues 10000] [--only 1,4]
                              [--growing] [--repeat N]

Scenarios. A consumer that keeps up (issue 7):
  1 transient 16 B, 1 producer 1 consumer, autoack          consume rate
  2 persistent 1 KiB, confirms (1000), manual ack, prefetch 500   consume rate
  3 fanout to 4 queues, 4 consumers, 256 B                   delivery rate
  4 RPC, 1 client 1 server                                   calls/s, p50/p99
  5 50 producers + 50 consumers on 50 queues, 128 B, confirms     rate
  7 10,000 durable queues with one persistent message each: declare rate, RSS/queue
A producer that outruns its consumer, so queues grow (issue 12; --growing = 8-11, 6):
  8 transient 16 B, 1 producer 1 consumer reading 100k msg/s     publish rate, final depth
  9 fanout to 4 queues, 256 B, 4 consumers reading 25k msg/s each publish rate, final depth
 10 transient 16 B, 1p/1c, 2 s head start, then consumer unthrottled   consume rate, final depth
 11 fanout to 4 queues, 256 B, 2 s head start, consumers unthrottled  delivery rate, final depth
  6 backlog of N persistent 512 B messages: fill (confirms), drain; peak RSS

The producer always publishes unthrottled. In 8 and 9 the consumers read no
faster than --consumer-rate in all (sluice-perf --consumer-rate, as PerfTest's
-R), so the queues grow the whole run and the figure is how fast the broker
takes messages in meanwhile. In 10 and 11 they start after --head-start
seconds and then read unthrottled: a deep queue drains while the producer goes
on. Consumers ack each delivery, no prefetch limit (PerfTest's defaults). The
final depth is the broker's own count (passive queue.declare) after the run.
Each broker is restarted (fresh data dir) before each of these scenarios, so
its peak RSS belongs to that scenario alone.
With sluice-perf's consumer unthrottled from the start, every broker measured
balances the two and the queue stays near empty (scenario 1).

Not a test: it prints numbers. Each broker's CPU per message comes from
/proc/PID/stat (sluice-perf --broker-pid; for LavinMQ the PID start-lavinmq.sh
prints); on this 2-core machine the load tool shares the CPU, so compare CPU per
message where rates saturate.
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


def port_free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


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


PEERS = os.path.join(os.path.dirname(ROOT), "shared", "peers")  # <repo>/../shared/peers
LAVINMQ_BIN = "/tmp/lavinmq-build/bin/lavinmq"


class Sluice:
    key, name = "sluice", "Sluice"

    def __init__(self, exe, workdir):
        self.exe, self.dir = exe, os.path.join(workdir, "sluice")
        self.proc = None

    def start(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.port = free_port()
        self.proc = subprocess.Popen([self.exe, "--amqp-port", str(self.port), "--http-port", "0", "--prometheus-port", "0",
                                      "--amqp-bind", "127.0.0.1", "--http-bind", "127.0.0.1",
                                      "--data-dir", os.path.join(self.dir, "data")],
                                     stdout=open(os.path.join(self.dir, "log"), "w"), stderr=subprocess.STDOUT)
        wait_port(self.port, 20, self.proc)
        self.pid = self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def version(self):
        out = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return "sluiced (this tree, %s)" % (out.stdout.strip() or "?")


class LavinMQ:
    """LavinMQ as ../shared/peers/ builds (v1.1.5) and starts it: fresh data dir, defaults."""
    key, name = "lavinmq", "LavinMQ"

    def __init__(self, exe):
        self.exe, self.port, self.pid = exe, None, None

    def missing(self):
        """Why it cannot run here, or None."""
        for script in ("start-lavinmq.sh", "stop-lavinmq.sh"):
            if not os.access(os.path.join(PEERS, script), os.X_OK):
                return "no %s in %s (the shared folder beside the checkout)" % (script, PEERS)
        if not os.access(self.exe, os.X_OK):
            return ("no LavinMQ binary at %s: build it with MIRROR=<snapshots> %s/build-lavinmq.sh "
                    "(see %s/README.md) or pass --lavinmq PATH" % (self.exe, PEERS, PEERS))
        return None

    def start(self):
        # start-lavinmq.sh PORT also takes PORT+10000 (management)
        for _ in range(50):
            p = free_port()
            if p + 10000 < 65536 and port_free(p + 10000):
                break
        self.port = p
        out = subprocess.run([os.path.join(PEERS, "start-lavinmq.sh"), str(p)], capture_output=True, text=True,
                             timeout=60, env=dict(os.environ, BIN=self.exe))
        if out.returncode != 0:
            raise RuntimeError("start-lavinmq.sh %d failed: %s" % (p, out.stderr.strip()[-500:]))
        self.pid = int(out.stdout.split()[-1])
        wait_port(self.port, 20)

    def stop(self):
        if self.port:
            out = subprocess.run([os.path.join(PEERS, "stop-lavinmq.sh"), str(self.port)], capture_output=True,
                                 timeout=60)
            if out.returncode == 0:  # its data and logs: start-lavinmq.sh's /tmp/lavinmq-PORT
                shutil.rmtree("/tmp/lavinmq-%d" % self.port, ignore_errors=True)
            self.port = None

    def version(self):
        out = subprocess.run([self.exe, "--version"], capture_output=True, text=True)
        return "LavinMQ " + (out.stdout.strip().splitlines() or ["?"])[0].replace("LavinMQ ", "")


class RabbitMQ:
    key, name = "rabbitmq", "RabbitMQ"

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "rabbitmq")

    def env(self):
        e = dict(os.environ)
        e.update(RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(self.dist_port),
                 RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",  # benchmark traffic stays on loopback
                 RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
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
    """One sluice-perf run; its JSON summary, or None (said why) when it failed."""
    cmd = [args.perf, "--port", str(broker.port), "--broker-pid", str(broker.pid), "--json", "--quiet"] + extra
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print("  %s: sluice-perf did not finish within %d s" % (broker.name, args.timeout), flush=True)
        return None
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    print("  %s: sluice-perf gave no JSON: %s %s" % (broker.name, out.stdout[-300:], out.stderr[-300:]), flush=True)
    return None


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


def _get(k):
    return lambda r: r.get(k)


def _lat(p):
    return lambda r: r.get("latency_us", {}).get(p)


CPU = ("broker CPU µs/msg", _get("broker_cpu_us_per_msg"))
RSS = ("peak RSS MiB", lambda r: (r.get("broker_peak_rss_kib") or 0) / 1024 or None)


def growing(first, second):
    """The figures of a scenario whose queues grow: the main rate first."""
    keys = {"publish msg/s": "publish_rate", "consume msg/s": "consume_rate", "deliveries/s": "consume_rate"}
    return [(first, _get(keys[first])), (second, _get(keys[second])),
            ("queue depth at the end", _get("queue_depth")), RSS, CPU]


# (number, title, sluice-perf arguments, [(figure, how to read it from the JSON)])
SCENARIOS = [
    (1, "transient 16 B, 1p/1c, autoack",
     lambda a: ["-z", str(a.seconds), "-a"], [("consume msg/s", _get("consume_rate")), CPU]),
    (2, "persistent 1 KiB, confirms 1000, ack, prefetch 500",
     lambda a: ["-z", str(a.seconds), "-s", "1024", "--persistent", "-c", "1000", "-q", "500"],
     [("consume msg/s", _get("consume_rate")), CPU]),
    (3, "fanout to 4 queues, 4 consumers, 256 B",
     lambda a: ["-z", str(a.seconds), "-s", "256", "--fanout-queues", "4", "-y", "4", "-a"],
     [("deliveries/s", _get("consume_rate")), CPU]),
    (4, "RPC, 1 client 1 server",
     lambda a: ["-z", str(a.seconds), "--rpc"],
     [("calls/s", _get("rpc_calls_per_s")), ("latency p50 µs", _lat("p50")), ("latency p99 µs", _lat("p99")), CPU]),
    (5, "50 producers + 50 consumers, 50 queues, 128 B, confirms",
     lambda a: ["-z", str(a.seconds), "-x", "50", "-y", "50", "--queues", "50", "-s", "128", "-c", "1000", "-q", "100"],
     [("consume msg/s", _get("consume_rate")), CPU]),
    # A producer that outruns its consumer (issue 12): unthrottled publishing, and consumers that
    # either read at a fixed rate (8, 9: the queues grow all along; the publish rate is the figure)
    # or start after a head start and then read unthrottled (10, 11: a deep queue drains while the
    # producer goes on; the consume rate is the figure). Manual ack of each delivery and no
    # prefetch limit, as PerfTest's defaults.
    (8, "transient 16 B, 1p/1c, consumer at a fixed rate, queue grows",
     lambda a: ["-z", str(a.seconds), "--consumer-rate", str(a.consumer_rate)],
     growing("publish msg/s", "consume msg/s")),
    (9, "fanout to 4 queues, 256 B, 4 consumers at a fixed rate, queues grow",
     lambda a: ["-z", str(a.seconds), "-s", "256", "--fanout-queues", "4", "-y", "4",
                "--consumer-rate", str(a.consumer_rate / 4)],
     growing("publish msg/s", "deliveries/s")),
    (10, "transient 16 B, 1p/1c, head start then unthrottled consumer",
     lambda a: ["-z", str(a.seconds + a.head_start), "--consumer-delay", str(a.head_start)],
     growing("consume msg/s", "publish msg/s")),
    (11, "fanout to 4 queues, 256 B, head start then 4 unthrottled consumers",
     lambda a: ["-z", str(a.seconds + a.head_start), "--consumer-delay", str(a.head_start), "-s", "256",
                "--fanout-queues", "4", "-y", "4"],
     growing("deliveries/s", "publish msg/s")),
    (6, "backlog of N persistent 512 B: fill (confirms), drain",
     lambda a: ["--backlog", str(a.backlog), "-s", "512", "--persistent", "-c", "1000", "-q", "500"],
     [("fill msg/s", _get("fill_rate")), ("drain msg/s", _get("drain_rate")),
      RSS, CPU]),
]
GROWING = (8, 9, 10, 11, 6)


def fmt(v):
    if v is None:
        return "-"
    if v >= 100:
        return "{:,.0f}".format(v)
    return "{:.2f}".format(v)


def median(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def one_line(figures, r):
    return ", ".join("%s %s" % (label, fmt(get(r))) for label, get in figures)


def pick_brokers(spec, sluiced, lavinmq, work, error):
    """The brokers `spec` names ("sluice,lavinmq,rabbitmq"), in its order,
    leaving out (with a line saying why) those this machine cannot run;
    `error` reports an unknown name."""
    known = {"sluice": lambda: Sluice(sluiced, work), "lavinmq": lambda: LavinMQ(lavinmq),
             "rabbitmq": lambda: RabbitMQ(work)}
    brokers = []
    for k in [x.strip().lower() for x in spec.split(",") if x.strip()]:
        if k not in known:
            error("--brokers: unknown broker %r (sluice, lavinmq, rabbitmq)" % k)
        b = known[k]()
        why = b.missing() if hasattr(b, "missing") else None
        if why:
            print("%s: skipped — %s" % (b.name, why), flush=True)
            continue
        brokers.append(b)
    return brokers


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluiced", default=os.path.join(ROOT, "build/release/cli/sluiced"))
    ap.add_argument("--perf", default=os.path.join(ROOT, "build/release/cli/sluice-perf"))
    ap.add_argument("--lavinmq", default=LAVINMQ_BIN, help="LavinMQ binary (../shared/peers/build-lavinmq.sh)")
    ap.add_argument("--brokers", default="sluice,lavinmq,rabbitmq",
                    help="comma-separated, in the order each scenario runs them: sluice, lavinmq, rabbitmq")
    ap.add_argument("--seconds", type=int, default=10, help="measured seconds per run")
    ap.add_argument("--consumer-rate", type=int, default=100000,
                    help="scenarios 8, 9: deliveries/s the consumers read in all (split between them)")
    ap.add_argument("--head-start", type=float, default=2,
                    help="scenarios 10, 11: seconds of publishing before the consumers start")
    ap.add_argument("--backlog", type=int, default=1000000)
    ap.add_argument("--queues", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=1, help="rounds of every scenario (the table gives the median)")
    ap.add_argument("--timeout", type=int, default=900, help="per sluice-perf run, seconds")
    ap.add_argument("--only", default="", help="comma-separated scenario numbers")
    ap.add_argument("--growing", action="store_true", help="only the scenarios where queues grow (8-11, 6)")
    args = ap.parse_args()
    only = {int(x) for x in args.only.split(",") if x}
    if args.growing:
        only |= set(GROWING)
    work = tempfile.mkdtemp(prefix="sluice-bench-")
    brokers = pick_brokers(args.brokers, args.sluiced, args.lavinmq, work, ap.error)
    if not brokers:
        sys.exit("no broker to run")
    names = [b.name for b in brokers]
    results = {}   # scenario -> broker name -> [JSON per round]
    rows = []      # (scenario, label, {broker name: value})

    def stop_all():
        for b in brokers:
            try:
                b.stop()
            except Exception as e:  # report, keep stopping the others
                print("stopping %s: %s" % (b.name, e))

    # SIGTERM (e.g. timeout(1)) stops the brokers as ^C does
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for b in brokers:
            b.start()
        print("machine: %d cores, %s; %s; %s" % (os.cpu_count(), os.uname().release,
              " vs ".join(b.version() for b in brokers), time.strftime("%Y-%m-%d %H:%M %Z")), flush=True)
        for rnd in range(args.repeat):
            for num, title, extra, figures in SCENARIOS:
                if only and num not in only:
                    continue
                r = results.setdefault(num, {})
                for b in brokers:  # interleaved: every broker, one scenario at a time
                    print("scenario %d on %s%s ..." % (num, b.name, " (round %d)" % (rnd + 1) if args.repeat > 1 else ""),
                          flush=True)
                    if num in GROWING:  # a fresh broker: its peak RSS is this scenario's alone
                        b.stop()
                        b.start()
                    res = perf(args, b, extra(args))
                    r.setdefault(b.name, []).append(res)
                    if res is not None:
                        print("  " + one_line(figures, res), flush=True)
        for num, title, extra, figures in SCENARIOS:
            if num not in results:
                continue
            for label, get in figures:
                rows.append((num, "%d. %s — %s" % (num, title, label),
                             {n: median(get(x) for x in results[num].get(n, []) if x is not None) for n in names}))
        if not only or 7 in only:
            r = {}
            for b in brokers:
                print("scenario 7 on %s (restarted, so memory per queue starts from an idle broker) ..."
                      % b.name, flush=True)
                b.stop()
                b.start()
                try:
                    r[b.name] = many_queues(args, b)
                except Exception as e:
                    print("  %s: %s" % (b.name, e), flush=True)
            results[7] = r
            title = "7. %d durable queues, 1 persistent msg each" % args.queues
            rows.append((7, title + " — declares/s", {n: r.get(n, {}).get("declare_rate") for n in names}))
            rows.append((7, title + " — KiB per queue", {n: r.get(n, {}).get("kib_per_queue") for n in names}))
    except KeyboardInterrupt:
        print("interrupted: stopping the brokers", flush=True)
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)

    others = [n for n in names if n != "Sluice"] if "Sluice" in names else []
    width = max([len(r[1]) for r in rows] + [20])
    print()
    print("%-*s " % (width, "scenario") + " ".join("%14s" % n for n in names) +
          "".join(" %16s" % ("Sluice/" + o) for o in others))
    for num, label, v in rows:
        line = "%-*s " % (width, label) + " ".join("%14s" % fmt(v.get(n)) for n in names)
        for o in others:
            s, q = v.get("Sluice"), v.get(o)
            line += " %16s" % (("%.2fx" % (s / q)) if (s is not None and q) else "-")
        print(line)
    print(json.dumps({"brokers": names, "results": {str(k): v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
