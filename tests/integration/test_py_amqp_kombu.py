"""py-amqp (the client under kombu and Celery) and kombu itself."""

import socket

import amqp
import kombu
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from conftest import CLIENT_TIMEOUT, unique, wait_for


@pytest.fixture
def amqp_conn(broker):
    c = amqp.Connection(host="%s:%d" % (broker.host, broker.port), userid="guest",
                        password="guest", virtual_host="/",
                        connect_timeout=CLIENT_TIMEOUT, read_timeout=CLIENT_TIMEOUT,
                        write_timeout=CLIENT_TIMEOUT, confirm_publish=False)
    c.connect()
    yield c
    try:
        c.close()
    except Exception:
        pass


def kombu_url(broker):
    return "amqp://guest:guest@%s:%d//" % (broker.host, broker.port)


def test_py_amqp_publish_get_ack(amqp_conn):
    assert amqp_conn.connected
    ch = amqp_conn.channel()
    name = unique("pyamqp")
    qname, count, consumers = ch.queue_declare(name, durable=False, auto_delete=False)
    assert (qname, count, consumers) == (name, 0, 0)
    for i in range(5):
        ch.basic_publish(amqp.Message("hello %d" % i, content_type="text/plain",
                                      application_headers={"n": i}),
                         exchange="", routing_key=name)
    wait_for(lambda: ch.queue_declare(name, passive=True).message_count == 5, 3)
    msg = ch.basic_get(name, no_ack=False)
    # py-amqp sent a str body as utf-8 and decodes it again on the way in
    assert msg.body == "hello 0"
    assert msg.content_type == "text/plain" and msg.content_encoding == "utf-8"
    assert msg.headers == {"n": 0}
    assert msg.delivery_info["message_count"] == 4
    assert msg.delivery_info["redelivered"] is False
    ch.basic_ack(msg.delivery_tag)
    # reject+requeue, then it comes back first and redelivered
    msg = ch.basic_get(name, no_ack=False)
    ch.basic_reject(msg.delivery_tag, requeue=True)
    again = ch.basic_get(name, no_ack=False)
    assert again.body == "hello 1" and again.delivery_info["redelivered"] is True
    ch.basic_ack(again.delivery_tag)
    assert ch.queue_purge(name) == 3
    assert ch.basic_get(name) is None
    assert ch.queue_delete(name) == 0


def test_py_amqp_consume_and_confirm(broker):
    c = amqp.Connection(host="%s:%d" % (broker.host, broker.port), userid="guest",
                        password="guest", connect_timeout=CLIENT_TIMEOUT,
                        read_timeout=CLIENT_TIMEOUT, write_timeout=CLIENT_TIMEOUT,
                        confirm_publish=True)
    c.connect()
    try:
        ch = c.channel()
        name = ch.queue_declare("", exclusive=True).queue
        assert name.startswith("amq.gen-")
        for i in range(20):
            ch.basic_publish(amqp.Message(b"m%d" % i), exchange="", routing_key=name)
        got = []
        ch.basic_consume(name, callback=lambda m: (got.append(m.body), m.channel.basic_ack(m.delivery_tag)))
        while len(got) < 20:
            c.drain_events(timeout=CLIENT_TIMEOUT)
        assert got == [b"m%d" % i for i in range(20)]
    finally:
        c.close()


def test_kombu_producer_consumer_round_trip(broker):
    exchange = Exchange(unique("kombu.x"), type="direct", durable=False, auto_delete=True)
    queue = Queue(unique("kombu.q"), exchange, routing_key="jobs", durable=False,
                  auto_delete=True)
    with Connection(kombu_url(broker), connect_timeout=CLIENT_TIMEOUT) as conn:
        conn.ensure_connection(max_retries=1)
        with conn.channel() as pch:
            producer = Producer(pch, exchange=exchange, routing_key="jobs")
            # declare the queue first so nothing is unroutable
            queue(pch).declare()
            payloads = [{"id": i, "name": "job-%d" % i, "tags": ["a", "b"]} for i in range(10)]
            for p in payloads:
                producer.publish(p, serializer="json", retry=False,
                                 headers={"h": p["id"]})
        received = []

        def on_message(body, message):
            received.append((body, message.headers.get("h"),
                             message.content_type, message.delivery_info["routing_key"]))
            message.ack()

        with conn.channel() as cch:
            with Consumer(cch, queues=[queue], callbacks=[on_message], accept=["json"]):
                while len(received) < len(payloads):
                    conn.drain_events(timeout=CLIENT_TIMEOUT)
        assert [r[0] for r in received] == payloads
        assert [r[1] for r in received] == list(range(10))
        assert {r[2] for r in received} == {"application/json"}
        assert {r[3] for r in received} == {"jobs"}


def test_kombu_simple_queue(broker):
    name = unique("kombu.simple")
    with Connection(kombu_url(broker), connect_timeout=CLIENT_TIMEOUT) as conn:
        sq = conn.SimpleQueue(name)
        try:
            for i in range(5):
                sq.put({"n": i, "text": "héllo"})
            assert wait_for(lambda: sq.qsize() == 5, 3, what="qsize 5")
            first = sq.get(block=True, timeout=CLIENT_TIMEOUT)
            assert first.payload == {"n": 0, "text": "héllo"}
            first.ack()
            second = sq.get(block=True, timeout=CLIENT_TIMEOUT)
            second.requeue()
            rest = []
            for _ in range(4):
                m = sq.get(block=True, timeout=CLIENT_TIMEOUT)
                rest.append(m.payload["n"])
                m.ack()
            assert sorted(rest) == [1, 2, 3, 4]
            with pytest.raises(sq.Empty):
                sq.get(block=True, timeout=0.3)
        finally:
            sq.close()
            with conn.channel() as c:
                c.queue_delete(name)


def test_kombu_simple_buffer_and_ensure(broker):
    """SimpleBuffer is no-ack and transient; ensure() runs a publish through
    kombu's retry wrapper, as Celery does."""
    name = unique("kombu.buffer")
    with Connection(kombu_url(broker), connect_timeout=CLIENT_TIMEOUT) as conn:
        buf = conn.SimpleBuffer(name)
        try:
            publish = conn.ensure(buf.producer, buf.producer.publish, max_retries=1)
            publish({"x": 1}, routing_key=name, exchange=buf.queue.exchange,
                    declare=[buf.queue], serializer="json")
            m = buf.get(block=True, timeout=CLIENT_TIMEOUT)
            assert m.payload == {"x": 1}
        finally:
            buf.close()
            with conn.channel() as c:
                c.queue_delete(name)
