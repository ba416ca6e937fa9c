"""What a pika client notices when Sluice and RabbitMQ 3.10 differ (issue 16):
sender-selected distribution (CC, BCC), re-declaring the built-in exchanges,
unbinding from an exchange that is gone, alternate-exchange equivalence,
x-match values, quorum queues' requeue position and global qos, CR and LF
in names, the default exchange and amq.rabbitmq.trace.

Each expected reply text is RabbitMQ's; the file passes against RabbitMQ
itself (SLUICE_TEST_AMQP_PORT)."""

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from amqp_raw import QUEUE_DECLARE_OK, RawConnection, queue_declare
from conftest import started_broker, unique, wait_for


def expect_close(code, fn, *a, **kw):
    with pytest.raises(ChannelClosedByBroker) as ei:
        fn(*a, **kw)
    assert ei.value.reply_code == code, ei.value
    return ei.value.reply_text


def get_all(ch, queue):
    """Every ready message's (properties, body), in order."""
    out = []
    while True:
        method, props, body = ch.basic_get(queue=queue, auto_ack=True)
        if method is None:
            return out
        out.append((props, body))


def wait_count(ch, queue, n):
    wait_for(lambda: ch.queue_declare(queue=queue, passive=True).method.message_count == n,
             what="%d messages in %s" % (n, queue))


# --------------------------------------------------------------------------
# 1. sender-selected distribution


def test_cc_and_bcc_deliver_copies_and_bcc_is_not_seen(connect):
    ch = connect().channel()
    to, cc, bcc = unique("to"), unique("cc"), unique("bcc")
    for q in (to, cc, bcc):
        ch.queue_declare(queue=q, exclusive=True)
        ch.queue_bind(queue=q, exchange="amq.direct", routing_key=q)
    ch.basic_publish(exchange="amq.direct", routing_key=to, body=b"m",
                     properties=pika.BasicProperties(headers={"CC": [cc], "BCC": [bcc], "k": "v"}))
    for q in (to, cc, bcc):
        wait_count(ch, q, 1)
        [(props, body)] = get_all(ch, q)
        assert body == b"m"
        assert "BCC" not in props.headers, "the hidden recipients leaked to %s" % q
        assert props.headers["CC"] == [cc]
        assert props.headers["k"] == "v"


