"""Streams (`x-queue-type: stream`, issue 15 item 1) with pika: declare and
consume rules as RabbitMQ's, every form of `x-stream-offset`, the
`x-stream-offset` header on every delivery, readers at their own positions,
acks and nacks that remove nothing, basic.get refused, retention by
`x-max-length-bytes` a whole segment at a time, every confirmed message
back in order after kill -9, and a broker whose memory stays flat while
readers replay a stream far larger than it.
"""

import threading
import time

import pika
import pytest

from conftest import unique, wait_for
from mgmt_http import Api
from proc_stats import rss_bytes, sanitized_build

STREAM = {"x-queue-type": "stream"}


def declare_stream(ch, name=None, **args):
    name = name or unique("s")
    ch.queue_declare(queue=name, durable=True, arguments=dict(STREAM, **args))
    return name


def publish_confirmed(ch, queue, bodies, props=None):
    ch.confirm_delivery()
    for b in bodies:
        ch.basic_publish("", queue, b, props or pika.BasicProperties(), mandatory=False)


def publish_pipelined(conn, ch, queue, count, body, batch=500):
    """Publishes `count` messages without waiting on each confirm, then waits
    until the stream holds them all (queue.declare's message count)."""
    for i in range(count):
        ch.basic_publish("", queue, body)
        if i % batch == batch - 1:
            conn.process_data_events(0)
    wait_for(lambda: ch.queue_declare(queue=queue, passive=True).method.message_count >= count,
             timeout=120, what="the stream to hold %d messages" % count)


def consume(ch, queue, n, offset=None, prefetch=50, timeout=30, ack=True):
    """Consumes n messages from `queue` at `offset`; returns [(offset header, body)]."""
    ch.basic_qos(prefetch_count=prefetch)
    got = []
    args = {} if offset is None else {"x-stream-offset": offset}
    deadline = time.monotonic() + timeout
    for method, props, body in ch.consume(queue, arguments=args, inactivity_timeout=1):
        if method is None:
            assert time.monotonic() < deadline, "got %d of %d messages" % (len(got), n)
            continue
        got.append((props.headers["x-stream-offset"], body))
        if ack:
            ch.basic_ack(method.delivery_tag)
        if len(got) == n:
            break
    ch.cancel()
    return got


def assert_closed_with(fn, code):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        fn()
    assert e.value.reply_code == code, e.value


# --------------------------------------------------------------------------
# declare and consume rules

@pytest.mark.parametrize("flags,text", [
    (dict(durable=False), "non-durable"),
    (dict(durable=True, exclusive=True), "exclusive-owner"),
    (dict(durable=True, auto_delete=True), "auto-delete"),
])
def test_declare_needs_durable_not_exclusive_not_auto_delete(connect, flags, text):
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(queue=unique("s"), arguments=STREAM, **flags)
    assert e.value.reply_code == 406 and text in e.value.reply_text


def test_declare_refuses_what_a_stream_does_not_do(connect):
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        declare_stream(ch, **{"x-max-length": 10})
    assert e.value.reply_code == 406 and "x-max-length" in e.value.reply_text
    ch = connect().channel()
    assert_closed_with(lambda: declare_stream(ch, **{"x-max-age": "7 days"}), 406)


def test_declared_stream_is_listed_as_stream_with_its_count(broker, connect):
    conn = connect()
    ch = conn.channel()
    name = declare_stream(ch, **{"x-max-age": "7D"})
    publish_confirmed(ch, name, [b"m%d" % i for i in range(7)])
    q = Api(broker.http_port).get("/api/queues/%2F/" + name).json
    assert q["type"] == "stream"
    assert q["messages"] == 7
    # Each confirmed publish is a chunk of its own: 7 records of 2 bytes and
    # their headers, stored.
    assert q["message_bytes"] > 7 * 2, q["message_bytes"]
    # Redeclaring with the same arguments is fine.
    ch.queue_declare(queue=name, durable=True, arguments=dict(STREAM, **{"x-max-age": "7D"}))
    # Publishes, deliveries and acks count as any queue's: two readers of
    # all 7 are 14 deliveries, and the stream still holds 7.
    for _ in range(2):
        assert len(consume(ch, name, 7, "first")) == 7
    api = Api(broker.http_port)
    stats = wait_for(lambda: (lambda q: q if q.get("message_stats", {}).get("ack") == 14 else None)(
        api.get("/api/queues/%2F/" + name).json), what="14 acks in the queue's message_stats")
    assert stats["message_stats"]["publish"] == 7
    assert stats["message_stats"]["deliver_get"] == 14
    assert stats["messages"] == 7


