"""Durability across kill -9 and restarts (issue 3), with real clients.

Each test has a sluiced of its own (`fresh_broker`), kills it with SIGKILL or
stops it with SIGTERM, restarts it on the same data dir and checks what came
back:

- confirmed persistent messages are there exactly once (several publishers,
  pika one-at-a-time and a pipelined raw publisher with multiple-acks, kill
  at a random point); unconfirmed ones may or may not be, never twice;
- messages not acked come back (redelivered if they had been delivered), in
  order; messages whose ack round trip completed do not;
- durable topology (exchanges of each type and their flags/arguments, queues
  and their arguments, queue and exchange-to-exchange bindings) survives;
  transient queues and exchanges, exclusive queues and transient messages
  do not;
- purge and delete stay done; a fanout message acked in one queue stays in
  the others exactly once;
- a graceful SIGTERM restart keeps everything too, and exits 0 under load.

Waiting is always on a condition with a deadline, never a bare sleep. The
tests skip against an external broker (they need to kill it).

A SIGTERM stop exits 0 whether or not a group commit is in flight (the
SIGTERM tests below stop a broker under load and check it; storage_tests'
StoreFaultDeathTest.StoppingTheBrokerWithACommitInFlightIsClean makes the old
race certain). Every test ends with a sync barrier all the same, so that
what it wrote is on disk before the fixture's final SIGTERM."""

import os
import random
import threading
import time

import pika
import pytest

import amqp_raw as raw
from conftest import unique, wait_for

pytestmark = pytest.mark.deadline(120)

CONFIRM_SELECT = (85, 10)
CONFIRM_SELECT_OK = (85, 11)
BASIC_ACK = (60, 80)
BASIC_NACK = (60, 120)
FLAG_DELIVERY_MODE = 0x1000    # basic properties: delivery-mode present

PERSISTENT = pika.BasicProperties(delivery_mode=2)
TRANSIENT = pika.BasicProperties(delivery_mode=1)


# --------------------------------------------------------------------------
# helpers

def stop_and_start(b, how):
    """Crash (kill -9) or stop (SIGTERM, must exit 0), then start again on
    the same ports and data dir."""
    if how == "kill9":
        b.kill9()
    else:
        code = b.stop()
        assert code == 0, "sluiced did not exit 0 on SIGTERM (exit %r)\n%s" % (
            b.proc.returncode, b.log_tail())
    b.start()


def channel_of(b):
    conn = b.pika()
    return conn, conn.channel()


def close_quietly(*conns):
    for c in conns:
        try:
            if c.is_open:
                c.close()
        except Exception:
            pass


BARRIER_EXCHANGE = "sluice.test.sync-barrier"


def sync_barrier(ch):
    """Returns once the broker has synced everything written before it: a
    durable exchange.declare is answered after the store's sync (DESIGN.md,
    Durability). Tests end with it so that what they wrote is on disk
    before the fixture stops the broker."""
    ch.exchange_declare(exchange=BARRIER_EXCHANGE, exchange_type="fanout", durable=True)


def drain(b, queue, timeout=60.0):
    """Every message of a queue, in order, as (body, redelivered), taken with
    basic.get/auto-ack until get-empty. Checks that the queue's reported
    message count matched what could be taken."""
    conn, ch = channel_of(b)
    try:
        count = ch.queue_declare(queue=queue, passive=True).method.message_count
        out = []
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, "draining %s took over %.0fs" % (queue, timeout)
            method, _props, body = ch.basic_get(queue=queue, auto_ack=True)
            if method is None:
                break
            out.append((body, method.redelivered))
        assert len(out) == count, (
            "queue %s reported %d messages after restart but basic.get gave %d"
            % (queue, count, len(out)))
        sync_barrier(ch)
        return out
    finally:
        close_quietly(conn)


def message_count(b, queue):
    conn, ch = channel_of(b)
    try:
        return ch.queue_declare(queue=queue, passive=True).method.message_count
    finally:
        close_quietly(conn)


