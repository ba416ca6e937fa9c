"""AMQP 0-9-1 semantics as RabbitMQ implements them, driven with pika:
confirms, returns, routing (topic, headers, exchange-to-exchange), basic.get,
nack/reject/recover, qos, consumer cancel notifications, declare/delete
rules and their error codes, exclusive and auto-delete queues, large and
empty messages, transactions, connection negotiation."""

import os
import time

import pika
import pytest
from pika.exceptions import (ChannelClosedByBroker, UnroutableError)

from conftest import temp_queue, unique, wait_for

# --------------------------------------------------------------------------
# helpers


def drain(ch, queue, limit=10000):
    """basic.get (auto-ack) until get-empty; the bodies in order."""
    out = []
    for _ in range(limit):
        method, props, body = ch.basic_get(queue=queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)
    raise AssertionError("queue %s never became empty" % queue)


def queue_exists(conn, name):
    """Passive declare on a throwaway channel: True, or False on 404."""
    ch = conn.channel()
    try:
        ch.queue_declare(queue=name, passive=True)
    except ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    ch.close()
    return True


def exchange_exists(conn, name):
    ch = conn.channel()
    try:
        ch.exchange_declare(exchange=name, passive=True)
    except ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    ch.close()
    return True


def expect_channel_close(code, fn, *args, **kw):
    with pytest.raises(ChannelClosedByBroker) as ei:
        fn(*args, **kw)
    assert ei.value.reply_code == code, "expected channel.close %d, got %r" % (code, ei.value)
    return ei.value


def pump_until(conn, cond, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        conn.process_data_events(time_limit=0.01)


@pytest.fixture
def conn(broker, connect):
    return connect()


@pytest.fixture
def ch(conn):
    return conn.channel()


@pytest.fixture
def q(ch):
    """A fresh queue (deleted afterwards)."""
    name = unique("q")
    ch.queue_declare(queue=name)
    yield name
    try:
        if ch.is_open:
            ch.queue_delete(queue=name)
    except Exception:
        pass


# --------------------------------------------------------------------------
# connection negotiation


def test_server_properties_and_capabilities(conn):
    props = conn._impl.server_properties
    caps = props.get("capabilities", {})
    # what RabbitMQ 3.10 advertises, less consumer_priorities (advertised only
    # with the feature: see test_consumer_priorities)
    for cap in ("publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                "consumer_cancel_notify", "connection.blocked",
                "authentication_failure_close", "per_consumer_qos", "direct_reply_to"):
        assert caps.get(cap) is True, "capability %s not advertised: %r" % (cap, caps)
    unknown = set(caps) - {"publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                           "consumer_cancel_notify", "connection.blocked",
                           "consumer_priorities", "authentication_failure_close",
                           "per_consumer_qos", "direct_reply_to"}
    assert not unknown, "capabilities RabbitMQ does not name: %s" % unknown
    for key in ("product", "version", "platform"):
        assert key in props, "server-properties lack %s: %r" % (key, props)
    # pika asks for frame_max 131072 and channel_max 65535; the server may lower them
    assert 4096 <= conn._impl.params.frame_max <= 131072
    assert 1 <= conn._impl.params.channel_max <= 65535


def test_wrong_password_is_refused(broker):
    # pika asks for authentication_failure_close, so the broker must say why:
    # connection.close 403 ACCESS_REFUSED (pika wraps it in ProbableAuthenticationError)
    with pytest.raises(pika.exceptions.ProbableAuthenticationError, match=r"\(403\)"):
        broker.pika(credentials=pika.PlainCredentials("guest", "wrong"))


def test_unknown_vhost_is_refused(broker):
    # connection.close 530 NOT_ALLOWED in answer to connection.open
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match=r"\(530\)"):
        broker.pika(virtual_host=unique("no-such-vhost"))


# --------------------------------------------------------------------------
# publishing: confirms, mandatory, transactions


