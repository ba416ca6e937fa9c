#!/usr/bin/python3
"""Soak: mixed load against one sluiced for N minutes while client processes
are killed at random, then a check that every message adds up.

    tests/soak/soak.py --minutes 10 [--sluiced build/release/cli/sluiced]
    tests/soak/soak.py --minutes 10 --port 5672     # a broker already running

Workers are separate processes (so they can be kill -9'ed), each with an
append-only log of what it did, written with one write() per event before
the event is acknowledged anywhere:

  producer  S id (about to publish), C id (confirmed), N id (nacked)
            persistent messages to durable queues or transient messages to
            transient queues, always with publisher confirms
  consumer  R id (received; logged before its ack); acks, and nacks with
            requeue now and then; now and then SIGSTOPped for a few
            seconds (a client that stops reading while messages pile up)
  rpc       a server answering requests, and a client calling through
            direct reply-to and checking each reply's correlation id

At the end producers stop, consumers stop (their unacked messages go back),
a drainer takes what is left, and the check is:
  - every confirmed message was received at least once (consumed or drained),
  - nothing was received that no producer sent,
  - confirmed = distinct consumed + still queued, counting only confirmed ids,
  - every RPC reply matched its call.
Exit status 0 when it all holds. The broker's RSS is sampled throughout.
"""

import argparse
import collections
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

PERSISTENT_QUEUES = ["soak.p%d" % i for i in range(4)]
TRANSIENT_QUEUES = ["soak.t%d" % i for i in range(2)]
RPC_QUEUE = "soak.rpc"
stopping = False


def on_term(signum, frame):
    global stopping
    stopping = True