def test_dead_letters_keep_the_cc_and_bcc_routes(connect):
    ch = connect().channel()
    src, cc, bcc = unique("src"), unique("dl-cc"), unique("dl-bcc")
    cc_key, bcc_key = unique("cc-key"), unique("bcc-key")  # no queue has these names
    ch.queue_declare(queue=src, exclusive=True, arguments={"x-dead-letter-exchange": "amq.direct"})
    for q, key in ((cc, cc_key), (bcc, bcc_key)):
        ch.queue_declare(queue=q, exclusive=True)
        ch.queue_bind(queue=q, exchange="amq.direct", routing_key=key)
    # Through the default exchange, where the CC and BCC keys name no queue.
    ch.basic_publish(exchange="", routing_key=src, body=b"m",
                     properties=pika.BasicProperties(headers={"CC": [cc_key], "BCC": [bcc_key]}))
    wait_count(ch, src, 1)
    method, _, _ = ch.basic_get(queue=src, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    for q in (cc, bcc):
        wait_count(ch, q, 1)
        [(props, _)] = get_all(ch, q)
        assert "BCC" not in props.headers
        assert props.headers["x-death"][0]["routing-keys"] == [src, cc_key]


def test_cc_that_is_not_an_array_is_refused(connect):
    c = connect()
    ch = c.channel()
    q = unique("q")
    ch.queue_declare(queue=q)
    ch.basic_publish(exchange="", routing_key=q, body=b"m",
                     properties=pika.BasicProperties(headers={"CC": "someone"}))
    text = expect_close(406, ch.queue_declare, queue=q, passive=True)
    assert text == 'PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,"CC",longstr}'
    c.channel().queue_delete(queue=q)


# --------------------------------------------------------------------------
# 2-5. exchanges and bindings


def test_builtin_exchanges_may_be_declared_as_they_are(connect):
    ch = connect().channel()
    for name, kind in (("amq.direct", "direct"), ("amq.fanout", "fanout"),
                       ("amq.topic", "topic"), ("amq.headers", "headers")):
        ch.exchange_declare(exchange=name, exchange_type=kind, durable=True)
    text = expect_close(406, ch.exchange_declare, exchange="amq.direct", exchange_type="topic", durable=True)
    assert text == ("PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in vhost '/': "
                    "received 'topic' but current is 'direct'")


def test_unbind_from_a_missing_exchange_is_ok(connect):
    ch = connect().channel()
    q = unique("q")
    ch.queue_declare(queue=q, exclusive=True)
    ch.queue_unbind(queue=q, exchange=unique("gone"), routing_key="k")
    ch.queue_unbind(queue=q, exchange=unique("gone"), routing_key="k")  # teardown repeats itself
    assert ch.is_open


def test_redeclare_with_another_alternate_exchange_is_406(connect):
    ch = connect().channel()
    x = unique("x")
    ch.exchange_declare(exchange=x, exchange_type="direct", auto_delete=True,
                        arguments={"alternate-exchange": "ae1"})
    try:
        ch.exchange_declare(exchange=x, exchange_type="direct", auto_delete=True,
                            arguments={"alternate-exchange": "ae1"})
        text = expect_close(406, ch.exchange_declare, exchange=x, exchange_type="direct", auto_delete=True,
                            arguments={"alternate-exchange": "ae2"})
        assert text == ("PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '%s' "
                        "in vhost '/': received 'ae2' but current is 'ae1'" % x)
    finally:
        connect().channel().exchange_delete(exchange=x)


def test_headers_binding_with_an_unknown_x_match_is_406(connect):
    ch = connect().channel()
    q = unique("q")
    ch.queue_declare(queue=q)
    try:
        ch.queue_bind(queue=q, exchange="amq.headers", arguments={"x-match": "any-with-x", "a": 1})
        text = expect_close(406, ch.queue_bind, queue=q, exchange="amq.headers",
                            arguments={"x-match": "some", "a": 1})
        assert text == ('PRECONDITION_FAILED - Invalid x-match field value <<"some">>; '
                        'expected all, any, all-with-x, or any-with-x')
    finally:
        connect().channel().queue_delete(queue=q)


# --------------------------------------------------------------------------
# 6. quorum queues


def test_quorum_queue_requeues_at_the_back(connect):
    ch = connect().channel()
    q = unique("qq")
    ch.queue_declare(queue=q, durable=True, arguments={"x-queue-type": "quorum"})
    try:
        for body in (b"1", b"2", b"3"):
            ch.basic_publish(exchange="", routing_key=q, body=body)
        wait_count(ch, q, 3)
        method, _, body = ch.basic_get(queue=q, auto_ack=False)
        assert body == b"1"
        ch.basic_nack(method.delivery_tag, requeue=True)
        wait_count(ch, q, 3)
        assert [b for _, b in get_all(ch, q)] == [b"2", b"3", b"1"]
    finally:
        ch.queue_delete(queue=q)


@pytest.mark.deadline(60)
def test_quorum_requeue_position_survives_a_restart(fresh_broker):
    # The requeued message moved to a new place in the store: after kill -9
    # it is there once, behind the others, and nothing else is lost.
    c = fresh_broker.pika()
    ch = c.channel()
    ch.confirm_delivery()
    q = "qq.durable"
    ch.queue_declare(queue=q, durable=True, arguments={"x-queue-type": "quorum"})
    for body in (b"1", b"2", b"3"):
        ch.basic_publish(exchange="", routing_key=q, body=body,
                         properties=pika.BasicProperties(delivery_mode=2))
    method, _, body = ch.basic_get(queue=q, auto_ack=False)
    assert body == b"1"
    ch.basic_nack(method.delivery_tag, requeue=True)
    ch.queue_declare(queue=q, durable=True, arguments={"x-queue-type": "quorum"})  # answered once synced
    fresh_broker.kill9()
    fresh_broker.start()
    ch = fresh_broker.pika().channel()
    assert [b for _, b in get_all(ch, q)] == [b"2", b"3", b"1"]


@pytest.mark.deadline(60)
def test_quorum_requeue_joins_a_paged_tail(broker):
    if broker.external:
        pytest.skip("needs a sluiced started with a small in-memory head")
    # Only 4 messages in memory: the rest of the queue is in the store, and
    # the requeued message must come after all of it.
    with started_broker(["--queue-memory-messages", "4"]) as b:
        ch = b.pika().channel()
        ch.confirm_delivery()
        q = "qq.paged"
        ch.queue_declare(queue=q, durable=True, arguments={"x-queue-type": "quorum"})
        sent = [b"%d" % i for i in range(50)]
        for body in sent:
            ch.basic_publish(exchange="", routing_key=q, body=body,
                             properties=pika.BasicProperties(delivery_mode=2 if int(body) % 2 else 1))
        method, _, body = ch.basic_get(queue=q, auto_ack=False)
        assert body == b"0"
        ch.basic_nack(method.delivery_tag, requeue=True)
        assert [m for _, m in get_all(ch, q)] == sent[1:] + [b"0"]


def test_classic_queue_requeues_in_place(connect):
    ch = connect().channel()
    q = unique("cq")
    ch.queue_declare(queue=q, exclusive=True)
    for body in (b"1", b"2", b"3"):
        ch.basic_publish(exchange="", routing_key=q, body=body)
    wait_count(ch, q, 3)
    method, _, _ = ch.basic_get(queue=q, auto_ack=False)
    ch.basic_nack(method.delivery_tag, requeue=True)
    wait_count(ch, q, 3)
    assert [b for _, b in get_all(ch, q)] == [b"1", b"2", b"3"]


def test_quorum_queue_refuses_a_consumer_under_global_qos(connect):
    q = unique("qq")
    setup = connect().channel()
    setup.queue_declare(queue=q, durable=True, arguments={"x-queue-type": "quorum"})
    try:
        c = connect()
        ch = c.channel()
        ch.basic_qos(prefetch_count=10, global_qos=True)
        with pytest.raises(ConnectionClosedByBroker) as ei:
            ch.basic_consume(queue=q, on_message_callback=lambda *a: None)
            c.process_data_events(1)
        assert ei.value.reply_code == 540
        assert ei.value.reply_text == "NOT_IMPLEMENTED - queue '%s' in vhost '/' does not support global qos" % q
    finally:
        connect().channel().queue_delete(queue=q)


# --------------------------------------------------------------------------
# 8, 10. names, the default exchange, amq.rabbitmq.trace


def test_cr_and_lf_are_stripped_from_queue_names(broker, connect):
    # Raw frames: pika waits for a declare-ok naming the queue exactly as
    # asked, which neither RabbitMQ nor Sluice sends here.
    base = unique("crlf")
    with RawConnection(broker.host, broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(queue_declare(1, base[:4] + "\r\n" + base[4:] + "\n", exclusive=True))
        assert c.expect_method(QUEUE_DECLARE_OK).args().shortstr() == base
        c.send(queue_declare(1, base, passive=True))
        assert c.expect_method(QUEUE_DECLARE_OK).args().shortstr() == base


def test_passive_declare_of_the_default_exchange_is_403(connect):
    ch = connect().channel()
    text = expect_close(403, ch.exchange_declare, exchange="", passive=True)
    assert text == "ACCESS_REFUSED - operation not permitted on the default exchange"


def test_trace_exchange_exists_and_refuses_publishes(connect):
    c = connect()
    ch = c.channel()
    ch.exchange_declare(exchange="amq.rabbitmq.trace", passive=True)
    ch.basic_publish(exchange="amq.rabbitmq.trace", routing_key="publish.x", body=b"m")
    text = expect_close(403, ch.exchange_declare, exchange="amq.rabbitmq.trace", passive=True)
    assert text == "ACCESS_REFUSED - cannot publish to internal exchange 'amq.rabbitmq.trace' in vhost '/'"