def test_publisher_confirms_all_acked(broker, ch):
    name = unique("confirm")
    ch.queue_declare(queue=name, durable=True)
    try:
        ch.confirm_delivery()
        for i in range(300):
            # BlockingChannel waits for each basic.ack and raises on nack
            ch.basic_publish(exchange="", routing_key=name, body=b"c%d" % i,
                             properties=pika.BasicProperties(delivery_mode=2 if i % 2 else 1))
        # unroutable but not mandatory: still confirmed
        ch.basic_publish(exchange="amq.direct", routing_key=unique("nowhere"), body=b"x")
        assert ch.queue_declare(queue=name, passive=True).method.message_count == 300
        assert drain(ch, name) == [b"c%d" % i for i in range(300)]
    finally:
        ch.queue_delete(queue=name)


def test_mandatory_unroutable_in_confirm_mode_raises(ch):
    ch.confirm_delivery()
    with pytest.raises(UnroutableError) as ei:
        ch.basic_publish(exchange="amq.direct", routing_key=unique("nowhere"),
                         body=b"lost", mandatory=True)
    returned = ei.value.messages
    assert len(returned) == 1
    assert returned[0].method.reply_code == 312
    assert returned[0].method.reply_text == "NO_ROUTE"
    assert returned[0].body == b"lost"
    # the channel stays usable
    ch.basic_publish(exchange="amq.direct", routing_key="x", body=b"fine")


def test_mandatory_unroutable_basic_return(conn, ch):
    returns = []
    ch.add_on_return_callback(lambda c, method, props, body: returns.append((method, props, body)))
    key = unique("nowhere")
    ch.basic_publish(exchange="amq.topic", routing_key=key, body=b"back to sender",
                     mandatory=True,
                     properties=pika.BasicProperties(correlation_id="r1", headers={"h": 1}))
    pump_until(conn, lambda: returns, what="basic.return")
    method, props, body = returns[0]
    assert (method.reply_code, method.reply_text) == (312, "NO_ROUTE")
    assert (method.exchange, method.routing_key) == ("amq.topic", key)
    assert body == b"back to sender"
    assert props.correlation_id == "r1" and props.headers == {"h": 1}


def test_publish_to_missing_exchange_is_404(ch):
    ch.basic_publish(exchange=unique("missing-x"), routing_key="k", body=b"x")
    expect_channel_close(404, ch.queue_declare, queue=unique("sync"), exclusive=True)


def test_tx_commit_and_rollback(conn, ch, q):
    ch.tx_select()
    ch.basic_publish(exchange="", routing_key=q, body=b"t1")
    ch.basic_publish(exchange="", routing_key=q, body=b"t2")
    other = conn.channel()
    assert other.queue_declare(queue=q, passive=True).method.message_count == 0
    ch.tx_commit()
    assert other.queue_declare(queue=q, passive=True).method.message_count == 2
    ch.basic_publish(exchange="", routing_key=q, body=b"t3")
    ch.tx_rollback()
    ch.tx_commit()
    assert drain(other, q) == [b"t1", b"t2"]


# --------------------------------------------------------------------------
# routing


def _words(s):
    return [] if s == "" else s.split(".")


def _topic_match(pattern, key):
    """RabbitMQ's topic semantics: words split on '.', an empty routing key
    has no words, '*' is exactly one (possibly empty) word, '#' zero or
    more."""
    def m(p, k):
        if not p:
            return not k
        if p[0] == "#":
            return any(m(p[1:], k[i:]) for i in range(len(k) + 1))
        if not k:
            return False
        return (p[0] == "*" or p[0] == k[0]) and m(p[1:], k[1:])
    return m(_words(pattern), _words(key))


TOPIC_BINDINGS = ["a.#", "#.b", "*.b", "#", "a.*.c", "a.#.c", "*", "", "a.b",
                  "*.*", "#.#", "a.*", "#.*"]
TOPIC_KEYS = ["a", "a.b", "a.b.c", "b", "x.y.b", ".b", "a..c", "a.c", "", "b.a",
              "a.b.d.c", "..", "a.", "A.b"]


