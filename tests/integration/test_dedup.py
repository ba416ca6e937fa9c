"""Message deduplication (issue 15), with pika: LavinMQ's argument
`x-message-deduplication` on exchanges and queues and the
rabbitmq-message-deduplication plugin's exchange type of that name;
`x-cache-size`, `x-cache-ttl`, the message header `x-deduplication-header`
(and an object's own header name), the per-message `x-cache-ttl` header; a
durable window that drops the duplicate of a confirmed message after
`kill -9`; the arguments through the management API and definitions.

Each test counts what a queue holds after a known sequence of publishes
(with publisher confirms, so every publish has reached the broker before the
count). TTL tests wait on a condition with a deadline, never a bare sleep."""

import time

import pika
import pika.exceptions
import pytest

from conftest import started_broker, unique, wait_for
from mgmt_http import api_for, q

pytestmark = pytest.mark.deadline(120)

PERSISTENT = 2


def props(key=None, ttl=None, header="x-deduplication-header", persistent=True):
    headers = {}
    if key is not None:
        headers[header] = key
    if ttl is not None:
        headers["x-cache-ttl"] = ttl
    return pika.BasicProperties(headers=headers or None, delivery_mode=PERSISTENT if persistent else 1)


def count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def bodies(ch, queue):
    got = []
    while True:
        m, _, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return got
        got.append(body.decode())


def dedup_exchange(ch, name, type_="fanout", durable=False, **args):
    arguments = {"x-message-deduplication": True}
    arguments.update(args)
    ch.exchange_declare(name, type_, durable=durable, arguments=arguments)


def bound_queue(ch, exchange, name=None, durable=False, routing_key=""):
    name = name or unique("dq")
    ch.queue_declare(name, durable=durable)
    ch.queue_bind(name, exchange, routing_key)
    return name


def test_exchange_drops_duplicate_and_still_acks_it(broker, connect):
    ch = connect(broker).channel()
    ch.confirm_delivery()
    ex = unique("dedup.x")
    dedup_exchange(ch, ex, "direct", **{"x-cache-size": 100})
    qn = bound_queue(ch, ex, routing_key="k")
    for i, key in enumerate(["a", "a", "b", "a", "b", "c"]):
        # A duplicate is dropped, and its confirm is still an ack (no raise).
        ch.basic_publish(ex, "k", str(i).encode(), props(key))
    assert bodies(ch, qn) == ["0", "2", "5"]


def test_plugin_exchange_type_routes_as_fanout_and_dedups(broker, connect):
    ch = connect(broker).channel()
    ch.confirm_delivery()
    ex = unique("dedup.plugin")
    ch.exchange_declare(ex, "x-message-deduplication", arguments={"x-cache-size": 10})
    q1 = bound_queue(ch, ex, routing_key="ignored")
    q2 = bound_queue(ch, ex, routing_key="also-ignored")
    for i, key in enumerate(["a", "a", "b"]):
        ch.basic_publish(ex, "any-key", str(i).encode(), props(key))
    assert bodies(ch, q1) == ["0", "2"]
    assert bodies(ch, q2) == ["0", "2"]


def test_mandatory_duplicate_is_returned(broker, connect):
    ch = connect(broker).channel()
    ch.confirm_delivery()
    ex = unique("dedup.m")
    dedup_exchange(ch, ex)
    qn = bound_queue(ch, ex)
    ch.basic_publish(ex, "", b"first", props("k"), mandatory=True)
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(ex, "", b"dup", props("k"), mandatory=True)
    assert bodies(ch, qn) == ["first"]


def test_message_without_the_header_passes(broker, connect):
    ch = connect(broker).channel()
    ch.confirm_delivery()
    ex = unique("dedup.none")
    dedup_exchange(ch, ex)
    qn = bound_queue(ch, ex)
    for i in range(3):
        ch.basic_publish(ex, "", str(i).encode(), props(None))
    # Other headers are not a key either.
    ch.basic_publish(ex, "", b"3", pika.BasicProperties(headers={"other": "a"}))
    ch.basic_publish(ex, "", b"4", pika.BasicProperties(headers={"other": "a"}))
    assert count(ch, qn) == 5


def test_custom_header_argument_names_the_key(broker, connect):
    ch = connect(broker).channel()
    ch.confirm_delivery()
    ex = unique("dedup.h")
    dedup_exchange(ch, ex, **{"x-deduplication-header": "order-id"})
    qn = bound_queue(ch, ex)
    ch.basic_publish(ex, "", b"0", props("1", header="order-id"))
    ch.basic_publish(ex, "", b"1", props("1", header="order-id"))
    ch.basic_publish(ex, "", b"2", props("1"))  # the default header is not the key here
    ch.basic_publish(ex, "", b"3", props("1"))
    assert bodies(ch, qn) == ["0", "2", "3"]


