"""RabbitMQ's optional queue features, driven with pika: message and queue
TTLs, dead-lettering (x-death as RabbitMQ writes it, cycles), length limits
and their overflow modes, priority queues, single active consumer, the
delivery limit of quorum queues, alternate exchanges, argument validation,
and the durable ones across a kill -9.

Written from RabbitMQ's guides: "Time-To-Live and Expiration", "Dead Letter
Exchanges", "Queue Length Limit", "Priority Queue Support", "Consumers"
(single active consumer), "Quorum Queues" (poison message handling) and
"Alternate Exchanges"."""

import datetime
import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, NackError

from conftest import unique, wait_for

# --------------------------------------------------------------------------
# helpers


def count(conn, queue):
    """Ready messages, by a passive declare on a throwaway channel."""
    ch = conn.channel()
    n = ch.queue_declare(queue=queue, passive=True).method.message_count
    ch.close()
    return n


def exists(conn, queue):
    """Probes with queue.bind, which (unlike a declare, passive or not, or a
    basic.get) does not count as using the queue for x-expires."""
    ch = conn.channel()
    try:
        ch.queue_bind(queue=queue, exchange="amq.fanout")
    except ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    ch.close()
    return True


def get(ch, queue, auto_ack=True):
    """basic.get; (method, properties, body) or None when empty."""
    method, props, body = ch.basic_get(queue=queue, auto_ack=auto_ack)
    return None if method is None else (method, props, body)


def wait_get(ch, queue, timeout=5.0):
    return wait_for(lambda: get(ch, queue), timeout=timeout, what="a message in %s" % queue)


def bodies(ch, queue):
    out = []
    while True:
        m = get(ch, queue)
        if m is None:
            return out
        out.append(m[2])


def expect_close(code, fn, *a, **kw):
    with pytest.raises(ChannelClosedByBroker) as ei:
        fn(*a, **kw)
    assert ei.value.reply_code == code, ei.value
    return ei.value.reply_text


def dlx_pair(ch, **queue_args):
    """A queue whose dead letters go through the default exchange to a
    second queue; returns (queue, dead letter queue)."""
    q, dlq = unique("src"), unique("dlq")
    ch.queue_declare(queue=dlq)
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
    args.update(queue_args)
    ch.queue_declare(queue=q, arguments=args)
    return q, dlq


def publish(ch, queue, body, exchange="", **props):
    ch.basic_publish(exchange=exchange, routing_key=queue, body=body,
                     properties=pika.BasicProperties(**props))


# --------------------------------------------------------------------------
# TTL


def test_queue_ttl_expires_messages_without_consumers(connect):
    c = connect()
    ch = c.channel()
    q = unique("ttl")
    ch.queue_declare(queue=q, arguments={"x-message-ttl": 150})
    for i in range(3):
        publish(ch, q, b"m%d" % i)
    assert count(c, q) == 3
    wait_for(lambda: count(c, q) == 0, what="the queue TTL to empty the queue")
    assert get(ch, q) is None


def test_per_message_expiration_and_queue_ttl_take_the_lower(connect):
    c = connect()
    ch = c.channel()
    q = unique("ttl")
    ch.queue_declare(queue=q, arguments={"x-message-ttl": 60000})
    publish(ch, q, b"short", expiration="100")
    publish(ch, q, b"long", expiration="600000")
    wait_for(lambda: count(c, q) == 1, what="the 100 ms message to expire")
    assert bodies(ch, q) == [b"long"]


def test_ttl_zero_reaches_a_waiting_consumer_and_is_dropped_otherwise(connect):
    c = connect()
    ch = c.channel()
    q = unique("ttl0")
    ch.queue_declare(queue=q)
    publish(ch, q, b"nobody", expiration="0")
    assert count(c, q) == 0, "a TTL-0 message with no consumer expires at once"
    got = []
    ch.basic_consume(queue=q, on_message_callback=lambda c_, m, p, b: got.append(b), auto_ack=True)
    publish(ch, q, b"someone", expiration="0")
    wait_for(lambda: (c.process_data_events(0.05), got)[1], what="the TTL-0 delivery")
    assert got == [b"someone"]