def test_topic_reference_cases():
    """The reference matcher itself agrees with RabbitMQ's documented cases."""
    assert _topic_match("a.#", "a")
    assert _topic_match("#.b", "b")
    assert not _topic_match("*.b", "a.b.c")
    assert _topic_match("*.b", ".b")          # '*' matches an empty word
    assert _topic_match("a.*.c", "a..c")
    assert _topic_match("#", "")
    assert not _topic_match("*", "")
    assert _topic_match("", "")
    assert not _topic_match("a.b", "A.b")


def test_topic_routing(ch):
    x = unique("topic")
    ch.exchange_declare(exchange=x, exchange_type="topic", auto_delete=True)
    queues = {}
    for pattern in TOPIC_BINDINGS:
        qn = temp_queue(ch)
        ch.queue_bind(queue=qn, exchange=x, routing_key=pattern)
        queues[pattern] = qn
    ch.confirm_delivery()          # once confirmed, routed and enqueued
    for key in TOPIC_KEYS:
        ch.basic_publish(exchange=x, routing_key=key, body=key.encode() or b"<empty>")
    failures = []
    for pattern, qn in queues.items():
        got = [b.decode() for b in drain(ch, qn)]
        want = [k or "<empty>" for k in TOPIC_KEYS if _topic_match(pattern, k)]
        if got != want:
            failures.append("binding %r: got %r, want %r" % (pattern, got, want))
    assert not failures, "\n".join(failures)


def test_headers_routing(ch):
    x = unique("headers")
    ch.exchange_declare(exchange=x, exchange_type="headers", auto_delete=True)
    bindings = {
        "all": {"x-match": "all", "format": "pdf", "type": "report"},
        "any": {"x-match": "any", "format": "pdf", "type": "log"},
        "default": {"format": "pdf", "type": "report"},   # x-match defaults to all
        "int": {"x-match": "all", "n": 5},
    }
    queues = {}
    for name, args in bindings.items():
        qn = temp_queue(ch)
        ch.queue_bind(queue=qn, exchange=x, routing_key="ignored", arguments=args)
        queues[name] = qn
    messages = [
        ("m1", {"format": "pdf", "type": "report"}, {"all", "any", "default"}),
        ("m2", {"format": "pdf"}, {"any"}),
        ("m3", {"type": "log"}, {"any"}),
        ("m4", {"format": "zip", "type": "report"}, set()),
        ("m5", None, set()),
        ("m6", {"format": "pdf", "type": "report", "extra": 1}, {"all", "any", "default"}),
        ("m7", {"n": 5}, {"int"}),
        ("m8", {"n": 6}, set()),
    ]
    ch.confirm_delivery()
    for body, headers, _ in messages:
        ch.basic_publish(exchange=x, routing_key="whatever", body=body.encode(),
                         properties=pika.BasicProperties(headers=headers))
    for name, qn in queues.items():
        got = [b.decode() for b in drain(ch, qn)]
        want = [body for body, _, targets in messages if name in targets]
        assert got == want, "binding %s %r" % (name, bindings[name])


def test_direct_and_fanout_routing(ch):
    d = unique("direct")
    f = unique("fanout")
    ch.exchange_declare(exchange=d, exchange_type="direct", auto_delete=True)
    ch.exchange_declare(exchange=f, exchange_type="fanout", auto_delete=True)
    q1 = temp_queue(ch)
    q2 = temp_queue(ch)
    ch.queue_bind(queue=q1, exchange=d, routing_key="red")
    ch.queue_bind(queue=q1, exchange=d, routing_key="green")
    ch.queue_bind(queue=q2, exchange=d, routing_key="green")
    ch.queue_bind(queue=q1, exchange=f, routing_key="anything")
    ch.queue_bind(queue=q2, exchange=f)
    ch.confirm_delivery()
    for key in ("red", "green", "blue"):
        ch.basic_publish(exchange=d, routing_key=key, body=key.encode())
    ch.basic_publish(exchange=f, routing_key="zzz", body=b"fan")
    assert drain(ch, q1) == [b"red", b"green", b"fan"]
    assert drain(ch, q2) == [b"green", b"fan"]
    # unbind stops routing
    ch.queue_unbind(queue=q1, exchange=d, routing_key="red")
    ch.basic_publish(exchange=d, routing_key="red", body=b"red2")
    assert drain(ch, q1) == []