def test_queue_drops_duplicate_other_queues_take_it(broker, connect):
    ch = connect(broker).channel()
    ch.confirm_delivery()
    ex = unique("dedup.qf")
    ch.exchange_declare(ex, "fanout")
    deduped = unique("dedup.q")
    ch.queue_declare(deduped, arguments={"x-message-deduplication": True, "x-cache-size": 100})
    ch.queue_bind(deduped, ex)
    plain = bound_queue(ch, ex)
    for i, key in enumerate(["a", "b", "a", "a", "c"]):
        ch.basic_publish(ex, "", str(i).encode(), props(key))
    assert bodies(ch, deduped) == ["0", "1", "4"]
    assert count(ch, plain) == 5
    # Through the default exchange too; the window is not "while in the
    # queue": a key stays a duplicate after its message was consumed.
    ch.basic_publish("", deduped, b"5", props("a"))
    ch.basic_publish("", deduped, b"6", props("d"))
    assert bodies(ch, deduped) == ["6"]


def test_cache_size_evicts_the_oldest_key(broker, connect):
    ch = connect(broker).channel()
    ch.confirm_delivery()
    ex = unique("dedup.size")
    dedup_exchange(ch, ex, **{"x-cache-size": 2})
    qn = bound_queue(ch, ex)
    for key in ["k1", "k2", "k3"]:  # k1 leaves the window of 2
        ch.basic_publish(ex, "", key.encode(), props(key))
    ch.basic_publish(ex, "", b"k3-dup", props("k3"))
    ch.basic_publish(ex, "", b"k1-again", props("k1"))  # admitted; k2 leaves
    ch.basic_publish(ex, "", b"k3-dup2", props("k3"))
    ch.basic_publish(ex, "", b"k2-again", props("k2"))
    assert bodies(ch, qn) == ["k1", "k2", "k3", "k1-again", "k2-again"]


def publish_until_admitted(ch, ex, queue, key, deadline_s=10.0, **kw):
    """Publishes duplicates of `key` until one is admitted; returns how many
    were dropped before."""
    before = count(ch, queue)
    dropped = 0
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        ch.basic_publish(ex, "", b"retry", props(key, **kw))
        if count(ch, queue) > before:
            return dropped
        dropped += 1
        time.sleep(0.02)  # pacing of the poll, not a synchronisation
    raise AssertionError("key %r never left the window" % key)


def test_cache_ttl_expires_a_key(broker, connect):
    ch = connect(broker).channel()
    ch.confirm_delivery()
    ex = unique("dedup.ttl")
    dedup_exchange(ch, ex, **{"x-cache-ttl": 300})
    qn = bound_queue(ch, ex)
    t0 = time.monotonic()
    ch.basic_publish(ex, "", b"first", props("k"))
    ch.basic_publish(ex, "", b"dup", props("k"))
    assert count(ch, qn) == 1
    publish_until_admitted(ch, ex, qn, "k")
    assert time.monotonic() - t0 >= 0.3
    assert count(ch, qn) == 2


def test_per_message_ttl_header_overrides(broker, connect):
    ch = connect(broker).channel()
    ch.confirm_delivery()
    ex = unique("dedup.mttl")
    dedup_exchange(ch, ex)  # no TTL: keys stay until evicted by size
    qn = bound_queue(ch, ex)
    ch.basic_publish(ex, "", b"short", props("short", ttl=200))
    ch.basic_publish(ex, "", b"forever", props("forever"))
    t0 = time.monotonic()
    publish_until_admitted(ch, ex, qn, "short")
    assert time.monotonic() - t0 >= 0.15
    # The key without a TTL is still a duplicate.
    before = count(ch, qn)
    ch.basic_publish(ex, "", b"forever-dup", props("forever"))
    assert count(ch, qn) == before == 3


def test_invalid_arguments_are_406(broker, connect):
    conn = connect(broker)
    for args in ({"x-message-deduplication": True, "x-cache-size": 0},
                 {"x-message-deduplication": True, "x-cache-ttl": "soon"},
                 {"x-message-deduplication": True, "x-cache-persistence": "tape"}):
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.exchange_declare(unique("dedup.bad"), "fanout", arguments=args)
        assert e.value.reply_code == 406
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare(unique("dedup.badq"), arguments=args)
        assert e.value.reply_code == 406