def exists(b, kind, name):
    """True if the queue/exchange exists (passive declare), False on 404."""
    conn, ch = channel_of(b)
    try:
        if kind == "queue":
            ch.queue_declare(queue=name, passive=True)
        else:
            ch.exchange_declare(exchange=name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    finally:
        close_quietly(conn)


def declare_fails(b, code, fn):
    """fn(channel) must close the channel with `code`."""
    conn, ch = channel_of(b)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
            fn(ch)
        assert ei.value.reply_code == code, ei.value
    finally:
        close_quietly(conn)


def publish_confirmed(b, exchange, routing_key, bodies, props=PERSISTENT, headers=None):
    conn, ch = channel_of(b)
    try:
        ch.confirm_delivery()
        if headers is not None:
            props = pika.BasicProperties(delivery_mode=props.delivery_mode, headers=headers)
        for body in bodies:
            ch.basic_publish(exchange=exchange, routing_key=routing_key, body=body,
                             properties=props)
    finally:
        close_quietly(conn)


def ack_round_trip(ch, queue):
    """After basic.ack (no reply of its own), make sure the broker has taken
    it in and written it: a durable queue.declare on the same channel is
    answered after what came before it on the channel, and in Sluice only
    once the store has synced everything written before it."""
    ch.queue_declare(queue=queue, durable=True)


# --------------------------------------------------------------------------
# publishers for the crash test

class PikaPublisher(threading.Thread):
    """One persistent message at a time, each confirmed before the next
    (pika's BlockingChannel with confirm_delivery)."""

    def __init__(self, b, pid, targets):
        super().__init__(daemon=True, name="pika-pub-%d" % pid)
        self.b, self.pid, self.targets = b, pid, targets   # [(exchange, rk)]
        self.sent, self.confirmed, self.nacked = [], [], []
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            conn = self.b.pika()
            ch = conn.channel()
            ch.confirm_delivery()
        except Exception as e:       # pragma: no cover - reported by the test
            self.error = e
            return
        seq = 0
        try:
            while not self.stop.is_set():
                seq += 1
                body = b"%d:%d" % (self.pid, seq)
                exchange, rk = self.targets[seq % len(self.targets)]
                self.sent.append(body)
                try:
                    ch.basic_publish(exchange=exchange, routing_key=rk, body=body,
                                     properties=PERSISTENT)
                except pika.exceptions.NackError:
                    self.nacked.append(body)
                    continue
                self.confirmed.append(body)
        except Exception as e:       # the broker died under us: expected
            self.error = e
        finally:
            close_quietly(conn)


class RawPipelinedPublisher(threading.Thread):
    """Keeps `window` persistent messages in flight and reads basic.ack /
    basic.nack (with `multiple`) as they come: many messages per group
    commit, and confirms that cover ranges."""

    def __init__(self, b, pid, targets, window=100):
        super().__init__(daemon=True, name="raw-pub-%d" % pid)
        self.b, self.pid, self.targets, self.window = b, pid, targets, window
        self.body_size = 0
        self.sent, self.confirmed, self.nacked = [], [], []
        self.outstanding = {}        # delivery tag -> body
        self.stop = threading.Event()
        self.error = None
        self.lock = threading.Lock()

    def _settle(self, tag, multiple, ok):
        with self.lock:
            tags = [t for t in self.outstanding if t <= tag] if multiple else [tag]
            for t in sorted(tags):
                body = self.outstanding.pop(t, None)
                assert body is not None, "confirm for unknown or settled tag %d" % t
                (self.confirmed if ok else self.nacked).append(body)

    def run(self):
        c = None
        try:
            c = raw.RawConnection(self.b.host, self.b.port, timeout=5.0)
            c.handshake(heartbeat=0)
            c.open_channel(1)
            c.send(raw.method_frame(1, CONFIRM_SELECT, raw.bits(False)))
            c.expect_method(CONFIRM_SELECT_OK)
            tag = 0
            while not self.stop.is_set():
                out = []
                with self.lock:
                    while len(self.outstanding) < self.window:
                        tag += 1
                        body = b"%d:%d" % (self.pid, tag)
                        if self.body_size > len(body):
                            body += b":" + b"x" * (self.body_size - len(body) - 1)
                        exchange, rk = self.targets[tag % len(self.targets)]
                        out.append(raw.basic_publish(1, exchange, rk)
                                   + raw.header_frame(1, len(body), flags=FLAG_DELIVERY_MODE,
                                                      props=raw.octet(2))
                                   + raw.body_frame(1, body))
                        self.outstanding[tag] = body
                        self.sent.append(body)
                if out:
                    c.send(b"".join(out))
                f = c.read_method(timeout=10.0)
                if f.method == BASIC_ACK:
                    r = f.args()
                    self._settle(r.longlong(), bool(r.octet() & 1), True)
                elif f.method == BASIC_NACK:
                    r = f.args()
                    self._settle(r.longlong(), bool(r.octet() & 1), False)
                elif f.method in (raw.CHANNEL_CLOSE, raw.CONNECTION_CLOSE):
                    self.error = AssertionError("broker closed: %r" % raw.Close(f))
                    return
        except AssertionError as e:
            self.error = e
        except Exception as e:       # Closed, OSError, TimeoutError: the broker died
            self.error = e
        finally:
            if c:
                c.close()


# --------------------------------------------------------------------------
# 1. confirmed means there, exactly once

@pytest.mark.deadline(180)
@pytest.mark.parametrize("round_", range(3))
def test_every_confirmed_message_survives_kill9_exactly_once(fresh_broker, round_):
    b = fresh_broker
    seed = int(os.environ.get("SLUICE_TEST_SEED", "0")) or random.randrange(1 << 30)
    rng = random.Random(seed)
    queues = [unique("dur.confirm%d" % i) for i in range(3)]
    fanout = unique("dur.fan")
    conn, ch = channel_of(b)
    for q in queues:
        ch.queue_declare(queue=q, durable=True)
    ch.exchange_declare(exchange=fanout, exchange_type="fanout", durable=True)
    ch.queue_bind(queue=queues[0], exchange=fanout)
    ch.queue_bind(queue=queues[1], exchange=fanout)
    close_quietly(conn)

    direct = [("", q) for q in queues]
    pubs = [PikaPublisher(b, 1, direct), PikaPublisher(b, 2, direct[::-1]),
            PikaPublisher(b, 3, [(fanout, ""), ("", queues[2])]),
            RawPipelinedPublisher(b, 4, direct, window=rng.choice([20, 100, 300])),
            RawPipelinedPublisher(b, 5, [(fanout, ""), ("", queues[2])], window=50)]
    for p in pubs:
        p.start()

    def confirmed_total():
        return sum(len(p.confirmed) for p in pubs)

    target = rng.randint(50, 3000)
    wait_for(lambda: confirmed_total() >= target or any(not p.is_alive() for p in pubs),
             60, what="%d confirms" % target)
    dead_early = [(p.name, p.error) for p in pubs if not p.is_alive()]
    assert not dead_early, "publisher died before the kill: %r" % dead_early
    b.kill9()
    for p in pubs:
        p.stop.set()
    for p in pubs:
        p.join(20)
        assert not p.is_alive(), "%s did not notice the broker dying" % p.name
    b.start()

    # where each publisher's messages go: body -> set of queues
    def destinations(p, body):
        seq = int(body.split(b":")[1])
        exchange, rk = p.targets[seq % len(p.targets)]
        return {rk} if exchange == "" else {queues[0], queues[1]}

    got = {q: [body for body, _ in drain(b, q)] for q in queues}
    sent = {}
    for p in pubs:
        for body in p.sent:
            sent[body] = p
    problems = []
    for q, bodies in got.items():
        seen = set()
        for body in bodies:
            if body in seen:
                problems.append("%s twice in %s" % (body, q))
            seen.add(body)
            p = sent.get(body)
            if p is None:
                problems.append("%s in %s was never published" % (body, q))
            elif q not in destinations(p, body):
                problems.append("%s in %s, which it was not routed to" % (body, q))
    confirmed = 0
    for p in pubs:
        assert not p.nacked, "%s got nacks from a healthy broker: %r" % (p.name, p.nacked[:5])
        for body in p.confirmed:
            confirmed += 1
            for q in destinations(p, body):
                if body not in got[q]:
                    problems.append("confirmed %s missing from %s" % (body, q))
    # per publisher and queue, messages come back in publish order
    for q, bodies in got.items():
        for p in pubs:
            seqs = [int(x.split(b":")[1]) for x in bodies if x.split(b":")[0] == b"%d" % p.pid]
            if seqs != sorted(seqs):
                problems.append("publisher %d's messages out of order in %s" % (p.pid, q))
    assert not problems, "seed %d (target %d, %d confirmed): %s" % (
        seed, target, confirmed, "; ".join(problems[:20]))
    assert confirmed >= target


# --------------------------------------------------------------------------
# 2. acks

# What RabbitMQ guarantees: basic.ack has no reply, so a client never learns
# when (or whether) an ack took effect. An ack in flight when the broker
# dies may be lost and the message delivered again: delivery is
# at-least-once. Messages delivered but not acked are requeued and come
# back with redelivered=true; messages never delivered come back too (in
# RabbitMQ with redelivered=false; Sluice does not record deliveries and
# flags every recovered message redelivered, which the flag's meaning, "may
# have been delivered before", allows). What a client *can* rely on is an
# ack followed by a synchronous round trip on the same channel: the broker
# processed the ack before answering. Sluice goes further: a durable
# queue.declare is answered only after everything before it is synced, so
# an ack followed by that round trip is durable, and the acked message must
# not come back after kill -9.

@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_unacked_come_back_acked_do_not(fresh_broker, how):
    b = fresh_broker
    q = unique("dur.acks")
    conn, ch = channel_of(b)
    ch.queue_declare(queue=q, durable=True)
    close_quietly(conn)
    n = 200
    bodies = [b"m%03d" % i for i in range(n)]
    publish_confirmed(b, "", q, bodies)

    conn, ch = channel_of(b)
    ch.basic_qos(prefetch_count=120)
    delivered = []                     # (delivery_tag, body)
    ch.basic_consume(queue=q, on_message_callback=lambda c, m, p, body:
                     delivered.append((m.delivery_tag, body)))
    deadline = time.monotonic() + 10
    while len(delivered) < 120:
        assert time.monotonic() < deadline, "only %d of 120 deliveries" % len(delivered)
        conn.process_data_events(time_limit=0.05)
    tag_of = {body: tag for tag, body in delivered}
    assert [body for _, body in delivered] == bodies[:120]

    acked = set(bodies[:30])                     # one multiple-ack
    ch.basic_ack(delivery_tag=tag_of[bodies[29]], multiple=True)
    for i in range(30, 120, 3):                  # single acks, with holes
        ch.basic_ack(delivery_tag=tag_of[bodies[i]])
        acked.add(bodies[i])
    for i in (31, 34):                           # rejected without requeue: gone too
        ch.basic_reject(delivery_tag=tag_of[bodies[i]], requeue=False)
        acked.add(bodies[i])
    ch.basic_nack(delivery_tag=tag_of[bodies[37]], requeue=True)   # back to ready
    ack_round_trip(ch, q)
    # (the connection stays open: its unacked messages are unacked at the crash)
    stop_and_start(b, how)
    close_quietly(conn)

    got = drain(b, q)
    want = [x for x in bodies if x not in acked]
    assert [body for body, _ in got] == want, (
        "after %s: wrong messages (or order); missing %r, unexpected %r" % (
            how, sorted(set(want) - {x for x, _ in got})[:10],
            sorted({x for x, _ in got} - set(want))[:10]))
    delivered_bodies = set(bodies[:120])
    not_redelivered = [body for body, red in got if body in delivered_bodies and not red]
    assert not not_redelivered, "delivered before the %s but redelivered=false: %r" % (
        how, not_redelivered[:10])


def test_ack_then_kill9_repeatedly_never_resurrects(fresh_broker):
    """Several rounds of consume part / ack with a round trip / kill -9 on one
    data dir: acked messages never come back, the rest never go away."""
    b = fresh_broker
    q = unique("dur.rounds")
    conn, ch = channel_of(b)
    ch.queue_declare(queue=q, durable=True)
    close_quietly(conn)
    remaining = [b"r%03d" % i for i in range(150)]
    publish_confirmed(b, "", q, remaining)
    rng = random.Random(7)
    for round_ in range(4):
        conn, ch = channel_of(b)
        take = rng.randint(5, 30)
        got = []
        for _ in range(take):
            m, _p, body = ch.basic_get(queue=q, auto_ack=False)
            assert m is not None
            got.append((m.delivery_tag, body))
        assert [x for _, x in got] == remaining[:take]
        for tag, body in got:
            if rng.random() < 0.7:
                ch.basic_ack(delivery_tag=tag)
                remaining.remove(body)
        ack_round_trip(ch, q)
        b.kill9()
        close_quietly(conn)
        b.start()
        assert message_count(b, q) == len(remaining), "round %d" % round_
    assert [x for x, _ in drain(b, q)] == remaining


# --------------------------------------------------------------------------
# 3. topology

def declare_topology(b, names):
    n = names
    conn, ch = channel_of(b)
    ch.exchange_declare(exchange=n["direct"], exchange_type="direct", durable=True,
                        arguments={"alternate-exchange": n["fanout"]})
    ch.exchange_declare(exchange=n["fanout"], exchange_type="fanout", durable=True)
    ch.exchange_declare(exchange=n["topic"], exchange_type="topic", durable=True)
    ch.exchange_declare(exchange=n["headers"], exchange_type="headers", durable=True)
    ch.exchange_declare(exchange=n["internal"], exchange_type="topic", durable=True,
                        internal=True)
    ch.exchange_declare(exchange=n["xtransient"], exchange_type="direct", durable=False)

    ch.queue_declare(queue=n["q_direct"], durable=True,
                     arguments={"x-max-length": 1000, "x-message-ttl": 3600000,
                                "x-dead-letter-exchange": n["fanout"]})
    ch.queue_declare(queue=n["q_fanout"], durable=True)
    ch.queue_declare(queue=n["q_topic"], durable=True, arguments={"x-max-priority": 5})
    ch.queue_declare(queue=n["q_headers"], durable=True)
    ch.queue_declare(queue=n["q_e2e"], durable=True)
    ch.queue_declare(queue=n["q_transient"], durable=False)
    ch.queue_declare(queue=n["q_from_transient_x"], durable=True)

    ch.queue_bind(queue=n["q_direct"], exchange=n["direct"], routing_key="rk.direct")
    ch.queue_bind(queue=n["q_fanout"], exchange=n["fanout"])
    ch.queue_bind(queue=n["q_topic"], exchange=n["topic"], routing_key="a.*.c")
    ch.queue_bind(queue=n["q_topic"], exchange=n["topic"], routing_key="#.z")
    ch.queue_bind(queue=n["q_headers"], exchange=n["headers"],
                  arguments={"x-match": "all", "kind": "h", "n": 1})
    # exchange-to-exchange: topic -> internal topic -> queue
    ch.exchange_bind(destination=n["internal"], source=n["topic"], routing_key="e2e.#")
    ch.queue_bind(queue=n["q_e2e"], exchange=n["internal"], routing_key="e2e.*")
    # durable exchange -> transient queue: the binding cannot outlive the queue
    ch.queue_bind(queue=n["q_transient"], exchange=n["direct"], routing_key="rk.transient")
    # transient exchange -> durable queue: the binding goes with the exchange
    ch.queue_bind(queue=n["q_from_transient_x"], exchange=n["xtransient"], routing_key="t")
    return conn, ch


def route_probe(b, n, tag):
    """Publish one persistent message per route; return where each landed."""
    probes = [
        (n["direct"], "rk.direct", None, "q_direct"),
        (n["fanout"], "anything", None, "q_fanout"),
        (n["topic"], "a.b.c", None, "q_topic"),
        (n["topic"], "x.y.z", None, "q_topic"),
        (n["headers"], "", {"kind": "h", "n": 1}, "q_headers"),
        (n["topic"], "e2e.one", None, "q_e2e"),              # topic -> internal -> queue
    ]
    for exchange, rk, headers, _dest in probes:
        body = ("%s|%s|%s" % (tag, exchange, rk)).encode()
        publish_confirmed(b, exchange, rk, [body], headers=headers)
    return [(("%s|%s|%s" % (tag, ex, rk)).encode(), dest) for ex, rk, _h, dest in probes]


def topology_names():
    base = unique("topo")
    keys = ["direct", "fanout", "topic", "headers", "internal", "xtransient", "q_direct",
            "q_fanout", "q_topic", "q_headers", "q_e2e", "q_transient", "q_from_transient_x"]
    return {k: "%s.%s" % (base, k) for k in keys}


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_durable_topology_survives_transient_does_not(fresh_broker, how):
    b = fresh_broker
    n = topology_names()
    conn, ch = declare_topology(b, n)
    # an exclusive (even durable) queue holding persistent messages
    excl = unique("topo.exclusive")
    ch.queue_declare(queue=excl, durable=True, exclusive=True)
    ch.confirm_delivery()
    ch.basic_publish(exchange="", routing_key=excl, body=b"in exclusive", properties=PERSISTENT)
    # transient and persistent messages in a durable queue
    ch.basic_publish(exchange="", routing_key=n["q_fanout"], body=b"transient",
                     properties=TRANSIENT)
    ch.basic_publish(exchange="", routing_key=n["q_fanout"], body=b"persistent",
                     properties=PERSISTENT)
    # the transient queue holds a persistent message (it is not durable, so it goes)
    ch.basic_publish(exchange="", routing_key=n["q_transient"], body=b"p", properties=PERSISTENT)
    before = route_probe(b, n, "before")

    stop_and_start(b, how)
    close_quietly(conn)     # the exclusive queue's owner is gone with the old broker

    # durable: all there
    for k in ("direct", "fanout", "topic", "headers", "internal"):
        assert exists(b, "exchange", n[k]), "durable exchange %s lost" % k
    for k in ("q_direct", "q_fanout", "q_topic", "q_headers", "q_e2e", "q_from_transient_x"):
        assert exists(b, "queue", n[k]), "durable queue %s lost" % k
    # not durable: gone
    assert not exists(b, "exchange", n["xtransient"]), "transient exchange survived"
    assert not exists(b, "queue", n["q_transient"]), "transient queue survived"
    assert not exists(b, "queue", excl), "exclusive queue survived its connection and the restart"

    # exchange types and flags kept: a redeclare that differs is refused
    declare_fails(b, 406, lambda c: c.exchange_declare(exchange=n["direct"],
                                                        exchange_type="fanout", durable=True))
    declare_fails(b, 406, lambda c: c.exchange_declare(exchange=n["headers"],
                                                        exchange_type="topic", durable=True))
    declare_fails(b, 406, lambda c: c.exchange_declare(exchange=n["internal"],
                                                        exchange_type="topic", durable=True,
                                                        internal=False))
    declare_fails(b, 406, lambda c: c.exchange_declare(exchange=n["topic"],
                                                        exchange_type="topic", durable=False))
    # queue arguments kept: the same arguments are fine, different ones refused.
    # (Exchange arguments are stored too, but nothing shows them yet: Sluice
    # has no alternate exchanges and no management listing; a redeclare with
    # the same arguments must still work.)
    conn, ch = channel_of(b)
    ch.exchange_declare(exchange=n["direct"], exchange_type="direct", durable=True,
                        arguments={"alternate-exchange": n["fanout"]})
    ch.queue_declare(queue=n["q_direct"], durable=True,
                     arguments={"x-max-length": 1000, "x-message-ttl": 3600000,
                                "x-dead-letter-exchange": n["fanout"]})
    ch.queue_declare(queue=n["q_topic"], durable=True, arguments={"x-max-priority": 5})
    close_quietly(conn)
    declare_fails(b, 406, lambda c: c.queue_declare(queue=n["q_direct"], durable=True,
                                                     arguments={"x-max-length": 999,
                                                                "x-message-ttl": 3600000,
                                                                "x-dead-letter-exchange": n["fanout"]}))
    declare_fails(b, 406, lambda c: c.queue_declare(queue=n["q_topic"], durable=True))
    declare_fails(b, 406, lambda c: c.queue_declare(queue=n["q_e2e"], durable=False))

    # messages: persistent ones in durable queues only
    got = {k: [x for x, _ in drain(b, n[k])]
           for k in ("q_direct", "q_fanout", "q_topic", "q_headers", "q_e2e",
                     "q_from_transient_x")}
    assert b"transient" not in got["q_fanout"], "a transient message survived the restart"
    assert b"persistent" in got["q_fanout"]
    for body, dest in before:
        assert body in got[dest], "%r routed to %s before the restart is missing" % (body, dest)
    # the routes (bindings, alternate exchange, exchange-to-exchange) still work
    after = route_probe(b, n, "after")
    got = {k: [x for x, _ in drain(b, n[k])]
           for k in ("q_direct", "q_fanout", "q_topic", "q_headers", "q_e2e",
                     "q_from_transient_x")}
    for body, dest in after:
        assert got[dest].count(body) == 1, "%r should reach %s once after the restart; queues: %r" % (
            body, dest, got)
        for k, bodies in got.items():
            if k != dest:
                assert body not in bodies, "%r also reached %s" % (body, k)
    # the binding to the dropped transient queue is gone for good: a new
    # queue of that name is not bound
    conn, ch = channel_of(b)
    ch.queue_declare(queue=n["q_transient"], durable=False)
    close_quietly(conn)
    publish_confirmed(b, n["direct"], "rk.transient", [b"to the dropped binding"])
    assert message_count(b, n["q_transient"]) == 0, "a binding to a transient queue survived"


def test_topology_changes_before_the_crash_stay_changed(fresh_broker):
    """Unbind, exchange delete, exchange unbind and queue delete are durable
    as well: a kill -9 right after their -ok does not bring them back."""
    b = fresh_broker
    n = topology_names()
    conn, ch = declare_topology(b, n)
    ch.queue_unbind(queue=n["q_topic"], exchange=n["topic"], routing_key="#.z")
    ch.exchange_unbind(destination=n["internal"], source=n["topic"], routing_key="e2e.#")
    ch.exchange_delete(exchange=n["headers"])
    ch.queue_delete(queue=n["q_direct"])
    b.kill9()
    close_quietly(conn)
    b.start()
    assert not exists(b, "exchange", n["headers"])
    assert not exists(b, "queue", n["q_direct"])
    assert exists(b, "queue", n["q_topic"])
    publish_confirmed(b, n["topic"], "x.y.z", [b"unbound key"])
    publish_confirmed(b, n["topic"], "a.b.c", [b"bound key"])
    publish_confirmed(b, n["topic"], "e2e.one", [b"e2e unbound"])
    assert [x for x, _ in drain(b, n["q_topic"])] == [b"bound key"]
    assert drain(b, n["q_e2e"]) == []


def test_exclusive_queue_messages_do_not_resurface_in_a_later_queue(fresh_broker):
    """Persistent messages in an exclusive durable queue die with it. They
    must not come back in another queue that later gets the same internal
    id (a queue declared after a restart)."""
    b = fresh_broker
    conn, ch = channel_of(b)
    keeper = unique("excl.keeper")
    ch.queue_declare(queue=keeper, durable=True)
    excl = unique("excl.q")
    ch.queue_declare(queue=excl, durable=True, exclusive=True)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish(exchange="", routing_key=excl, body=b"exclusive %d" % i,
                         properties=PERSISTENT)
    b.kill9()
    close_quietly(conn)
    b.start()
    assert not exists(b, "queue", excl)
    later = [unique("excl.later%d" % i) for i in range(3)]
    conn, ch = channel_of(b)
    for q in later:
        ch.queue_declare(queue=q, durable=True)
    close_quietly(conn)
    for q in later:
        assert drain(b, q) == [], "fresh queue %s holds messages right after declare" % q
    b.kill9()
    b.start()
    for q in later:
        got = drain(b, q)
        assert got == [], ("after a second restart the new durable queue %s holds %r: "
                           "the dead exclusive queue's messages came back in it" % (q, got[:3]))


def test_exclusive_queue_closed_normally_leaves_nothing_behind(fresh_broker):
    b = fresh_broker
    conn, ch = channel_of(b)
    excl = unique("excl.closed")
    ch.queue_declare(queue=excl, durable=True, exclusive=True)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish(exchange="", routing_key=excl, body=b"x%d" % i, properties=PERSISTENT)
    conn.close()                # the exclusive queue is deleted with its connection
    wait_for(lambda: not exists(b, "queue", excl), 5, what="exclusive queue deleted")
    b.kill9()
    b.start()
    later = [unique("excl.after%d" % i) for i in range(3)]
    conn, ch = channel_of(b)
    for q in later:
        ch.queue_declare(queue=q, durable=True)
    close_quietly(conn)
    b.kill9()
    b.start()
    for q in later:
        assert drain(b, q) == [], "a dead exclusive queue's messages came back in %s" % q


# --------------------------------------------------------------------------
# 4. purge and delete

def test_purge_then_kill9_stays_purged_but_unacked_come_back(fresh_broker):
    """queue.purge removes ready messages only (RabbitMQ): the 5 held
    unacked by a consumer survive the purge and, unacked at the crash, come
    back; the purged ones do not."""
    b = fresh_broker
    q = unique("dur.purge")
    conn, ch = channel_of(b)
    ch.queue_declare(queue=q, durable=True)
    close_quietly(conn)
    bodies = [b"p%02d" % i for i in range(50)]
    publish_confirmed(b, "", q, bodies)
    holder, hch = channel_of(b)
    held = []
    for _ in range(5):
        m, _p, body = hch.basic_get(queue=q, auto_ack=False)
        held.append(body)
    conn, ch = channel_of(b)
    purged = ch.queue_purge(queue=q).method.message_count
    assert purged == 45
    b.kill9()
    close_quietly(conn, holder)
    b.start()
    got = drain(b, q)
    assert [x for x, _ in got] == held
    assert all(red for _, red in got)


def test_purge_of_a_long_queue_then_kill9_stays_purged(fresh_broker):
    b = fresh_broker
    q = unique("dur.purgelong")
    conn, ch = channel_of(b)
    ch.queue_declare(queue=q, durable=True)
    close_quietly(conn)
    p = RawPipelinedPublisher(b, 1, [("", q)], window=200)
    p.start()
    wait_for(lambda: len(p.confirmed) >= 3000 or not p.is_alive(), 60, what="3000 confirms")
    p.stop.set()
    p.join(20)
    assert len(p.confirmed) >= 3000, p.error
    conn, ch = channel_of(b)
    ch.queue_purge(queue=q)
    ack_round_trip(ch, q)
    b.kill9()
    close_quietly(conn)
    b.start()
    assert drain(b, q) == []


def test_delete_then_kill9_stays_deleted(fresh_broker):
    b = fresh_broker
    q = unique("dur.del")
    x = unique("dur.delx")
    conn, ch = channel_of(b)
    ch.exchange_declare(exchange=x, exchange_type="direct", durable=True)
    ch.queue_declare(queue=q, durable=True)
    ch.queue_bind(queue=q, exchange=x, routing_key="k")
    close_quietly(conn)
    publish_confirmed(b, x, "k", [b"d%02d" % i for i in range(40)])
    conn, ch = channel_of(b)
    assert ch.queue_delete(queue=q).method.message_count == 40
    b.kill9()
    close_quietly(conn)
    b.start()
    assert not exists(b, "queue", q), "deleted queue came back"
    conn, ch = channel_of(b)
    assert ch.queue_declare(queue=q, durable=True).method.message_count == 0, \
        "re-declared queue has the deleted queue's messages"
    close_quietly(conn)
    publish_confirmed(b, x, "k", [b"after"])
    assert drain(b, q) == [], "the deleted queue's binding came back"


def test_delete_and_redeclare_then_kill9_keeps_only_the_new_messages(fresh_broker):
    b = fresh_broker
    q = unique("dur.redecl")
    conn, ch = channel_of(b)
    ch.queue_declare(queue=q, durable=True)
    close_quietly(conn)
    publish_confirmed(b, "", q, [b"old%d" % i for i in range(20)])
    conn, ch = channel_of(b)
    ch.queue_delete(queue=q)
    ch.queue_declare(queue=q, durable=True)
    close_quietly(conn)
    publish_confirmed(b, "", q, [b"new0", b"new1"])
    b.kill9()
    b.start()
    assert [x for x, _ in drain(b, q)] == [b"new0", b"new1"]


# --------------------------------------------------------------------------
# 5. one message, several durable queues (a shared stored body)

@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_fanout_acked_in_one_queue_stays_in_the_others(fresh_broker, how):
    b = fresh_broker
    x = unique("dur.fan3")
    qs = [unique("dur.fanq%d" % i) for i in range(3)]
    conn, ch = channel_of(b)
    ch.exchange_declare(exchange=x, exchange_type="fanout", durable=True)
    for q in qs:
        ch.queue_declare(queue=q, durable=True)
        ch.queue_bind(queue=q, exchange=x)
    close_quietly(conn)
    publish_confirmed(b, x, "", [b"shared"])

    def take_and_ack(q):
        conn, ch = channel_of(b)
        m, _p, body = ch.basic_get(queue=q, auto_ack=False)
        assert body == b"shared"
        ch.basic_ack(delivery_tag=m.delivery_tag)
        ack_round_trip(ch, q)
        return conn

    c = take_and_ack(qs[0])
    stop_and_start(b, how)
    close_quietly(c)
    assert message_count(b, qs[0]) == 0
    for q in qs[1:]:
        assert message_count(b, q) == 1, "the shared message in %s after acking it in %s" % (q, qs[0])

    # the count of references to the shared body is rebuilt at recovery:
    # ack in a second queue, crash again; the third still has it
    c = take_and_ack(qs[1])
    b.kill9()
    close_quietly(c)
    b.start()
    assert [message_count(b, q) for q in qs] == [0, 0, 1]
    got = drain(b, qs[2])
    assert got == [(b"shared", True)]
    b.kill9()
    b.start()
    assert [message_count(b, q) for q in qs] == [0, 0, 0]


def test_fanout_of_many_messages_with_partial_acks_across_restarts(fresh_broker):
    b = fresh_broker
    x = unique("dur.fanmany")
    qs = [unique("dur.fanmq%d" % i) for i in range(3)]
    conn, ch = channel_of(b)
    ch.exchange_declare(exchange=x, exchange_type="fanout", durable=True)
    for q in qs:
        ch.queue_declare(queue=q, durable=True)
        ch.queue_bind(queue=q, exchange=x)
    close_quietly(conn)
    bodies = [b"f%03d" % i for i in range(100)]
    publish_confirmed(b, x, "", bodies)
    rng = random.Random(3)
    remaining = {q: list(bodies) for q in qs}
    for round_ in range(3):
        conns = []
        for q in qs:
            conn, ch = channel_of(b)
            conns.append(conn)
            for _ in range(rng.randint(0, 20)):
                m, _p, body = ch.basic_get(queue=q, auto_ack=False)
                if m is None:
                    break
                if rng.random() < 0.6:
                    ch.basic_ack(delivery_tag=m.delivery_tag)
                    remaining[q].remove(body)
            ack_round_trip(ch, q)
        b.kill9()
        close_quietly(*conns)
        b.start()
        for q in qs:
            assert message_count(b, q) == len(remaining[q]), "round %d, %s" % (round_, q)
    for q in qs:
        assert [x for x, _ in drain(b, q)] == remaining[q]


# --------------------------------------------------------------------------
# 5a. transactions

# RabbitMQ: "using standard AMQP 0-9-1, the only way to guarantee that a
# message isn't lost is by using transactions" -- tx.commit-ok for persistent
# messages to durable queues is sent once they are on disk, like a confirm.
# A 30 MB transaction makes the write long enough for a kill -9 right after
# commit-ok to land before it.
def test_tx_commit_ok_means_the_messages_are_on_disk(fresh_broker):
    b = fresh_broker
    q = unique("dur.tx")
    conn, ch = channel_of(b)
    ch.queue_declare(queue=q, durable=True)
    ch.tx_select()
    bodies = [b"%04d:" % i + b"x" * 100000 for i in range(300)]
    for body in bodies:
        ch.basic_publish(exchange="", routing_key=q, body=body, properties=PERSISTENT)
    ch.tx_commit()
    b.kill9()
    close_quietly(conn)
    b.start()
    got = [x for x, _ in drain(b, q)]
    assert len(got) == len(bodies), (
        "%d of %d messages of a committed transaction after kill -9" % (len(got), len(bodies)))
    assert got == bodies


def test_tx_rollback_then_kill9_leaves_nothing(fresh_broker):
    b = fresh_broker
    q = unique("dur.txrb")
    conn, ch = channel_of(b)
    ch.queue_declare(queue=q, durable=True)
    ch.tx_select()
    for i in range(20):
        ch.basic_publish(exchange="", routing_key=q, body=b"rb%d" % i, properties=PERSISTENT)
    ch.tx_rollback()
    ch.basic_publish(exchange="", routing_key=q, body=b"kept", properties=PERSISTENT)
    ch.tx_commit()
    sync_barrier(ch)
    b.kill9()
    close_quietly(conn)
    b.start()
    assert [x for x, _ in drain(b, q)] == [b"kept"]


# --------------------------------------------------------------------------
# 5b. queues longer than memory (paged to the store)

def publish_many(b, q, count, size, window=300):
    """Pipelined confirmed persistent publishing until `count` confirms;
    returns (sent, confirmed) in publish order."""
    p = RawPipelinedPublisher(b, 1, [("", q)], window=window)
    p.body_size = size
    p.start()
    wait_for(lambda: len(p.confirmed) >= count or not p.is_alive(), 90,
             what="%d confirms" % count)
    p.stop.set()
    p.join(30)
    assert len(p.confirmed) >= count, "publisher stopped: %r" % (p.error,)
    assert not p.nacked
    return p.sent, p.confirmed


@pytest.mark.deadline(180)
def test_a_queue_longer_than_memory_survives_kill9(fresh_broker):
    """12,000 persistent 1 KiB messages: past --queue-memory-messages (8192)
    and --queue-memory-bytes (8 MiB) the tail lives only in the store. Ack
    the first 3,000 (with round trip), kill -9: the rest comes back in order,
    once each."""
    b = fresh_broker
    q = unique("dur.long")
    conn, ch = channel_of(b)
    ch.queue_declare(queue=q, durable=True)
    close_quietly(conn)
    sent, confirmed = publish_many(b, q, 12000, 1024)

    conn, ch = channel_of(b)
    ch.basic_qos(prefetch_count=500)
    got = []
    ch.basic_consume(queue=q, on_message_callback=lambda c, m, p, body: got.append((m.delivery_tag, body)))
    deadline = time.monotonic() + 60
    acked_upto = 0
    while acked_upto < 3000:
        assert time.monotonic() < deadline, "only %d deliveries" % len(got)
        conn.process_data_events(time_limit=0.05)
        top = min(3000, max((t for t, _ in got), default=0))
        if top > acked_upto:
            ch.basic_ack(delivery_tag=top, multiple=True)    # acks as deliveries come
            acked_upto = top
    acked_bodies = [body for tag, body in got if tag <= 3000]
    assert acked_bodies == sent[:3000], "deliveries out of publish order"
    ack_round_trip(ch, q)
    b.kill9()
    close_quietly(conn)
    b.start()
    back = [x for x, _ in drain(b, q)]
    assert len(back) == len(set(back)), "duplicates"
    assert not set(back) & set(acked_bodies), "acked messages came back"
    missing = [m for m in confirmed[3000:] if m not in set(back)]
    assert not missing, "%d confirmed messages lost, e.g. %r" % (len(missing), missing[:3])
    assert back == [m for m in sent[3000:] if m in set(back)], "recovered out of order"


@pytest.mark.deadline(180)
def test_paged_transient_messages_do_not_survive_a_restart(fresh_broker):
    """Transient messages also page out of memory in a long queue (written
    to the store as page entries); they still must not come back after a
    restart, while the persistent ones between them do."""
    b = fresh_broker
    q = unique("dur.pagedtransient")
    conn, ch = channel_of(b)
    ch.queue_declare(queue=q, durable=True)
    ch.confirm_delivery()
    body = b"t" * 2048
    persistent = []
    for i in range(10000):
        if i % 1000 == 999:
            persistent.append(b"P%05d" % i)
            ch.basic_publish(exchange="", routing_key=q, body=persistent[-1], properties=PERSISTENT)
        else:
            ch.basic_publish(exchange="", routing_key=q, body=body, properties=TRANSIENT)
    assert message_count(b, q) == 10000
    b.kill9()
    close_quietly(conn)
    b.start()
    assert [x for x, _ in drain(b, q)] == persistent


# --------------------------------------------------------------------------
# 6. graceful stop

def sigterm_restart(b):
    """SIGTERM, wait for the exit, start again; returns the exit code (None
    if it had to be SIGKILLed)."""
    code = b.stop()
    b.start()
    return code


def publish_load(b, q, pids, window=100, at_least=500):
    pubs = [RawPipelinedPublisher(b, pid, [("", q)], window=window) for pid in pids]
    for p in pubs:
        p.start()
    wait_for(lambda: sum(len(p.confirmed) for p in pubs) >= at_least or
             any(not p.is_alive() for p in pubs), 60, what="%d confirms" % at_least)
    dead = [(p.name, p.error) for p in pubs if not p.is_alive()]
    assert not dead, "publisher died under a healthy broker: %r" % dead
    return pubs


def stop_load(pubs):
    for p in pubs:
        p.stop.set()
    for p in pubs:
        p.join(20)
        assert not p.is_alive(), "%s hangs" % p.name


@pytest.mark.deadline(120)
def test_sigterm_under_publish_load_keeps_every_confirm(fresh_broker):
    """SIGTERM while publishers keep the group commit busy: every confirmed
    message is there afterwards, exactly once, in order, and the stop with
    commits in flight exits 0. (It once died with SIGSEGV after "sluiced:
    stopped" about one stop in ten: the commit thread's callback outlived
    the broker; fixed in 61afcf9.)"""
    b = fresh_broker
    q = unique("dur.term")
    conn, ch = channel_of(b)
    ch.queue_declare(queue=q, durable=True)
    close_quietly(conn)
    confirmed = []
    for round_ in range(3):
        pubs = publish_load(b, q, [10 * round_ + i for i in range(3)])
        code = b.stop()  # one SIGTERM while the publishers go on (a second one exits at once)
        stop_load(pubs)
        assert code == 0, "round %d: sluiced did not exit 0 on SIGTERM under load (exit %r)\n%s" % (
            round_, code, b.log_tail())
        b.start()
        for p in pubs:
            confirmed.extend(p.confirmed)
        got = [x for x, _ in drain(b, q)]
        assert len(got) == len(set(got)), "duplicates after a graceful restart"
        have = set(got)
        missing = [m for p in pubs for m in p.confirmed if m not in have]
        assert not missing, "round %d: %d confirmed messages lost by a graceful stop: %r" % (
            round_, len(missing), missing[:5])
        for p in pubs:
            seqs = [int(x.split(b":")[1]) for x in got if x.split(b":")[0] == b"%d" % p.pid]
            assert seqs == sorted(seqs), "publisher %d's messages out of order" % p.pid


def test_sigterm_restart_keeps_unconfirmed_but_processed_publishes(fresh_broker):
    """Without confirms: once a round trip on the same channel shows the
    broker has handled the publishes, a graceful stop writes them."""
    b = fresh_broker
    q = unique("dur.noconfirm")
    conn, ch = channel_of(b)
    ch.queue_declare(queue=q, durable=True)
    for i in range(100):
        ch.basic_publish(exchange="", routing_key=q, body=b"n%03d" % i, properties=PERSISTENT)
    ch.queue_declare(queue=q, passive=True)     # a round trip: all 100 are in
    code = sigterm_restart(b)  # a commit may be in flight: the stop writes it and exits 0
    assert code == 0, "sluiced did not exit 0 on SIGTERM (exit %r)\n%s" % (code, b.log_tail())
    close_quietly(conn)
    assert [x for x, _ in drain(b, q)] == [b"n%03d" % i for i in range(100)]