def test_consume_needs_prefetch_and_manual_ack_and_get_is_refused(connect):
    conn = connect()
    ch = conn.channel()
    name = declare_stream(ch)
    # No basic.qos: 406 (a channel error).
    assert_closed_with(lambda: ch.basic_consume(name, lambda *a: None), 406)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    assert_closed_with(lambda: ch.basic_consume(name, lambda *a: None, arguments={"x-stream-offset": "yesterday"}),
                       406)

    # 540 NOT_IMPLEMENTED (a connection error, as RabbitMQ's): automatic
    # acknowledgement, a global prefetch, basic.get.
    def refused(setup, call, text):
        ch = connect().channel()
        setup(ch)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            call(ch)
        assert e.value.reply_code == 540 and text in e.value.reply_text, e.value

    refused(lambda ch: ch.basic_qos(prefetch_count=10),
            lambda ch: ch.basic_consume(name, lambda *a: None, auto_ack=True), "automatic acknowledgement")
    refused(lambda ch: ch.basic_qos(prefetch_count=10, global_qos=True),
            lambda ch: ch.basic_consume(name, lambda *a: None), "global qos")
    refused(lambda ch: None, lambda ch: ch.basic_get(name), "basic.get not supported by stream queues")


# --------------------------------------------------------------------------
# offsets and headers

def test_every_offset_form(connect):
    conn = connect()
    ch = conn.channel()
    name = declare_stream(ch)
    # One publish, one confirm, one batch: each message is a chunk of its own.
    publish_confirmed(ch, name, [b"m%d" % i for i in range(10)])
    everything = [(i, b"m%d" % i) for i in range(10)]
    assert consume(ch, name, 10, "first") == everything
    assert consume(ch, name, 4, 6) == everything[6:]
    assert consume(ch, name, 1, "last") == everything[9:]
    an_hour_ago = int(time.time()) - 3600
    assert consume(ch, name, 10, "1h") == everything
    # An AMQP timestamp: pika sends a datetime as 'T'.
    import datetime
    assert consume(ch, name, 10, datetime.datetime.fromtimestamp(an_hour_ago)) == everything
    # "next", the default and an offset past the end see only new messages.
    readers = []
    for offset in ("next", None, 1000):
        rch = conn.channel()
        rch.basic_qos(prefetch_count=10)
        got = []
        rch.basic_consume(name, lambda c, m, p, b, got=got: got.append((p.headers["x-stream-offset"], b)),
                          arguments={} if offset is None else {"x-stream-offset": offset})
        readers.append(got)
    publish_confirmed(ch, name, [b"new0", b"new1"])
    deadline = time.monotonic() + 20
    while any(len(g) < 2 for g in readers) and time.monotonic() < deadline:
        conn.process_data_events(0.1)
    for got in readers:
        assert got == [(10, b"new0"), (11, b"new1")]


def test_two_consumers_at_different_positions(connect):
    conn = connect()
    ch = conn.channel()
    name = declare_stream(ch)
    publish_confirmed(ch, name, [b"m%d" % i for i in range(20)])
    a, b = conn.channel(), conn.channel()
    for c in (a, b):
        c.basic_qos(prefetch_count=5)
    got = {"a": [], "b": []}

    def on(key, chan):
        def cb(c, method, props, body):
            got[key].append(props.headers["x-stream-offset"])
            chan.basic_ack(method.delivery_tag)
        return cb

    a.basic_consume(name, on("a", a), arguments={"x-stream-offset": "first"})
    b.basic_consume(name, on("b", b), arguments={"x-stream-offset": 15})
    deadline = time.monotonic() + 20
    while (len(got["a"]) < 20 or len(got["b"]) < 5) and time.monotonic() < deadline:
        conn.process_data_events(0.1)
    assert got["a"] == list(range(20))
    assert got["b"] == list(range(15, 20))


def test_acks_and_nacks_remove_nothing(connect):
    conn = connect()
    ch = conn.channel()
    name = declare_stream(ch)
    publish_confirmed(ch, name, [b"m%d" % i for i in range(5)])
    ch.basic_qos(prefetch_count=2)
    seen = []
    for method, props, body in ch.consume(name, arguments={"x-stream-offset": "first"}, inactivity_timeout=5):
        assert method is not None, "stalled after %r" % seen
        seen.append(props.headers["x-stream-offset"])
        # A nack with requeue gives the credit back and redelivers nothing
        # (RabbitMQ's streams); a reject without requeue does the same.
        if len(seen) % 2:
            ch.basic_nack(method.delivery_tag, requeue=True)
        else:
            ch.basic_reject(method.delivery_tag, requeue=False)
        if len(seen) == 5:
            break
    ch.cancel()
    assert seen == [0, 1, 2, 3, 4]
    assert ch.queue_declare(queue=name, passive=True).method.message_count == 5
    assert consume(ch, name, 5, "first") == [(i, b"m%d" % i) for i in range(5)]