@pytest.mark.parametrize("level", ["exchange", "queue"])
def test_window_of_confirmed_messages_survives_kill9(fresh_broker, level):
    b = fresh_broker
    conn = b.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    ex = unique("dedup.durable")
    qn = unique("dedup.dq")
    qargs = {}
    if level == "exchange":
        dedup_exchange(ch, ex, durable=True, **{"x-cache-size": 1000})
    else:
        ch.exchange_declare(ex, "fanout", durable=True)
        qargs = {"x-message-deduplication": True, "x-cache-size": 1000}
    ch.queue_declare(qn, durable=True, arguments=qargs)
    ch.queue_bind(qn, ex)
    keys = ["key-%d" % i for i in range(200)]
    for k in keys:
        ch.basic_publish(ex, "", k.encode(), props(k))  # confirmed: synced
    # Consume half, so the queue's contents are not what keeps the window.
    for _ in range(100):
        m, _, _ = ch.basic_get(qn, auto_ack=True)
        assert m is not None
    # A barrier: a confirmed persistent message synced after those acks.
    barrier = unique("dedup.barrier")
    ch.queue_declare(barrier, durable=True)
    ch.basic_publish("", barrier, b"b", props(None))
    b.kill9()
    b.start()
    conn = b.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    assert count(ch, qn) == 100
    for k in keys:
        ch.basic_publish(ex, "", b"dup", props(k))
    ch.basic_publish(ex, "", b"new", props("key-new"))
    got = bodies(ch, qn)
    assert len(got) == 101 and got[-1] == "new" and "dup" not in got
    conn.close()


def test_transient_messages_keys_are_not_durable(fresh_broker):
    """A key is as durable as the message that admitted it: a transient
    message is gone after a restart, and so is its key."""
    b = fresh_broker
    conn = b.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    ex = unique("dedup.tr")
    dedup_exchange(ch, ex, durable=True)
    qn = bound_queue(ch, ex, durable=True)
    ch.basic_publish(ex, "", b"p", props("persistent"))
    ch.basic_publish(ex, "", b"t", props("transient", persistent=False))
    b.kill9()
    b.start()
    conn = b.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish(ex, "", b"p-dup", props("persistent"))
    ch.basic_publish(ex, "", b"t-again", props("transient", persistent=False))
    assert bodies(ch, qn) == ["p", "t-again"]
    conn.close()


def test_deleted_exchange_forgets_its_window(fresh_broker):
    b = fresh_broker
    conn = b.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    ex = unique("dedup.del")
    dedup_exchange(ch, ex, durable=True)
    qn = bound_queue(ch, ex, durable=True)
    ch.basic_publish(ex, "", b"1", props("k"))
    ch.exchange_delete(ex)
    dedup_exchange(ch, ex, durable=True)
    ch.queue_bind(qn, ex)
    ch.basic_publish(ex, "", b"2", props("k"))  # a new window
    b.kill9()
    b.start()
    conn = b.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish(ex, "", b"3", props("k"))  # the new window's key survived
    assert bodies(ch, qn) == ["1", "2"]
    conn.close()


def test_management_api_and_definitions_keep_the_arguments(broker, fresh_broker):
    api = api_for(broker)
    tag = unique("dedup.defs")
    ex, ex2, qn = tag + ".x", tag + ".plugin", tag + ".q"
    args = {"x-message-deduplication": True, "x-cache-size": 5, "x-cache-ttl": 60000}
    api.ok("PUT", "/api/exchanges/%2F/" + q(ex), {"type": "direct", "durable": True, "arguments": args})
    api.ok("PUT", "/api/exchanges/%2F/" + q(ex2), {"type": "x-message-deduplication", "durable": True,
                                                    "arguments": {"x-cache-size": 7}})
    api.ok("PUT", "/api/queues/%2F/" + q(qn), {"durable": True, "arguments": args})
    got = api.ok("GET", "/api/exchanges/%2F/" + q(ex))
    assert got["arguments"] == args
    assert api.ok("GET", "/api/exchanges/%2F/" + q(ex2))["type"] == "x-message-deduplication"
    assert api.ok("GET", "/api/queues/%2F/" + q(qn))["arguments"] == args
    api.ok("POST", "/api/bindings/%%2F/e/%s/q/%s" % (q(ex), q(qn)), {"routing_key": "r"})

    exported = api.ok("GET", "/api/definitions")
    fresh = api_for(fresh_broker)
    r = fresh.post("/api/definitions", exported)
    assert r.status in (200, 204), r
    assert fresh.ok("GET", "/api/exchanges/%2F/" + q(ex))["arguments"] == args
    assert fresh.ok("GET", "/api/exchanges/%2F/" + q(ex2))["type"] == "x-message-deduplication"
    assert fresh.ok("GET", "/api/queues/%2F/" + q(qn))["arguments"] == args
    # And the imported exchange deduplicates.
    conn = fresh_broker.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    for i, key in enumerate(["a", "a", "b"]):
        ch.basic_publish(ex, "r", str(i).encode(), props(key))
    assert bodies(ch, qn) == ["0", "2"]
    conn.close()


