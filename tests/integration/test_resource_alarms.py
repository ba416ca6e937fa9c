"""The memory alarm (RabbitMQ's vm_memory_high_watermark): above the
watermark, publishing connections get connection.blocked "low on memory" and
are no longer read, consumers keep draining, and connection.unblocked follows
when memory is back under it. The alarm shows in /api/overview, /api/nodes,
/api/health/checks/alarms and /metrics.

The watermark is changed at run time by rewriting the --config file and
sending SIGHUP (sluiced reloads its alarm thresholds), so a test can set it
below the broker's own footprint and raise it again. A second test makes the
broker really grow (a backlog of transient messages kept in memory) against
a watermark a few dozen MiB above its idle size."""

import os
import signal
import threading
import time

import pika
import pytest

from conftest import unique, wait_for
from mgmt_http import ExtraBroker
from proc_stats import rss_bytes, sanitized_build

pytestmark = pytest.mark.deadline(90)


class ConfiguredBroker:
    """A sluiced reading --config FILE, which the test rewrites and reloads."""

    def __init__(self, tmp_path, **settings):
        self.config_path = str(tmp_path / "sluiced.conf")
        self.settings = dict(settings)
        self._write()
        self.b = ExtraBroker("--config", self.config_path, "--heartbeat", "0")

    def _write(self):
        with open(self.config_path, "w") as f:
            for k, v in self.settings.items():
                f.write("%s = %s\n" % (k, v))

    def reload(self, **settings):
        self.settings.update(settings)
        self._write()
        before = open(self.b.log_path).read().count("sluiced: reloaded")
        self.b.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: open(self.b.log_path).read().count("sluiced: reloaded") > before, 5,
                 what="sluiced to log the reload")

    def log(self):
        return open(self.b.log_path).read()

    def stop(self):
        code = self.b.stop()
        assert code == 0, "sluiced exited %s\n%s" % (code, self.log()[-3000:])


@pytest.fixture
def configured(tmp_path):
    made = []

    def make(**settings):
        c = ConfiguredBroker(tmp_path, **settings)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


def metric(api, name):
    r = api.get("/metrics", auth=False)
    assert r.status == 200, r
    for line in r.body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("no %s in /metrics" % name)


def publisher(port, events):
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, heartbeat=0, blocked_connection_timeout=60))
    conn.add_on_connection_blocked_callback(lambda c, m: events.append(("blocked", m.method.reason)))
    conn.add_on_connection_unblocked_callback(lambda c, m: events.append(("unblocked",)))
    return conn