# --------------------------------------------------------------------------
# retention

def test_retention_by_max_length_bytes_drops_whole_segments(connect):
    conn = connect()
    ch = conn.channel()
    # Segments of ~4 KiB; keep ~16 KiB. Each confirmed publish is one chunk
    # of 1 KiB and change, so a segment holds 4 of them.
    name = declare_stream(ch, **{"x-max-length-bytes": 16 * 1024, "x-stream-max-segment-size-bytes": 4000})
    body = b"x" * 1000
    publish_confirmed(ch, name, [body] * 60)
    count = ch.queue_declare(queue=name, passive=True).method.message_count
    assert 12 <= count < 60, count
    got = consume(ch, name, count, "first")
    offsets = [o for o, _ in got]
    # What is left is the tail, contiguous, starting at a segment's first
    # chunk (a multiple of 4 messages here).
    assert offsets == list(range(60 - count, 60))
    assert offsets[0] % 4 == 0, offsets[0]


# --------------------------------------------------------------------------
# crashes

def test_every_confirmed_message_back_in_order_after_kill9(fresh_broker):
    b = fresh_broker
    conn = b.pika()
    ch = conn.channel()
    name = declare_stream(ch)
    n = 3000
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", name, b"m%d" % i)   # returns once confirmed
    b.kill9()
    b.start()
    conn = b.pika()
    ch = conn.channel()
    assert ch.queue_declare(queue=name, durable=True, arguments=STREAM).method.message_count == n
    got = consume(ch, name, n, "first", prefetch=500)
    assert got == [(i, b"m%d" % i) for i in range(n)]
    # And the stream goes on from there.
    ch.confirm_delivery()
    ch.basic_publish("", name, b"after")
    assert consume(ch, name, 1, n) == [(n, b"after")]
    conn.close()


# --------------------------------------------------------------------------
# memory

@pytest.mark.deadline(300)
def test_memory_stays_flat_while_readers_replay(fresh_broker):
    """100k messages of 1 KiB (~100 MiB stored) replayed by two readers from
    `first`: sluiced's RSS grows by less than 40 MiB over its size before the
    replay. Each reader holds at most its read-ahead (128 KiB plus a chunk of
    at most 256 KiB) and its prefetch (100 messages); RocksDB's block cache
    is 16 MiB and its memtables 16 MiB: a broker that kept the stream in
    memory would grow by the stream's 100 MiB."""
    b = fresh_broker
    n = 20_000 if sanitized_build() else 100_000
    conn = b.pika()
    ch = conn.channel()
    name = declare_stream(ch)
    publish_pipelined(conn, ch, name, n, b"x" * 1024)
    before = rss_bytes(b.proc.pid)
    peak = [before]
    done = [0, 0]

    def reader(i):
        c = b.pika()
        rch = c.channel()
        rch.basic_qos(prefetch_count=100)
        expected = 0
        for method, props, body in rch.consume(name, arguments={"x-stream-offset": "first"}, inactivity_timeout=10):
            assert method is not None
            assert props.headers["x-stream-offset"] == expected
            expected += 1
            rch.basic_ack(method.delivery_tag, multiple=False)
            if expected == n:
                break
        done[i] = expected
        c.close()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak[0] = max(peak[0], rss_bytes(b.proc.pid))
        time.sleep(0.05)
    assert done == [n, n]
    growth = peak[0] - before
    print("stream replay: RSS before %.1f MiB, peak %.1f MiB" % (before / 2**20, peak[0] / 2**20))
    # Under ASan the quarantine keeps freed memory resident (up to 256 MiB),
    # so RSS follows what was allocated (108 MiB for 20k), not what is held.
    if not sanitized_build():
        assert growth < 40 * 2**20, "RSS grew %.1f MiB during the replay (before %.1f MiB)" % (
            growth / 2**20, before / 2**20)
    conn.close()


def test_delete_cancels_readers_and_a_new_stream_starts_afresh(connect):
    conn = connect()
    ch = conn.channel()
    name = declare_stream(ch)
    publish_confirmed(ch, name, [b"old%d" % i for i in range(3)])
    rch = conn.channel()
    rch.basic_qos(prefetch_count=10)
    cancelled = []
    rch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = rch.basic_consume(name, lambda *a: None, arguments={"x-stream-offset": "first"})
    ch.queue_delete(queue=name)
    wait_for(lambda: conn.process_data_events(0.05) or cancelled, what="the reader's basic.cancel")
    assert cancelled == [tag]
    name = declare_stream(ch, name)
    assert ch.queue_declare(queue=name, passive=True).method.message_count == 0
    publish_confirmed(ch, name, [b"new"])
    assert consume(ch, name, 1, "first") == [(0, b"new")]