def test_expired_message_is_never_delivered_by_get(connect):
    c = connect()
    ch = c.channel()
    q = unique("ttl")
    ch.queue_declare(queue=q)
    publish(ch, q, b"old", expiration="50")
    publish(ch, q, b"new")
    time.sleep(0.1)  # the expiry itself is the subject here, not a synchronisation
    assert bodies(ch, q) == [b"new"]


def test_invalid_expiration_property_is_406(connect):
    ch = connect().channel()
    q = unique("ttl")
    ch.queue_declare(queue=q)
    text = expect_close(406, lambda: (publish(ch, q, b"x", expiration="soon"),
                                      ch.queue_declare(queue=q, passive=True)))
    assert "invalid expiration" in text


def test_queue_expires_when_unused(connect):
    c = connect()
    ch = c.channel()
    q = unique("exp")
    ch.queue_declare(queue=q, arguments={"x-expires": 200})
    assert exists(c, q)
    wait_for(lambda: not exists(c, q), what="x-expires to delete the queue")


def test_queue_with_consumer_does_not_expire_until_it_leaves(connect):
    c = connect()
    ch = c.channel()
    q = unique("exp")
    ch.queue_declare(queue=q, arguments={"x-expires": 200})
    tag = ch.basic_consume(queue=q, on_message_callback=lambda *a: None)
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # three expiry periods with a consumer
        assert exists(c, q)
        c.process_data_events(0.05)
    ch.basic_cancel(tag)
    wait_for(lambda: not exists(c, q), what="x-expires after the consumer left")


# --------------------------------------------------------------------------
# dead-lettering


def test_expired_message_is_dead_lettered_with_x_death(connect):
    c = connect()
    ch = c.channel()
    q, dlq = dlx_pair(ch, **{"x-message-ttl": 50})
    publish(ch, q, b"late", headers={"app": "kept"}, correlation_id="c1", delivery_mode=2)
    method, props, body = wait_get(ch, dlq)
    assert body == b"late"
    assert method.routing_key == dlq
    assert props.correlation_id == "c1" and props.delivery_mode == 2
    h = props.headers
    assert h["app"] == "kept"
    assert h["x-first-death-reason"] == "expired"
    assert h["x-first-death-queue"] == q
    assert h["x-first-death-exchange"] == ""
    (death,) = h["x-death"]
    assert death["count"] == 1
    assert death["reason"] == "expired"
    assert death["queue"] == q
    assert death["exchange"] == ""
    assert death["routing-keys"] == [q]
    assert isinstance(death["time"], datetime.datetime)
    assert "original-expiration" not in death


def test_per_message_expiry_dead_letter_keeps_original_expiration(connect):
    c = connect()
    ch = c.channel()
    q, dlq = dlx_pair(ch)
    publish(ch, q, b"x", expiration="40")
    _, props, _ = wait_get(ch, dlq)
    assert props.expiration is None, "the dead letter must not expire again"
    assert props.headers["x-death"][0]["original-expiration"] == "40"