def test_exchange_to_exchange_binding(ch):
    src = unique("e2e.src")
    dst = unique("e2e.dst")
    ch.exchange_declare(exchange=src, exchange_type="topic", auto_delete=False)
    ch.exchange_declare(exchange=dst, exchange_type="fanout", auto_delete=False)
    try:
        qn = temp_queue(ch)
        ch.queue_bind(queue=qn, exchange=dst)
        ch.exchange_bind(destination=dst, source=src, routing_key="stock.#")
        ch.confirm_delivery()
        ch.basic_publish(exchange=src, routing_key="stock.nyse.ibm", body=b"routed")
        ch.basic_publish(exchange=src, routing_key="weather.uk", body=b"not routed")
        assert drain(ch, qn) == [b"routed"]
        # the source exchange has a binding now: if_unused refuses to delete it
        ch.exchange_unbind(destination=dst, source=src, routing_key="stock.#")
        ch.basic_publish(exchange=src, routing_key="stock.x", body=b"after unbind")
        assert drain(ch, qn) == []
    finally:
        c = ch if ch.is_open else ch.connection.channel()
        c.exchange_delete(exchange=src)
        c.exchange_delete(exchange=dst)


# --------------------------------------------------------------------------
# basic.get, ack, nack, reject, recover


def test_basic_get_ok_and_empty(ch, q):
    method, props, body = ch.basic_get(queue=q)
    assert method is None, "get-ok from an empty queue"
    for i in range(3):
        ch.basic_publish(exchange="", routing_key=q, body=b"g%d" % i,
                         properties=pika.BasicProperties(content_type="text/plain",
                                                         message_id="id%d" % i))
    wait_for(lambda: ch.queue_declare(queue=q, passive=True).method.message_count == 3, 3)
    method, props, body = ch.basic_get(queue=q, auto_ack=False)
    assert body == b"g0"
    assert method.message_count == 2          # messages left after this one
    assert method.redelivered is False
    assert (method.exchange, method.routing_key) == ("", q)
    assert props.content_type == "text/plain" and props.message_id == "id0"
    ch.basic_ack(method.delivery_tag)
    method, _, body = ch.basic_get(queue=q, auto_ack=True)
    assert (body, method.message_count) == (b"g1", 1)
    method, _, body = ch.basic_get(queue=q, auto_ack=True)
    assert (body, method.message_count) == (b"g2", 0)
    assert ch.basic_get(queue=q)[0] is None


def test_nack_requeue_returns_to_head(ch, q):
    for i in range(3):
        ch.basic_publish(exchange="", routing_key=q, body=b"n%d" % i)
    wait_for(lambda: ch.queue_declare(queue=q, passive=True).method.message_count == 3, 3)
    m, _, body = ch.basic_get(queue=q)
    assert body == b"n0" and not m.redelivered
    ch.basic_nack(m.delivery_tag, requeue=True)
    m, _, body = ch.basic_get(queue=q)
    assert body == b"n0", "requeued message not back at the head"
    assert m.redelivered is True
    ch.basic_ack(m.delivery_tag)
    m, _, body = ch.basic_get(queue=q)
    assert body == b"n1" and m.redelivered is False
    ch.basic_nack(m.delivery_tag, requeue=False)      # dropped
    m, _, body = ch.basic_get(queue=q)
    assert body == b"n2"
    ch.basic_ack(m.delivery_tag)
    assert ch.basic_get(queue=q)[0] is None