def test_a_huge_window_stays_bounded_in_memory(fresh_broker):
    """x-cache-size 10,000,000 and 300,000 distinct keys: sluiced keeps the
    newest 65,536 keys in memory (--dedup-memory-keys) and a capped Bloom
    filter per index generation; the rest of the window is on disk, and a
    duplicate of an early key is still dropped (found there off the broker
    thread). Before the bound, the window alone took ~134 B a key (~38 MiB
    here, 288 MiB for 2M keys). The bound is on the growth of RSS while the
    window fills: the memory part (65,536 keys x ~134 B = 8.4 MiB), one
    2 MiB filter, the store's memtables (2 x 8 MiB) and slack: 40 MiB.
    Measured 26 MiB; the unbounded window grew 38 MiB more than the
    memtables (~54 MiB)."""
    from proc_stats import rss_bytes, sanitized_build
    b = fresh_broker
    n = 60_000 if sanitized_build() else 300_000
    conn = b.pika()
    ch = conn.channel()
    ex = unique("dedup.huge")
    dedup_exchange(ch, ex, durable=True, **{"x-cache-size": 10_000_000})
    rss_before = rss_bytes(b.proc.pid)
    peak = rss_before
    # No queue yet: a persistent message that reaches none keeps its key
    # durable. No confirms on the fill (fast); a confirmed barrier after it.
    for i in range(n):
        ch.basic_publish(ex, "", b"m", props("key-%d" % i))
        if i % 20_000 == 0:
            peak = max(peak, rss_bytes(b.proc.pid))
    ch.confirm_delivery()
    ch.basic_publish(ex, "", b"barrier", props("barrier"))
    peak = max(peak, rss_bytes(b.proc.pid))
    qn = bound_queue(ch, ex, durable=True)
    for i in list(range(0, 100)) + [n // 2, n - 1]:
        ch.basic_publish(ex, "", b"dup", props("key-%d" % i))
    ch.basic_publish(ex, "", b"new", props("key-new"))
    assert bodies(ch, qn) == ["new"]
    peak = max(peak, rss_bytes(b.proc.pid))
    growth = (peak - rss_before) / 2**20
    print("RSS before %.1f MiB, peak %.1f MiB, growth %.1f MiB"
          % (rss_before / 2**20, peak / 2**20, growth))
    # Under ASan the quarantine keeps freed memory resident (up to 256 MiB),
    # so RSS follows what was allocated, not what is held.
    if not sanitized_build():
        assert growth < 40, "RSS grew %.1f MiB" % growth
    conn.close()


def test_an_api_publish_finds_a_key_that_left_memory():
    """POST /api/exchanges/…/publish consults a durable window's disk part as
    basic.publish does: with 100 keys in memory (--dedup-memory-keys 100),
    the duplicate of the first of 1,000 confirmed keys is dropped (routed
    false, the queue keeps its 1,000), a new key gets in. Before, the API
    checked only the window's memory and let the duplicate in."""
    with started_broker(["--dedup-memory-keys", "100"]) as b:
        if b.external:
            pytest.skip("needs a sluiced started by the test (SLUICED)")
        conn = b.pika()
        ch = conn.channel()
        ex = unique("dedup.api")
        dedup_exchange(ch, ex, durable=True, **{"x-cache-size": 100_000})
        qn = bound_queue(ch, ex, durable=True)
        ch.confirm_delivery()
        for i in range(1000):
            ch.basic_publish(ex, "", b"m", props("key-%d" % i))
        assert count(ch, qn) == 1000
        api = api_for(b)
        pub = "/api/exchanges/%2F/" + q(ex) + "/publish"

        def publish(key):
            return api.post(pub, {"routing_key": "", "payload": "api", "payload_encoding": "string",
                                  "properties": {"delivery_mode": 2, "headers": {"x-deduplication-header": key}}})
        r = publish("key-0")
        assert r.status == 200 and r.json == {"routed": False}
        assert count(ch, qn) == 1000
        r = publish("key-new")
        assert r.status == 200 and r.json == {"routed": True}
        assert count(ch, qn) == 1001
        conn.close()