def pump_until(conn, cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out after %.0f s waiting for %s" % (timeout, what)
        conn.process_data_events(0.05)


def test_memory_alarm_blocks_publishers_consumers_drain_then_unblocks(configured):
    c = configured(**{"vm-memory-high-watermark": "0.4"})
    api = c.b.api
    events = []
    pub = publisher(c.b.port, events)
    ch = pub.channel()
    q = unique("mem")
    ch.queue_declare(q)
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish("", q, b"before-%d" % i)
    assert metric(api, "sluice_alarms_memory_used_watermark") == 0
    assert api.get("/api/overview").json["alarms"] == []
    limit = metric(api, "sluice_resident_memory_limit_bytes")
    assert limit > 0

    cons = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", c.b.port, heartbeat=0))
    cch = cons.channel()

    # Below the broker's own footprint: the alarm sets at once.
    c.reload(**{"vm-memory-high-watermark-absolute": "1MiB"})
    pump_until(pub, lambda: events, 10, "connection.blocked")
    assert events[0] == ("blocked", "low on memory"), events
    assert metric(api, "sluice_alarms_memory_used_watermark") == 1
    assert metric(api, "sluice_resident_memory_limit_bytes") == 1 << 20
    overview = api.get("/api/overview").json
    assert [(a["resource"], a["reason"]) for a in overview["alarms"]] == [("memory", "low on memory")]
    node = api.get("/api/nodes").json[0]
    assert node["mem_alarm"] is True and node["mem_limit"] == 1 << 20 and node["mem_used"] > node["mem_limit"]
    assert api.get("/api/health/checks/alarms").status == 503

    # Consumers are not blocked: they drain the queue during the alarm.
    got = []
    while True:
        m, _, body = cch.basic_get(q, auto_ack=False)
        if m is None:
            break
        cch.basic_ack(m.delivery_tag)
        got.append(body)
    assert got == [b"before-%d" % i for i in range(20)]

    # A publish now is not read (and so not confirmed) until the alarm clears.
    confirmed = threading.Event()
    cleared_at = []

    def clear_later():
        time.sleep(1.5)       # the publish must still be waiting by then: that is the test
        cleared_at.append(time.monotonic())
        c.reload(**{"vm-memory-high-watermark-absolute": "64GiB"})

    t = threading.Thread(target=clear_later)
    t.start()
    ch.basic_publish("", q, b"during")  # blocks until confirmed
    confirmed.set()
    done_at = time.monotonic()
    t.join()
    assert cleared_at and done_at >= cleared_at[0], "the publish was confirmed during the alarm"
    pump_until(pub, lambda: ("unblocked",) in events, 5, "connection.unblocked")
    m, _, body = cch.basic_get(q, auto_ack=True)
    assert body == b"during"
    assert metric(api, "sluice_alarms_memory_used_watermark") == 0
    assert api.get("/api/overview").json["alarms"] == []
    pub.close()
    cons.close()
    log = c.log()
    assert "memory alarm set" in log and "memory alarm cleared" in log, log


def test_memory_alarm_sets_when_the_broker_really_grows(configured):
    """A backlog of transient messages held in memory pushes RSS over a
    watermark set 48 MiB above the idle broker; the publisher is blocked and
    no longer read, so RSS stops growing however much more it tries to send;
    once the backlog is purged memory falls under the watermark, the alarm
    clears and the publisher goes on."""
    headroom = 48 << 20
    c = configured(**{"queue-memory-bytes": 1 << 30, "queue-memory-messages": 1 << 20,
                      "message-memory-limit": 1 << 30})
    pid = c.b.proc.pid
    limit = rss_bytes(pid) + headroom
    c.reload(**{"vm-memory-high-watermark-absolute": str(limit)})
    q = unique("grow")
    body = b"m" * 65536
    total = (1 << 30) // len(body)    # a cap: the alarm must stop it long before
    events, sent, errors, stop = [], [0], [], threading.Event()

    def publish_all():   # pika blocks in basic_publish once the broker stops reading
        try:
            conn = publisher(c.b.port, events)
            ch = conn.channel()
            ch.queue_declare(q)
            for i in range(total):
                if stop.is_set():
                    break
                ch.basic_publish("", q, body)
                sent[0] += 1
                if i % 16 == 15:
                    # About 50 MB/s: the alarm is checked once a second, so
                    # it must not take gigabytes in between.
                    conn.process_data_events(0.02)
            conn.process_data_events(0)
            conn.close()
        except Exception as e:  # noqa: BLE001 -- reported by the test
            errors.append(e)

    t = threading.Thread(target=publish_all, daemon=True)
    t.start()
    wait_for(lambda: events or errors or not t.is_alive(), 30, interval=0.05, what="connection.blocked")
    assert not errors, errors
    assert events and events[0] == ("blocked", "low on memory"), (events, sent[0], total)
    assert sent[0] < total, "every message was taken in spite of the alarm"
    assert rss_bytes(pid) > limit

    # Blocked: the broker holds what it has and reads no more of this socket.
    at_block = rss_bytes(pid)
    window_end = time.monotonic() + 2
    peak = at_block
    while time.monotonic() < window_end:
        peak = max(peak, rss_bytes(pid))
        time.sleep(0.1)                      # sampling RSS over the window, not synchronising
    slack = (24 if not sanitized_build() else 64) << 20
    assert peak - at_block < slack, "RSS grew %d MiB while the publisher was blocked" % ((peak - at_block) >> 20)
    assert t.is_alive() and sent[0] < total

    # Drain the backlog: memory goes back under the watermark by itself, the
    # alarm clears and the publisher goes on (it soon fills memory again:
    # lift the watermark then).
    blocked_at = sent[0]
    cons = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", c.b.port, heartbeat=0))
    cons.channel().queue_purge(q)
    if not sanitized_build():   # ASan's quarantine keeps freed memory resident
        wait_for(lambda: ("unblocked",) in events or errors, 10, interval=0.05,
                 what="the alarm to clear once the backlog is gone (RSS %d MiB, limit %d MiB)"
                 % (rss_bytes(pid) >> 20, limit >> 20))
        assert "memory alarm cleared" in c.log()
    c.reload(**{"vm-memory-high-watermark-absolute": "64GiB"})
    wait_for(lambda: ("unblocked",) in events or errors, 10, what="connection.unblocked")
    wait_for(lambda: sent[0] > blocked_at + 32 or errors, 20, what="the publisher to go on")
    stop.set()
    t.join(10)
    assert not t.is_alive() and not errors, errors
    cons.close()