def test_nack_multiple(ch, q):
    for i in range(4):
        ch.basic_publish(exchange="", routing_key=q, body=b"%d" % i)
    wait_for(lambda: ch.queue_declare(queue=q, passive=True).method.message_count == 4, 3)
    tags = [ch.basic_get(queue=q)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[1], multiple=True, requeue=False)   # drops 0 and 1
    ch.basic_nack(tags[2], multiple=False, requeue=True)   # 2 back
    assert drain(ch, q) == [b"2", b"3"]


def test_reject(ch, q):
    ch.basic_publish(exchange="", routing_key=q, body=b"r0")
    ch.basic_publish(exchange="", routing_key=q, body=b"r1")
    wait_for(lambda: ch.queue_declare(queue=q, passive=True).method.message_count == 2, 3)
    m, _, body = ch.basic_get(queue=q)
    assert body == b"r0"
    ch.basic_reject(m.delivery_tag, requeue=True)
    m, _, body = ch.basic_get(queue=q)
    assert body == b"r0" and m.redelivered
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert drain(ch, q) == [b"r1"]


def test_ack_unknown_delivery_tag_is_406(ch, q):
    ch.basic_publish(exchange="", routing_key=q, body=b"x")
    wait_for(lambda: ch.queue_declare(queue=q, passive=True).method.message_count == 1, 3)
    m, _, _ = ch.basic_get(queue=q)
    ch.basic_ack(m.delivery_tag)
    ch.basic_ack(m.delivery_tag)       # second ack of the same tag
    expect_channel_close(406, ch.queue_declare, queue=q, passive=True)


def test_basic_recover_requeue(conn, ch, q):
    for i in range(3):
        ch.basic_publish(exchange="", routing_key=q, body=b"v%d" % i)
    got = []
    ch.basic_consume(queue=q, on_message_callback=lambda c, m, p, b: got.append((b, m.redelivered, m.delivery_tag)))
    pump_until(conn, lambda: len(got) == 3, what="3 deliveries")
    assert [(b, r) for b, r, _ in got] == [(b"v0", False), (b"v1", False), (b"v2", False)]
    ch.basic_recover(requeue=True)
    pump_until(conn, lambda: len(got) == 6, what="3 redeliveries after basic.recover")
    again = got[3:]
    assert sorted(b for b, _, _ in again) == [b"v0", b"v1", b"v2"]
    assert all(r for _, r, _ in again), again
    for _, _, tag in again:
        ch.basic_ack(tag)
    ch.basic_cancel(ch.consumer_tags[0])
    assert ch.queue_declare(queue=q, passive=True).method.message_count == 0


# --------------------------------------------------------------------------
# qos


def _qos_deliveries(broker, connect, global_qos):
    conn = connect()
    ch = conn.channel()
    qs = []
    for _ in range(2):
        qn = temp_queue(ch)
        qs.append(qn)
        for i in range(5):
            ch.basic_publish(exchange="", routing_key=qn, body=b"%d" % i)
    wait_for(lambda: all(ch.queue_declare(queue=x, passive=True).method.message_count == 5
                         for x in qs), 3)
    ch.basic_qos(prefetch_count=2, global_qos=global_qos)
    got = []
    for qn in qs:
        ch.basic_consume(queue=qn, on_message_callback=lambda c, m, p, b: got.append(m.delivery_tag))
    expect = 2 if global_qos else 4
    pump_until(conn, lambda: len(got) >= expect, what="%d deliveries" % expect)
    probe = conn.channel()
    wait_for(lambda: sum(probe.queue_declare(queue=x, passive=True).method.message_count
                         for x in qs) == 10 - expect, 3, what="ready count %d" % (10 - expect))
    conn.process_data_events(time_limit=0.2)   # bounded window: no more must arrive
    assert len(got) == expect, "prefetch %s exceeded: %d deliveries" % (
        "global 2" if global_qos else "per-consumer 2", len(got))
    # acking one frees one slot
    ch.basic_ack(got[0])
    pump_until(conn, lambda: len(got) == expect + 1, what="delivery after ack")
    conn.process_data_events(time_limit=0.1)
    assert len(got) == expect + 1


