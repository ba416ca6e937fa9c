"""Hostile clients: each leaves the broker serving everyone else, with its
memory bounded.

- 1,000 connections dropped at random points of the handshake (and a little
  past it), closed politely or reset;
- a frame header promising 2 GiB, and a content header promising a body of
  100 MiB that never comes;
- a consumer that never reads its socket while messages pile up for it;
- a slowloris HTTP client: many connections trickling a header byte at a
  time.

Each case runs against its own sluiced with a well-behaved bystander pika
connection that must keep working, and measures the broker's RSS
(/proc/PID/status) before and after. Sizes shrink for an ASan build
(SLUICED under build/asan), which is slower and hungrier."""

import http.client
import random
import select
import socket
import struct
import time

import pika
import pytest

from amqp_raw import (PROTOCOL_HEADER, Closed, RawConnection, basic_consume, basic_publish,
                      body_frame, channel_open, connection_open, frame, header_frame,
                      queue_declare, start_ok, tune_ok)
from conftest import unique, wait_for
from mgmt_http import ExtraBroker
from proc_stats import rss_bytes, sanitized_build

pytestmark = pytest.mark.deadline(120)

ASAN = sanitized_build()
MiB = 1 << 20


@pytest.fixture
def sluiced():
    started = []

    def start(*options):
        b = ExtraBroker("--heartbeat", "0", *options)
        started.append(b)
        return b

    yield start
    for b in started:
        code = b.stop()
        assert code == 0, "sluiced exited %s\n%s" % (code, open(b.log_path).read()[-3000:])


class Bystander:
    """A pika connection that must not notice anything."""

    def __init__(self, b):
        self.conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, heartbeat=0))
        self.ch = self.conn.channel()
        self.queue = unique("bystander")
        self.ch.queue_declare(self.queue, exclusive=True)
        self.n = 0
        self.check()

    def check(self):
        assert self.conn.is_open, "the bystander connection was closed"
        self.n += 1
        body = b"still here %d" % self.n
        self.ch.basic_publish("", self.queue, body)
        got = wait_for(lambda: self.ch.basic_get(self.queue, auto_ack=True)[2], 5, what="bystander's message")
        assert got == body

    def close(self):
        self.conn.close()


def connections_now(b):
    return b.api.get("/api/overview").json["object_totals"]["connections"]


def settle_rss(pid, seconds=1.0):
    """RSS once it has stopped moving for a moment (allocator caches settle)."""
    end = time.monotonic() + seconds
    value = rss_bytes(pid)
    while time.monotonic() < end:
        time.sleep(0.1)          # sampling, not synchronising
        value = max(value, rss_bytes(pid))
    return value


# --------------------------------------------------------------------------
# 1,000 connections dropped mid-handshake


def client_script(q):
    """Everything a client sends from the first byte to a published message."""
    return (PROTOCOL_HEADER + start_ok() + tune_ok(2047, 131072, 0) + connection_open("/")
            + channel_open(1) + queue_declare(1, q, exclusive=True)
            + basic_publish(1, "", q) + header_frame(1, 5000) + body_frame(1, b"x" * 3000))


def test_thousand_connections_dropped_at_random_handshake_points(sluiced):
    b = sluiced()
    by = Bystander(b)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    script = client_script(unique("dropped"))
    pid = b.proc.pid
    # Warm up (first connections allocate lasting structures), then measure.
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", b.port)) as s:
            s.sendall(script)
    wait_for(lambda: connections_now(b) == 1, 10, what="warm-up connections to go")
    before = settle_rss(pid)

    n = 1000
    batch = 100
    for start in range(0, n, batch):
        socks = []
        for _ in range(batch):
            s = socket.create_connection(("127.0.0.1", b.port))
            cut = rng.randrange(len(script) + 1)
            if cut:
                s.sendall(script[:cut])
            socks.append(s)
        for s in socks:
            how = rng.randrange(3)
            if how == 0:    # reset: SO_LINGER 0
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif how == 1:  # half-close first
                s.shutdown(socket.SHUT_WR)
            s.close()
    # Every one of them goes (lingering closes take up to 2 s).
    wait_for(lambda: connections_now(b) == 1, 15, interval=0.1,
             what="the 1,000 dropped connections to be gone (seed %d)" % seed)
    after = settle_rss(pid)
    bound = (8 if not ASAN else 48) * MiB
    assert after - before < bound, "RSS grew %.1f MiB over 1,000 dropped connections (seed %d)" % (
        (after - before) / MiB, seed)
    by.check()
    # A normal client connects and works.
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, heartbeat=0))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"after")
    assert wait_for(lambda: ch.basic_get(q, auto_ack=True)[2], 5) == b"after"
    conn.close()
    by.close()


# --------------------------------------------------------------------------
# frames and content headers that promise too much