def test_reject_and_nack_dead_letter_through_a_topic_exchange(connect):
    c = connect()
    ch = c.channel()
    dlx, dlq, q = unique("dlx"), unique("dlq"), unique("job")
    ch.exchange_declare(exchange=dlx, exchange_type="topic")
    ch.queue_declare(queue=dlq)
    ch.queue_bind(queue=dlq, exchange=dlx, routing_key="work.#")
    ch.queue_declare(queue=q, arguments={"x-dead-letter-exchange": dlx})
    publish(ch, q, b"a")
    publish(ch, q, b"b")
    publish(ch, q, b"c")
    m1, _, _ = get(ch, q, auto_ack=False)
    ch.basic_reject(m1.delivery_tag, requeue=False)
    m2, _, _ = get(ch, q, auto_ack=False)
    ch.basic_nack(m2.delivery_tag, requeue=False)
    m3, _, _ = get(ch, q, auto_ack=False)
    ch.basic_nack(m3.delivery_tag, requeue=True)  # requeued: not dead-lettered
    assert count(c, q) == 1
    # The dead letters kept their routing key ("job.…"), which the binding
    # "work.#" does not match: dropped.
    assert count(c, dlq) == 0
    # With x-dead-letter-routing-key they are routed by that key instead.
    q2 = unique("job")
    ch.queue_declare(queue=q2, arguments={"x-dead-letter-exchange": dlx,
                                          "x-dead-letter-routing-key": "work.failed"})
    publish(ch, q2, b"d")
    m4, _, _ = get(ch, q2, auto_ack=False)
    ch.basic_reject(m4.delivery_tag, requeue=False)
    method, props, body = wait_get(ch, dlq)
    assert body == b"d" and method.routing_key == "work.failed" and method.exchange == dlx
    death = props.headers["x-death"][0]
    assert death["reason"] == "rejected" and death["queue"] == q2 and death["routing-keys"] == [q2]


def test_rejected_cycle_counts_up(connect):
    c = connect()
    ch = c.channel()
    q = unique("loop")
    ch.queue_declare(queue=q, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q})
    publish(ch, q, b"again")
    for n in (1, 2, 3):
        m, props, _ = wait_for(lambda: get(ch, q, auto_ack=False), what="delivery %d" % n)
        if n > 1:
            (death,) = props.headers["x-death"]
            assert death["count"] == n - 1 and death["reason"] == "rejected" and death["queue"] == q
        ch.basic_reject(m.delivery_tag, requeue=False)


def test_automatic_dead_letter_cycle_is_dropped(connect):
    c = connect()
    ch = c.channel()
    dlx, q, other = unique("dlx"), unique("cyc"), unique("other")
    ch.exchange_declare(exchange=dlx, exchange_type="fanout")
    ch.queue_declare(queue=q, arguments={"x-dead-letter-exchange": dlx, "x-message-ttl": 30})
    ch.queue_declare(queue=other)
    ch.queue_bind(queue=q, exchange=dlx)
    ch.queue_bind(queue=other, exchange=dlx)
    publish(ch, q, b"x")
    _, props, _ = wait_get(ch, other)
    assert props.headers["x-death"][0]["queue"] == q
    # The copy routed back into q would expire in q again: RabbitMQ drops it.
    assert count(c, q) == 0