def test_qos_per_consumer(broker, connect):
    _qos_deliveries(broker, connect, global_qos=False)


def test_qos_global(broker, connect):
    _qos_deliveries(broker, connect, global_qos=True)


# --------------------------------------------------------------------------
# consumers


def test_consumer_cancel_notification_on_queue_delete(conn, ch):
    name = unique("cancelme")
    ch.queue_declare(queue=name)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame))
    tag = ch.basic_consume(queue=name, on_message_callback=lambda *a: None)
    assert ch.consumer_tags == [tag]
    other = conn.channel()
    other.queue_delete(queue=name)
    pump_until(conn, lambda: cancelled, what="basic.cancel from the broker")
    assert cancelled[0].method.consumer_tag == tag
    assert ch.consumer_tags == []
    assert ch.is_open


def test_consumer_priorities(broker, connect, ch, q):
    """x-priority: the higher-priority consumer gets messages while it has
    prefetch room; the lower one only what it cannot take."""
    conn = connect()
    if not conn._impl.server_properties["capabilities"].get("consumer_priorities"):
        pytest.skip("broker does not advertise consumer_priorities")
    high_ch = conn.channel()
    high_ch.basic_qos(prefetch_count=2)
    low_ch = conn.channel()
    low_ch.basic_qos(prefetch_count=100)
    high, low = [], []
    low_ch.basic_consume(queue=q, on_message_callback=lambda c, m, p, b: low.append(m.delivery_tag),
                         arguments={"x-priority": 0})
    high_ch.basic_consume(queue=q, on_message_callback=lambda c, m, p, b: high.append(m.delivery_tag),
                          arguments={"x-priority": 10})
    for i in range(10):
        ch.basic_publish(exchange="", routing_key=q, body=b"%d" % i)
    pump_until(conn, lambda: len(high) + len(low) == 10, what="10 deliveries")
    assert (len(high), len(low)) == (2, 8)
    # room again at the high-priority consumer: it gets the next ones
    high_ch.basic_ack(high[-1], multiple=True)
    for i in range(2):
        ch.basic_publish(exchange="", routing_key=q, body=b"more")
    pump_until(conn, lambda: len(high) + len(low) == 12, what="2 more deliveries")
    assert (len(high), len(low)) == (4, 8)


def test_consumer_tag_given(ch, q):
    assert ch.basic_consume(queue=q, consumer_tag="mytag",
                            on_message_callback=lambda *a: None) == "mytag"
    assert ch.queue_declare(queue=q, passive=True).method.consumer_count == 1
    ch.basic_cancel("mytag")
    assert ch.queue_declare(queue=q, passive=True).method.consumer_count == 0


# --------------------------------------------------------------------------
# declare / delete


def test_exchange_declare_and_delete_if_unused(conn, ch):
    x = unique("x")
    ch.exchange_declare(exchange=x, exchange_type="direct")
    ch.exchange_declare(exchange=x, exchange_type="direct")      # idempotent
    ch.exchange_declare(exchange=x, passive=True)
    qn = temp_queue(ch)
    ch.queue_bind(queue=qn, exchange=x, routing_key="k")
    expect_channel_close(406, ch.exchange_delete, exchange=x, if_unused=True)
    ch = conn.channel()
    assert exchange_exists(conn, x)
    # different type: 406
    expect_channel_close(406, ch.exchange_declare, exchange=x, exchange_type="fanout")
    ch = conn.channel()
    ch.queue_unbind(queue=qn, exchange=x, routing_key="k")
    ch.exchange_delete(exchange=x, if_unused=True)
    assert not exchange_exists(conn, x)
    ch.exchange_delete(exchange=unique("never-existed"))   # deleting a missing exchange is ok


def test_passive_declare_missing_is_404(conn):
    expect_channel_close(404, conn.channel().exchange_declare,
                         exchange=unique("missing"), passive=True)
    expect_channel_close(404, conn.channel().queue_declare,
                         queue=unique("missing"), passive=True)