def test_frame_header_promising_2_gib_is_refused_without_buffering(sluiced):
    b = sluiced()
    by = Bystander(b)
    pid = b.proc.pid
    before = settle_rss(pid, 0.3)
    # Before the handshake is done (right after the protocol header) ...
    with RawConnection("127.0.0.1", b.port) as c:
        c.send(PROTOCOL_HEADER)
        c.read_method()                          # connection.start
        c.send(struct.pack(">BHI", 1, 0, 0x80000000) + b"\x00" * 64)
        close = c.expect_connection_close()
        assert close.code == 501, close
        c.finish_close()
    # ... and on an open channel, a body frame of 2 GiB - 1.
    with RawConnection("127.0.0.1", b.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(basic_publish(1, "", "nowhere") + header_frame(1, 10)
               + struct.pack(">BHI", 3, 1, 0x7FFFFFFF) + b"y" * 65536)
        close = c.expect_connection_close()
        assert close.code == 501 and "frame_max" in close.text, close
        c.finish_close()
    assert rss_bytes(pid) - before < 4 * MiB
    by.check()


def test_content_header_promising_more_than_arrives_costs_only_what_arrives(sluiced):
    b = sluiced()
    by = Bystander(b)
    pid = b.proc.pid
    before = settle_rss(pid, 0.3)
    conns = []
    # 20 channels each announcing a 100 MiB body (under the 128 MiB maximum)
    # and sending 4 KiB of it: that is 2 GB promised and 80 KiB delivered.
    for i in range(2):
        c = RawConnection("127.0.0.1", b.port)
        c.handshake()
        for ch in range(1, 11):
            c.open_channel(ch)
            c.send(basic_publish(ch, "", "nowhere") + header_frame(ch, 100 * MiB) + body_frame(ch, b"z" * 4096))
        conns.append(c)
    by.check()                                   # the frames above are handled by now
    grown = rss_bytes(pid) - before
    assert grown < 16 * MiB, "RSS grew %.0f MiB for 80 KiB of body" % (grown / MiB)
    # A header over the maximum message size is refused (406, channel only).
    c = conns[0]
    c.open_channel(11)
    c.send(basic_publish(11, "", "nowhere") + header_frame(11, 1 << 40))
    close = c.expect_close()
    assert close.kind == "channel" and close.code == 406, close
    assert close.text == ("PRECONDITION_FAILED - message size %d is larger than configured max size %d"
                          % (1 << 40, 128 * MiB)), close
    for c in conns:
        c.close()
    by.check()


# --------------------------------------------------------------------------
# a consumer that never reads


def test_consumer_that_never_reads_does_not_make_the_broker_buffer(sluiced):
    b = sluiced()
    by = Bystander(b)
    pid = b.proc.pid
    q = unique("piling")
    sink = RawConnection("127.0.0.1", b.port)
    sink.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sink.handshake()
    sink.open_channel(1)
    sink.send(queue_declare(1, q))
    sink.read_method()                           # declare-ok
    sink.send(basic_consume(1, q, no_ack=True))  # ... and never read again
    before = settle_rss(pid, 0.3)

    total = (256 if not ASAN else 64) * MiB
    body = b"p" * 65536
    pub = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, heartbeat=0))
    pch = pub.channel()
    for i in range(total // len(body)):
        pch.basic_publish("", q, body)
        if i % 256 == 255:
            pub.process_data_events(0)
    pch.queue_declare(q, passive=True)          # every publish is handled by now
    by.check()
    # What piles up goes to the queue, which pages it to the store: the
    # broker holds its output watermark for the sink, the queue's in-memory
    # head, the store's batches and memtables -- not the pile. (ASan's
    # quarantine keeps freed memory resident, so only the release build's
    # RSS says anything.)
    grown = rss_bytes(pid) - before
    if not ASAN:
        assert grown < total // 2, "RSS grew %.0f MiB while %d MiB piled up for a consumer that does not read" % (
            grown / MiB, total // MiB)
    # The broker stopped delivering: most messages are still in the queue.
    ready = pch.queue_declare(q, passive=True).method.message_count
    assert ready > (total // len(body)) // 2, "only %d messages left in the queue" % ready
    sink.close()
    pub.close()
    by.check()
    by.close()


# --------------------------------------------------------------------------
# slowloris over HTTP


def http_get(port, path, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        t0 = time.monotonic()
        conn.request("GET", path, headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})
        r = conn.getresponse()
        r.read()
        return r.status, time.monotonic() - t0
    finally:
        conn.close()


def test_slowloris_http_clients_do_not_starve_others(sluiced):
    b = sluiced("--http-max-connections", "32", "--http-request-timeout", "2")
    by = Bystander(b)
    n = 100 if not ASAN else 50
    slow = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", b.http_port))
        s.sendall(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n")
        s.setblocking(False)
        slow.append(s)
    open_socks = set(slow)
    closed_by_server = 0
    answered = []
    end = time.monotonic() + 5
    while time.monotonic() < end:
        # Each slow client sends one more header byte now and then ...
        for s in list(open_socks):
            try:
                s.send(b"X")
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                open_socks.discard(s)
                closed_by_server += 1
        readable, _, _ = select.select(list(open_socks), [], [], 0)
        for s in readable:                        # EOF or reset: the server let go
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                open_socks.discard(s)
                closed_by_server += 1
        # ... while a normal client is answered promptly.
        status, took = http_get(b.http_port, "/api/overview")
        answered.append((status, took))
        time.sleep(0.3)                           # the slow clients' pace
    assert all(status == 200 for status, _ in answered), answered
    assert max(took for _, took in answered) < 1.0, answered
    # Every slow client was cut off: evicted for room or timed out (2 s).
    wait_for(lambda: _drain_closed(open_socks), 5, what="the slowloris connections to be closed")
    by.check()
    for s in slow:
        s.close()
    by.close()


def _drain_closed(socks):
    readable, _, _ = select.select(list(socks), [], [], 0.1)
    for s in readable:
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            socks.discard(s)
    return not socks