def test_missing_dead_letter_exchange_drops_the_message(connect):
    c = connect()
    ch = c.channel()
    q = unique("nodlx")
    ch.queue_declare(queue=q, arguments={"x-dead-letter-exchange": unique("absent")})
    publish(ch, q, b"x")
    m, _, _ = get(ch, q, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert count(c, q) == 0
    assert ch.is_open


# --------------------------------------------------------------------------
# length limits


def test_max_length_drops_head_and_dead_letters_it(connect):
    c = connect()
    ch = c.channel()
    q, dlq = dlx_pair(ch, **{"x-max-length": 2})
    for i in range(1, 6):
        publish(ch, q, b"%d" % i)
    assert count(c, q) == 2
    assert bodies(ch, q) == [b"4", b"5"]
    dropped = []
    for _ in range(3):
        _, props, body = wait_get(ch, dlq)
        assert props.headers["x-death"][0]["reason"] == "maxlen"
        dropped.append(body)
    assert dropped == [b"1", b"2", b"3"]


def test_max_length_bytes_counts_bodies(connect):
    c = connect()
    ch = c.channel()
    q = unique("bytes")
    ch.queue_declare(queue=q, arguments={"x-max-length-bytes": 10})
    for body in (b"aaaa", b"bbbb", b"cccc"):  # 12 bytes: the oldest goes
        publish(ch, q, body)
    assert bodies(ch, q) == [b"bbbb", b"cccc"]


def test_max_length_zero_still_delivers_to_a_waiting_consumer(connect):
    c = connect()
    ch = c.channel()
    q = unique("zero")
    ch.queue_declare(queue=q, arguments={"x-max-length": 0})
    publish(ch, q, b"lost")
    assert count(c, q) == 0
    got = []
    ch.basic_consume(queue=q, on_message_callback=lambda c_, m, p, b: got.append(b), auto_ack=True)
    publish(ch, q, b"taken")
    wait_for(lambda: (c.process_data_events(0.05), got)[1], what="the delivery")
    assert got == [b"taken"]


def test_reject_publish_nacks_the_publisher_and_keeps_the_queue(connect):
    c = connect()
    ch = c.channel()
    ch.confirm_delivery()
    q = unique("full")
    ch.queue_declare(queue=q, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    publish(ch, q, b"1")
    publish(ch, q, b"2")
    with pytest.raises(NackError):
        publish(ch, q, b"3")
    assert count(c, q) == 2
    assert bodies(ch, q) == [b"1", b"2"]
    publish(ch, q, b"4")  # room again: acked
    assert bodies(ch, q) == [b"4"]


def test_reject_publish_dlx_nacks_and_dead_letters(connect):
    c = connect()
    ch = c.channel()
    ch.confirm_delivery()
    q, dlq = dlx_pair(ch, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"})
    publish(ch, q, b"kept")
    with pytest.raises(NackError):
        publish(ch, q, b"refused")
    _, props, body = wait_get(ch, dlq)
    assert body == b"refused" and props.headers["x-death"][0]["reason"] == "maxlen"
    assert bodies(ch, q) == [b"kept"]


def test_reject_publish_without_confirms_drops_silently(connect):
    c = connect()
    ch = c.channel()
    q = unique("full")
    ch.queue_declare(queue=q, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    publish(ch, q, b"1")
    publish(ch, q, b"2")
    assert bodies(ch, q) == [b"1"]
    assert ch.is_open


# --------------------------------------------------------------------------
# priorities


def test_priority_queue_serves_highest_first_fifo_within(connect):
    c = connect()
    ch = c.channel()
    q = unique("prio")
    ch.queue_declare(queue=q, arguments={"x-max-priority": 5})
    for body, prio in ((b"low1", 1), (b"none", None), (b"high1", 5), (b"mid", 3),
                       (b"high2", 5), (b"over", 9), (b"low2", 1)):
        publish(ch, q, body, priority=prio)
    # Priorities above the maximum count as the maximum; none counts as 0.
    assert bodies(ch, q) == [b"high1", b"high2", b"over", b"mid", b"low1", b"low2", b"none"]


def test_priority_with_prefetch_orders_what_is_still_queued(connect):
    c = connect()
    ch = c.channel()
    q = unique("prio")
    ch.queue_declare(queue=q, arguments={"x-max-priority": 10})
    ch.basic_qos(prefetch_count=1)
    got = []

    def on_msg(chan, method, props, body):
        got.append(body)  # acked by the test, one at a time

    publish(ch, q, b"first", priority=1)
    ch.basic_consume(queue=q, on_message_callback=on_msg)
    wait_for(lambda: (c.process_data_events(0.02), got)[1], what="the first delivery")
    # While "first" is unacked, the rest queue up and are reordered.
    for body, prio in ((b"p1", 1), (b"p9", 9), (b"p5", 5)):
        publish(ch, q, body, priority=prio)
    assert count(c, q) == 3
    for n in range(1, 4):
        ch.basic_ack(delivery_tag=n)  # frees the window for the next one
        wait_for(lambda: (c.process_data_events(0.02), len(got) > n)[1], what="delivery %d" % (n + 1))
    assert got == [b"first", b"p9", b"p5", b"p1"]


def test_priority_queue_requeue_goes_back_to_its_priority(connect):
    c = connect()
    ch = c.channel()
    q = unique("prio")
    ch.queue_declare(queue=q, arguments={"x-max-priority": 10})
    publish(ch, q, b"hi", priority=8)
    publish(ch, q, b"lo", priority=2)
    m, _, body = get(ch, q, auto_ack=False)
    assert body == b"hi"
    ch.basic_nack(m.delivery_tag, requeue=True)
    assert bodies(ch, q) == [b"hi", b"lo"]


def test_max_priority_above_255_is_406(connect):
    ch = connect().channel()
    text = expect_close(406, ch.queue_declare, queue=unique("prio"), arguments={"x-max-priority": 300})
    assert "x-max-priority" in text


# --------------------------------------------------------------------------
# single active consumer


CRASHING_CONSUMER = r"""
import sys, pika
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
ch = c.channel()
ch.basic_qos(prefetch_count=2)
got = []
def on_msg(chan, m, p, b):
    got.append(b)
    if len(got) == 2:
        print(b",".join(got).decode(), flush=True)   # then wait to be killed
ch.basic_consume(queue=sys.argv[2], on_message_callback=on_msg)
ch.start_consuming()
"""


def test_single_active_consumer_fails_over_in_order(connect, broker):
    import subprocess
    import sys
    c = connect()
    ch = c.channel()
    q = unique("sac")
    ch.queue_declare(queue=q, arguments={"x-single-active-consumer": True})
    # The active consumer is another process, which will crash with two unacked.
    first = subprocess.Popen([sys.executable, "-c", CRASHING_CONSUMER, broker.url, q],
                             stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: count(c, q) == 0 and ch.queue_declare(queue=q, passive=True).method.consumer_count == 1,
                 what="the first consumer to attach")
        got = {"b": [], "c": []}
        for name in ("b", "c"):
            cx = c.channel()
            cx.basic_qos(prefetch_count=10)
            cx.basic_consume(queue=q, consumer_tag=name,
                             on_message_callback=lambda chan, m, p, b, n=name: got[n].append((b, m.redelivered)))
        for i in range(5):
            publish(ch, q, b"%d" % i)
        assert first.stdout.readline().strip() == "0,1"
        c.process_data_events(0.1)
        assert got == {"b": [], "c": []}, "only the active consumer gets messages"
        first.kill()
    finally:
        first.kill()
        first.wait()
    # b, the next in line, takes over: the crashed consumer's unacked
    # messages come back to their places, so b gets everything in order.
    wait_for(lambda: (c.process_data_events(0.02), len(got["b"]) == 5)[1], what="b taking over")
    assert got["b"] == [(b"0", True), (b"1", True), (b"2", False), (b"3", False), (b"4", False)]
    assert got["c"] == []


def test_single_active_consumer_cancel_hands_over_to_the_next(connect):
    c = connect()
    ch = c.channel()
    q = unique("sac")
    ch.queue_declare(queue=q, arguments={"x-single-active-consumer": True})
    got = []
    tag_a = ch.basic_consume(queue=q, on_message_callback=lambda chan, m, p, b: got.append(("a", b)), auto_ack=True)
    ch.basic_consume(queue=q, on_message_callback=lambda chan, m, p, b: got.append(("b", b)), auto_ack=True)
    publish(ch, q, b"1")
    wait_for(lambda: (c.process_data_events(0.02), got)[1], what="a delivery")
    ch.basic_cancel(tag_a)
    publish(ch, q, b"2")
    wait_for(lambda: (c.process_data_events(0.02), len(got) == 2)[1], what="the next delivery")
    assert got == [("a", b"1"), ("b", b"2")]


# --------------------------------------------------------------------------
# queue types and the delivery limit


def test_quorum_delivery_limit_dead_letters_poison_message(connect):
    c = connect()
    ch = c.channel()
    q, dlq = unique("qq"), unique("poison")
    ch.queue_declare(queue=dlq)
    ch.queue_declare(queue=q, durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 2,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    publish(ch, q, b"poison")
    counts = []
    for _ in range(3):  # delivered, returned twice: still under the limit
        m, props, _ = wait_for(lambda: get(ch, q, auto_ack=False), what="a delivery")
        counts.append((props.headers or {}).get("x-delivery-count"))
        ch.basic_nack(m.delivery_tag, requeue=True)
    assert counts == [0, 1, 2]
    _, props, body = wait_get(ch, dlq)
    assert body == b"poison"
    assert props.headers["x-death"][0]["reason"] == "delivery_limit"
    assert count(c, q) == 0
    ch.queue_delete(queue=q)


def test_stream_queues_follow_quorum_declare_rules(connect, broker):
    # (Streams themselves: test_streams.py.)
    ch = connect().channel()
    text = expect_close(406, ch.queue_declare, queue=unique("sq"), durable=False,
                        arguments={"x-queue-type": "stream"})
    assert "non-durable" in text


def test_queue_types(connect):
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=unique("cq"), arguments={"x-queue-type": "classic"})
    text = expect_close(406, ch.queue_declare, queue=unique("qq"), durable=False,
                        arguments={"x-queue-type": "quorum"})
    assert "non-durable" in text
    ch = c.channel()
    q = unique("qq")
    ch.queue_declare(queue=q, durable=True, arguments={"x-queue-type": "quorum"})
    text = expect_close(406, ch.queue_declare, queue=q, durable=True)
    assert "x-queue-type" in text
    c.channel().queue_delete(queue=q)


# --------------------------------------------------------------------------
# alternate exchanges, consume arguments, validation


def test_alternate_exchange_takes_unroutable_messages(connect):
    c = connect()
    ch = c.channel()
    ch.confirm_delivery()
    main, ae, q_main, q_ae = unique("main"), unique("ae"), unique("routed"), unique("unrouted")
    ch.exchange_declare(exchange=ae, exchange_type="fanout")
    ch.exchange_declare(exchange=main, exchange_type="direct", arguments={"alternate-exchange": ae})
    ch.queue_declare(queue=q_main)
    ch.queue_declare(queue=q_ae)
    ch.queue_bind(queue=q_main, exchange=main, routing_key="known")
    ch.queue_bind(queue=q_ae, exchange=ae)
    ch.basic_publish(exchange=main, routing_key="known", body=b"k", mandatory=True)
    ch.basic_publish(exchange=main, routing_key="unknown", body=b"u", mandatory=True)  # no return
    assert bodies(ch, q_main) == [b"k"]
    assert bodies(ch, q_ae) == [b"u"]


def test_alternate_exchange_loop_terminates(connect):
    c = connect()
    ch = c.channel()
    a, b = unique("a"), unique("b")
    ch.exchange_declare(exchange=a, exchange_type="direct", arguments={"alternate-exchange": b})
    ch.exchange_declare(exchange=b, exchange_type="direct", arguments={"alternate-exchange": a})
    ch.basic_publish(exchange=a, routing_key="nowhere", body=b"x")
    ch.exchange_declare(exchange=a, passive=True)  # still answering
    assert ch.is_open


def test_consume_accepts_cancel_on_ha_failover(connect):
    ch = connect().channel()
    q = unique("ha")
    ch.queue_declare(queue=q)
    ch.basic_consume(queue=q, on_message_callback=lambda *a: None,
                     arguments={"x-cancel-on-ha-failover": True})
    assert ch.is_open


@pytest.mark.parametrize("arg,value,needle", [
    ("x-message-ttl", -1, "{value_negative,-1}"),
    ("x-expires", 0, "{value_zero,0}"),
    ("x-max-length", "ten", '"expected integer, got longstr"'),
    ("x-max-length-bytes", -5, "{value_negative,-5}"),
    ("x-overflow", "drop-tail", "invalid_overflow"),
    ("x-single-active-consumer", "yes", "unacceptable_type"),
])
def test_invalid_arguments_are_406_naming_them(connect, arg, value, needle):
    ch = connect().channel()
    q = unique("bad")
    text = expect_close(406, ch.queue_declare, queue=q, arguments={arg: value})
    assert "invalid arg '%s' for queue '%s'" % (arg, q) in text
    assert needle in text


def test_string_argument_of_another_type_is_406(connect):
    ch = connect().channel()
    q = unique("bad")
    text = expect_close(406, ch.queue_declare, queue=q, arguments={"x-dead-letter-exchange": 5})
    assert "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '%s'" % q in text


def test_dead_letter_routing_key_needs_an_exchange(connect):
    ch = connect().channel()
    text = expect_close(406, ch.queue_declare, queue=unique("bad"),
                        arguments={"x-dead-letter-routing-key": "k"})
    assert "routing_key_but_no_dlx_defined" in text


def test_unknown_x_arguments_are_accepted(connect):
    ch = connect().channel()
    q = unique("unk")
    ch.queue_declare(queue=q, arguments={"x-whatever": "ok", "x-queue-mode": "lazy"})
    ch.queue_declare(queue=q, arguments={"x-whatever": "different", "x-queue-mode": "lazy"})


# --------------------------------------------------------------------------
# durability across kill -9


@pytest.mark.deadline(60)
def test_ttl_and_dead_letter_topology_survive_restart(fresh_broker):
    c = fresh_broker.pika()
    ch = c.channel()
    ch.confirm_delivery()
    dlx, dlq, q = "dlx.durable", "dlq.durable", "ttl.durable"
    ch.exchange_declare(exchange=dlx, exchange_type="fanout", durable=True)
    ch.queue_declare(queue=dlq, durable=True)
    ch.queue_bind(queue=dlq, exchange=dlx)
    ch.queue_declare(queue=q, durable=True,
                     arguments={"x-message-ttl": 1500, "x-dead-letter-exchange": dlx})
    publish(ch, q, b"expires-later", delivery_mode=2)
    publish(ch, q, b"own-expiry", delivery_mode=2, expiration="1000")
    fresh_broker.kill9()
    started = time.monotonic()
    fresh_broker.start()
    c = fresh_broker.pika()
    ch = c.channel()
    # Both expire after the restart (their expiry was stored), dead-lettered
    # through the recovered topology.
    got = []
    wait_for(lambda: (got.extend(bodies(ch, dlq)), len(got) == 2)[1], timeout=10,
             what="both recovered messages to expire into the DLQ")
    assert sorted(got) == [b"expires-later", b"own-expiry"]
    assert count(c, q) == 0
    assert time.monotonic() - started < 10


@pytest.mark.deadline(60)
def test_durable_limits_priority_and_quorum_survive_restart(fresh_broker):
    c = fresh_broker.pika()
    ch = c.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue="prio.durable", durable=True, arguments={"x-max-priority": 5})
    ch.queue_declare(queue="len.durable", durable=True, arguments={"x-max-length": 2})
    for body, prio in ((b"lo", 1), (b"hi", 5), (b"mid", 3)):
        publish(ch, "prio.durable", body, priority=prio, delivery_mode=2)
    for i in range(3):
        publish(ch, "len.durable", b"%d" % i, delivery_mode=2)
    fresh_broker.kill9()
    fresh_broker.start()
    c = fresh_broker.pika()
    ch = c.channel()
    assert bodies(ch, "prio.durable") == [b"hi", b"mid", b"lo"]
    publish(ch, "len.durable", b"3", delivery_mode=2)  # the limit still applies
    assert bodies(ch, "len.durable") == [b"2", b"3"]