def test_reserved_amq_names_are_403(conn):
    expect_channel_close(403, conn.channel().exchange_declare,
                         exchange="amq.sluice-" + unique("x"), exchange_type="direct")
    expect_channel_close(403, conn.channel().queue_declare,
                         queue="amq.sluice-" + unique("q"))


def test_queue_redeclare_with_other_flags_is_406(conn, ch, q):
    expect_channel_close(406, ch.queue_declare, queue=q, durable=True)


def test_queue_purge_and_delete_counts(conn, ch, q):
    for i in range(5):
        ch.basic_publish(exchange="", routing_key=q, body=b"p")
    wait_for(lambda: ch.queue_declare(queue=q, passive=True).method.message_count == 5, 3)
    assert ch.queue_purge(queue=q).method.message_count == 5
    assert ch.queue_declare(queue=q, passive=True).method.message_count == 0
    for i in range(3):
        ch.basic_publish(exchange="", routing_key=q, body=b"d")
    wait_for(lambda: ch.queue_declare(queue=q, passive=True).method.message_count == 3, 3)
    expect_channel_close(406, ch.queue_delete, queue=q, if_empty=True)
    ch = conn.channel()
    cch = conn.channel()
    cch.basic_consume(queue=q, on_message_callback=lambda *a: None)
    expect_channel_close(406, ch.queue_delete, queue=q, if_unused=True)
    cch.close()
    ch = conn.channel()
    # (the consumer got the 3 messages unacked; closing its channel requeued them)
    wait_for(lambda: ch.queue_declare(queue=q, passive=True).method.message_count == 3, 3)
    assert ch.queue_delete(queue=q, if_unused=True).method.message_count == 3
    assert not queue_exists(conn, q)


def test_queue_declare_ok_counts(broker, connect, ch, q):
    ok = ch.queue_declare(queue=q, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 0, 0)
    for i in range(4):
        ch.basic_publish(exchange="", routing_key=q, body=b"%d" % i)
    wait_for(lambda: ch.queue_declare(queue=q, passive=True).method.message_count == 4, 3)
    cconn = connect()
    got = []
    for _ in range(2):
        cch = cconn.channel()
        cch.basic_qos(prefetch_count=1)
        cch.basic_consume(queue=q, on_message_callback=lambda c, m, p, b: got.append(b))
    pump_until(cconn, lambda: len(got) == 2, what="2 deliveries")
    ok = wait_for(lambda: (lambda m: m if m.message_count == 2 else None)(
        ch.queue_declare(queue=q, passive=True).method), 3)
    assert ok.consumer_count == 2
    # a non-passive redeclare answers with the same counts
    ok = ch.queue_declare(queue=q).method
    assert (ok.message_count, ok.consumer_count) == (2, 2)


def test_server_named_queue(ch):
    names = {ch.queue_declare(queue="", exclusive=True).method.queue for _ in range(5)}
    assert len(names) == 5
    for n in names:
        assert n.startswith("amq.gen-"), n
        assert len(n) > len("amq.gen-") + 8
    n = names.pop()
    ch.basic_publish(exchange="", routing_key=n, body=b"to a generated name")
    # the generated name is usable like any other: passive declare works...
    wait_for(lambda: ch.queue_declare(queue=n, passive=True).method.message_count == 1, 3)
    # ...but a non-passive declare naming amq.* is refused even for an
    # existing queue (RabbitMQ 3.10: 403 "queue name 'amq.gen-...' contains
    # reserved prefix 'amq.*'")
    expect_channel_close(403, ch.queue_declare, queue=n, exclusive=True)


def test_exclusive_queue_locked_for_other_connections(broker, connect, conn, ch):
    name = unique("excl")
    ch.queue_declare(queue=name, exclusive=True)
    other = connect()
    expect_channel_close(405, other.channel().queue_declare, queue=name, passive=True)
    expect_channel_close(405, other.channel().queue_declare, queue=name, exclusive=True)
    expect_channel_close(405, other.channel().basic_consume, queue=name,
                         on_message_callback=lambda *a: None)
    expect_channel_close(405, other.channel().queue_delete, queue=name)
    # the owner still uses it
    ch.basic_publish(exchange="", routing_key=name, body=b"mine")
    wait_for(lambda: ch.queue_declare(queue=name, passive=True).method.message_count == 1, 3)