class EventLog:
    """One line per event, one write() each: a kill loses at most the event
    being written, never one already reported to the broker."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, kind, ident):
        os.write(self.fd, ("%s %s\n" % (kind, ident)).encode())


def connect(port):
    import pika
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, heartbeat=10, blocked_connection_timeout=120, connection_attempts=5, retry_delay=0.5))


# --------------------------------------------------------------------------
# workers


def run_producer(port, wid, log, persistent):
    import pika
    conn = connect(port)
    ch = conn.channel()
    ch.confirm_delivery()
    queues = PERSISTENT_QUEUES if persistent else TRANSIENT_QUEUES
    props = pika.BasicProperties(delivery_mode=2 if persistent else 1)
    rng = random.Random()
    seq = 0
    while not stopping:
        seq += 1
        ident = "%s-%d" % (wid, seq)
        size = rng.choice((16, 200, 1000, 4000, 20000))
        body = (ident + " ").encode() + b"x" * size
        log.write("S", ident)
        try:
            ch.basic_publish("", rng.choice(queues), body, props)
        except pika.exceptions.NackError:
            log.write("N", ident)
            continue
        log.write("C", ident)
    conn.close()


def run_consumer(port, wid, log):
    conn = connect(port)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=rng_prefetch())
    rng = random.Random()

    def on_message(c, method, props, body):
        ident = body.split(b" ", 1)[0].decode()
        if rng.random() < 0.05:
            c.basic_nack(method.delivery_tag, requeue=True)    # comes back later
            return
        log.write("R", ident)
        c.basic_ack(method.delivery_tag)

    for q in PERSISTENT_QUEUES + TRANSIENT_QUEUES:
        ch.basic_consume(q, on_message)
    while not stopping:
        conn.process_data_events(0.2)
    conn.close()


def rng_prefetch():
    return random.choice((1, 10, 100))


def run_rpc_server(port, wid, log):
    import pika
    conn = connect(port)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=5)

    def on_request(c, method, props, body):
        c.basic_publish("", props.reply_to, body[::-1], pika.BasicProperties(correlation_id=props.correlation_id))
        c.basic_ack(method.delivery_tag)

    ch.basic_consume(RPC_QUEUE, on_request)
    while not stopping:
        conn.process_data_events(0.2)
    conn.close()


def run_rpc_client(port, wid, log):
    import pika
    conn = connect(port)
    ch = conn.channel()
    replies = {}

    def on_reply(c, method, props, body):
        replies[props.correlation_id] = body

    ch.basic_consume("amq.rabbitmq.reply-to", on_reply, auto_ack=True)
    n = 0
    while not stopping:
        n += 1
        cid = "%s-%d" % (wid, n)
        body = ("call %s %s" % (cid, uuid.uuid4().hex)).encode()
        ch.basic_publish("", RPC_QUEUE, body, pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id=cid))
        deadline = time.monotonic() + 10
        while cid not in replies and time.monotonic() < deadline and not stopping:
            conn.process_data_events(0.05)
        if cid not in replies:
            log.write("T", cid)        # no server answered in time (they get killed too)
            continue
        got = replies.pop(cid)
        log.write("P" if got == body[::-1] else "X", cid)
        for stale in [k for k in replies]:  # a late answer to a timed-out call
            log.write("L", stale)
            replies.pop(stale)
    conn.close()


def worker_main(args):
    signal.signal(signal.SIGTERM, on_term)
    log = EventLog(os.path.join(args.dir, "%s.log" % args.id))
    role = args.role
    if role == "producer-persistent":
        run_producer(args.port, args.id, log, True)
    elif role == "producer-transient":
        run_producer(args.port, args.id, log, False)
    elif role == "consumer":
        run_consumer(args.port, args.id, log)
    elif role == "rpc-server":
        run_rpc_server(args.port, args.id, log)
    elif role == "rpc-client":
        run_rpc_client(args.port, args.id, log)


# --------------------------------------------------------------------------
# the conductor


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_of(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


class Fleet:
    def __init__(self, port, workdir):
        self.port = port
        self.workdir = workdir
        self.procs = {}      # id -> (role, Popen)
        self.n = 0
        self.kills = collections.Counter()
        self.paused = {}     # id -> when to SIGCONT it
        self.pauses = 0

    def spawn(self, role):
        self.n += 1
        wid = "%s%d" % (role[0] + role.split("-")[-1][0], self.n)
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--role", role, "--id", wid,
                              "--dir", self.workdir, "--port", str(self.port)],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.workdir, wid + ".err"), "wb"))
        self.procs[wid] = (role, p)

    def kill_one(self, rng):
        alive = [w for w, (_, p) in self.procs.items() if p.poll() is None]
        if not alive:
            return
        wid = rng.choice(alive)
        role, p = self.procs.pop(wid)
        self.paused.pop(wid, None)
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.kills[role] += 1
        self.spawn(role)

    def pause_one(self, rng):
        """SIGSTOP a consumer for 2-8 s: a client that stops reading its
        socket while messages pile up for it (and queues grow meanwhile)."""
        running = [w for w, (r, p) in self.procs.items()
                   if r == "consumer" and p.poll() is None and w not in self.paused]
        if not running:
            return
        wid = rng.choice(running)
        self.procs[wid][1].send_signal(signal.SIGSTOP)
        self.paused[wid] = time.monotonic() + rng.uniform(2, 8)
        self.pauses += 1

    def resume_due(self, everyone=False):
        for wid, when in list(self.paused.items()):
            if everyone or time.monotonic() >= when:
                entry = self.procs.get(wid)
                if entry and entry[1].poll() is None:
                    entry[1].send_signal(signal.SIGCONT)
                del self.paused[wid]

    def replace_dead(self):
        for wid, (role, p) in list(self.procs.items()):
            if p.poll() is not None:
                self.procs.pop(wid)
                self.spawn(role)

    def stop(self, roles, timeout=60):
        chosen = [(w, p) for w, (r, p) in self.procs.items() if r in roles]
        for _, p in chosen:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for w, p in chosen:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                print("soak: %s did not stop on SIGTERM; killed" % w, flush=True)
            self.procs.pop(w, None)


def read_logs(workdir):
    events = collections.defaultdict(list)
    for name in os.listdir(workdir):
        if name.endswith(".log"):
            with open(os.path.join(workdir, name)) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2:
                        events[parts[0]].append(parts[1])
    return events


def drain(port):
    """Everything still queued, by id (no consumers are left)."""
    conn = connect(port)
    ch = conn.channel()
    depth, got = {}, []
    for q in PERSISTENT_QUEUES + TRANSIENT_QUEUES:
        depth[q] = ch.queue_declare(q, passive=True).method.message_count
        while True:
            m, _, body = ch.basic_get(q, auto_ack=True)
            if m is None:
                break
            got.append(body.split(b" ", 1)[0].decode())
    conn.close()
    return depth, got


def conductor(args):
    workdir = tempfile.mkdtemp(prefix="sluice-soak-")
    broker = None
    port = args.port
    if not port:
        port = free_port()
        exe = args.sluiced or os.path.join(REPO, "build", "release", "cli", "sluiced")
        log = open(os.path.join(workdir, "sluiced.log"), "wb")
        broker = subprocess.Popen([exe, "--amqp-port", str(port), "--http-port", "0", "--prometheus-port", "0",
                                   "--data-dir", os.path.join(workdir, "data")] + args.broker_arg,
                                  stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and broker.poll() is None, "sluiced did not start"
                time.sleep(0.1)
    conn = connect(port)
    ch = conn.channel()
    for q in PERSISTENT_QUEUES:
        ch.queue_declare(q, durable=True)
    for q in TRANSIENT_QUEUES + [RPC_QUEUE]:
        ch.queue_declare(q)
    conn.close()

    fleet = Fleet(port, workdir)
    for role, n in (("producer-persistent", 3), ("producer-transient", 2), ("consumer", 3),
                    ("rpc-server", 2), ("rpc-client", 2)):
        for _ in range(n):
            fleet.spawn(role)
    rng = random.Random(args.seed)
    print("soak: %d minutes against port %d, workdir %s, seed %d" % (args.minutes, port, workdir, args.seed),
          flush=True)
    end = time.monotonic() + args.minutes * 60
    next_kill = time.monotonic() + rng.uniform(1, 5)
    next_pause = time.monotonic() + rng.uniform(5, 15)
    next_report = time.monotonic() + 30
    rss_peak = rss_start = rss_of(broker.pid) if broker else 0
    while time.monotonic() < end:
        time.sleep(0.2)
        fleet.replace_dead()
        fleet.resume_due()
        if time.monotonic() >= next_pause:
            fleet.pause_one(rng)
            next_pause = time.monotonic() + rng.uniform(5, 15)
        if broker:
            assert broker.poll() is None, "sluiced died (exit %s); see %s" % (broker.returncode, workdir)
            rss_peak = max(rss_peak, rss_of(broker.pid))
        if time.monotonic() >= next_kill:
            fleet.kill_one(rng)
            next_kill = time.monotonic() + rng.uniform(1, 5)
        if time.monotonic() >= next_report:
            ev = read_logs(workdir)
            print("soak: %4.0f s left: %d confirmed, %d received, %d rpc calls, %d kills, %d pauses, broker RSS %d MiB"
                  % (end - time.monotonic(), len(ev["C"]), len(ev["R"]), len(ev["P"]), sum(fleet.kills.values()),
                     fleet.pauses, rss_of(broker.pid) >> 20 if broker else -1), flush=True)
            next_report = time.monotonic() + 30

    fleet.resume_due(everyone=True)
    fleet.stop({"producer-persistent", "producer-transient", "rpc-client"})
    fleet.stop({"consumer", "rpc-server"})
    depth, drained = drain(port)
    ev = read_logs(workdir)

    sent, confirmed, nacked = set(ev["S"]), set(ev["C"]), set(ev["N"])
    received = collections.Counter(ev["R"])
    seen = set(received) | set(drained)
    lost = confirmed - seen
    phantom = seen - sent
    confirmed_seen = confirmed & seen
    result = {
        "minutes": args.minutes,
        "sent": len(sent),
        "confirmed": len(confirmed),
        "nacked": len(nacked),
        "consumed_distinct": len(received),
        "consumed_deliveries": sum(received.values()),
        "received_more_than_once": sum(received.values()) - len(received),
        "still_queued": sum(depth.values()),
        "drained": len(drained),
        "confirmed_accounted": len(confirmed_seen),
        "lost_confirmed": len(lost),
        "phantom": len(phantom),
        "unconfirmed_but_delivered": len(seen - confirmed - phantom),
        "rpc_ok": len(ev["P"]),
        "rpc_mismatch": len(ev["X"]),
        "rpc_timeouts": len(ev["T"]),
        "kills": dict(fleet.kills),
        "consumer_pauses": fleet.pauses,
        "broker_rss_start_mib": rss_start >> 20,
        "broker_rss_peak_mib": rss_peak >> 20,
    }
    # confirmed = consumed + still queued, over confirmed ids: every
    # confirmed id is in exactly one of the two (a drained id was never acked).
    consumed_confirmed = set(received) & confirmed
    queued_confirmed = set(drained) & confirmed
    result["confirmed_eq_consumed_plus_queued"] = (
        len(confirmed) == len(consumed_confirmed) + len(queued_confirmed - consumed_confirmed))
    ok = (not lost and not phantom and result["rpc_mismatch"] == 0 and len(drained) == sum(depth.values())
          and result["confirmed_eq_consumed_plus_queued"])
    if broker:
        broker.send_signal(signal.SIGTERM)
        code = broker.wait(60)
        result["broker_exit"] = code
        ok = ok and code == 0
    result["ok"] = ok
    print(json.dumps(result, indent=2), flush=True)
    if lost:
        print("soak: lost confirmed ids (first 20): %s" % sorted(lost)[:20])
    if phantom:
        print("soak: ids nobody sent (first 20): %s" % sorted(phantom)[:20])
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print("soak: logs kept in %s" % workdir)
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--sluiced", help="the broker to start (default build/release/cli/sluiced)")
    ap.add_argument("--port", type=int, help="use a broker already listening here instead")
    ap.add_argument("--broker-arg", action="append", default=[], help="extra sluiced option (repeatable)")
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    ap.add_argument("--keep", action="store_true", help="keep the logs and data dir")
    # worker mode (internal)
    ap.add_argument("--role")
    ap.add_argument("--id")
    ap.add_argument("--dir")
    args = ap.parse_args()
    if args.role:
        worker_main(args)
        return 0
    return conductor(args)


if __name__ == "__main__":
    sys.exit(main())