def test_exclusive_queue_gone_after_connection_closes(broker, connect):
    owner = connect()
    name = unique("excl-gone")
    owner.channel().queue_declare(queue=name, exclusive=True)
    observer = connect()
    assert _exists_or_locked(observer, name)
    owner.close()
    wait_for(lambda: not _exists_or_locked(observer, name), 5,
             what="exclusive queue deleted after its connection closed")


def _exists_or_locked(conn, name):
    ch = conn.channel()
    try:
        ch.queue_declare(queue=name, passive=True)
        ch.close()
        return True
    except ChannelClosedByBroker as e:
        if e.reply_code == 405:
            return True
        assert e.reply_code == 404, e
        return False


def test_auto_delete_queue_gone_after_last_consumer(conn, ch):
    name = unique("autodel")
    ch.queue_declare(queue=name, auto_delete=True)
    c1 = conn.channel()
    c2 = conn.channel()
    t1 = c1.basic_consume(queue=name, on_message_callback=lambda *a: None)
    t2 = c2.basic_consume(queue=name, on_message_callback=lambda *a: None)
    assert ch.queue_declare(queue=name, passive=True).method.consumer_count == 2
    c1.basic_cancel(t1)
    assert queue_exists(conn, name), "auto-delete queue deleted while a consumer remains"
    c2.basic_cancel(t2)
    wait_for(lambda: not queue_exists(conn, name), 5,
             what="auto-delete queue deleted after the last consumer cancelled")


# --------------------------------------------------------------------------
# message bodies and properties


@pytest.mark.parametrize("frame_max", [None, 4096])
def test_large_message_round_trip(broker, connect, frame_max):
    kw = {"frame_max": frame_max} if frame_max else {}
    conn = connect(**kw)
    if frame_max:
        assert conn._impl.params.frame_max == frame_max
    ch = conn.channel()
    qn = temp_queue(ch)
    body = os.urandom(1 << 20)
    ch.confirm_delivery()
    ch.basic_publish(exchange="", routing_key=qn, body=body)
    got = []
    ch.basic_consume(queue=qn, auto_ack=True,
                     on_message_callback=lambda c, m, p, b: got.append(b))
    pump_until(conn, lambda: got, what="1 MiB delivery")
    assert len(got[0]) == len(body)
    assert got[0] == body


def test_empty_body_and_all_properties(conn, ch, q):
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="gzip",
        headers={"s": "str", "i": -7, "big": 1 << 40, "f": True, "l": [1, "two"],
                 "t": {"nested": "yes"}, "b": b"bytes"},
        delivery_mode=2, priority=3, correlation_id="corr", reply_to="rq",
        expiration="60000", message_id="mid", timestamp=1700000000, type="kind",
        user_id="guest", app_id="app", cluster_id=None)
    ch.basic_publish(exchange="", routing_key=q, body=b"", properties=props)
    wait_for(lambda: ch.queue_declare(queue=q, passive=True).method.message_count == 1, 3)
    m, p, body = ch.basic_get(queue=q, auto_ack=True)
    assert body == b""
    for attr in ("content_type", "content_encoding", "delivery_mode", "priority",
                 "correlation_id", "reply_to", "expiration", "message_id",
                 "timestamp", "type", "user_id", "app_id"):
        assert getattr(p, attr) == getattr(props, attr), attr
    assert p.headers == props.headers


def test_user_id_must_match_connection_user(ch, q):
    ch.basic_publish(exchange="", routing_key=q, body=b"x",
                     properties=pika.BasicProperties(user_id="somebody-else"))
    expect_channel_close(406, ch.queue_declare, queue=q, passive=True)
