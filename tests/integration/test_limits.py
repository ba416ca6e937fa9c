"""Limits, each refused with the spec's reply code and RabbitMQ's text:
max connections (530 at connection.open), channel_max (530), frame_max
(530 in tune-ok, 501 for a frame past it), max message size (406), the
consumer timeout for unacked deliveries (406, messages requeued), and the
handshake timeout (a client that stalls before connection.open is cut off).

Each test runs its own sluiced with the option under test (mgmt_http's
ExtraBroker)."""

import socket
import struct
import time

import pika
import pytest

from amqp_raw import (CHANNEL_OPEN_OK, CONNECTION_CLOSE, CONNECTION_START, CONNECTION_TUNE,
                      PROTOCOL_HEADER, Closed, RawConnection, channel_open, connection_open,
                      frame, start_ok, tune_ok)
from conftest import unique, wait_for
from mgmt_http import ExtraBroker


@pytest.fixture
def sluiced(request):
    """sluiced(*options) starts a broker of the test's own; stopped (and its
    clean exit checked) at the end."""
    started = []

    def start(*options):
        b = ExtraBroker(*options)
        started.append(b)
        return b

    yield start
    for b in started:
        code = b.stop()
        assert code == 0, "sluiced exited %s\n%s" % (code, open(b.log_path).read()[-3000:])


def pika_conn(b, **kw):
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port, heartbeat=0, **kw))


def raw(b, timeout=5.0):
    return RawConnection("127.0.0.1", b.port, timeout=timeout)


def until_tune(c, channel_max=0, frame_max=131072):
    c.send(PROTOCOL_HEADER)
    c.expect_method(CONNECTION_START)
    c.send(start_ok())
    tune = c.expect_method(CONNECTION_TUNE).args()
    return tune.short(), tune.long(), tune.short()


# --------------------------------------------------------------------------
# max connections


def test_connection_past_max_connections_is_refused_with_530(sluiced):
    b = sluiced("--max-connections", "2")
    first, second = pika_conn(b), pika_conn(b)
    with raw(b) as c:
        until_tune(c)
        c.send(tune_ok(2047, 131072, 0) + connection_open("/"))
        close = c.expect_connection_close()
        assert close.code == 530, close
        assert close.text == "NOT_ALLOWED - connection refused: node connection limit (2) is reached", close
        assert (close.class_id, close.method_id) == (10, 40), close     # connection.open
        c.finish_close()
    # pika reports the same refusal (as a probable access denial, which it
    # assumes of any close during connection.open), naming the limit.
    with pytest.raises(pika.exceptions.AMQPConnectionError) as e:
        pika_conn(b)
    assert "(530) 'NOT_ALLOWED - connection refused: node connection limit (2) is reached'" in str(e.value)
    # A slot frees when a connection closes.
    second.close()
    third = wait_for(lambda: _try_connect(b), 5, what="a connection after one closed")
    assert first.is_open and third.is_open
    first.close()
    third.close()


def _try_connect(b):
    try:
        return pika_conn(b)
    except pika.exceptions.AMQPConnectionError:
        return None


# --------------------------------------------------------------------------
# channel_max and frame_max


def test_channel_past_channel_max_is_refused_with_530(sluiced):
    b = sluiced("--channel-max", "3")
    with raw(b) as c:
        proposed = c.handshake()
        assert proposed[0] == 3, "tune offered channel_max %d, not --channel-max 3" % proposed[0]
        for ch in (1, 2, 3):
            c.open_channel(ch)
        c.send(channel_open(4))
        close = c.expect_connection_close()
        assert close.code == 530, close
        assert "channel_max" in close.text and "3" in close.text, close
        c.finish_close()
    # pika negotiates down to the server's channel_max and cannot exceed it.
    conn = pika_conn(b)
    assert conn._impl.params.channel_max == 3
    conn.close()


def test_tune_ok_above_server_limits_is_refused_with_530(sluiced):
    b = sluiced("--channel-max", "10", "--frame-max", "8192")
    with raw(b) as c:
        assert until_tune(c)[:2] == (10, 8192)
        c.send(tune_ok(11, 8192, 0))
        close = c.expect_connection_close()
        assert close.code == 530 and "channel_max" in close.text, close
    with raw(b) as c:
        until_tune(c)
        c.send(tune_ok(10, 8193, 0))
        close = c.expect_connection_close()
        assert close.code == 530 and "frame_max" in close.text, close
    with raw(b) as c:
        c.handshake(frame_max=8192)
        c.open_channel(1)
        c.send(frame(3, 1, b"x" * 8200))           # a body frame past frame_max
        close = c.expect_connection_close()
        assert close.code == 501, close
        c.finish_close()


# --------------------------------------------------------------------------
# max message size


def test_message_larger_than_max_message_size_is_refused_with_406(sluiced):
    b = sluiced("--max-message-size", "1048576")
    conn = pika_conn(b)
    ch = conn.channel()
    q = unique("size")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"x" * 1048576)          # exactly the limit: fine
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish("", q, b"x" * 1048577)
        ch.queue_declare(q, passive=True)           # the close arrives by now
    assert e.value.reply_code == 406
    assert e.value.reply_text == ("PRECONDITION_FAILED - message size 1048577 is larger than "
                                  "configured max size 1048576")
    ch = conn.channel()
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    conn.close()


# --------------------------------------------------------------------------
# consumer timeout


def test_unacked_delivery_past_consumer_timeout_closes_channel_and_requeues(sluiced):
    b = sluiced("--consumer-timeout", "1000")
    slow = pika_conn(b)
    ch = slow.channel()
    q = unique("timeout")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"work")
    closed = []
    ch._impl.add_on_close_callback(lambda c, reason: closed.append(reason))  # pika.Channel under BlockingChannel
    got = []
    ch.basic_consume(q, lambda c, m, p, body: got.append(body))   # never acks
    t0 = time.monotonic()
    deadline = t0 + 10
    while not closed and time.monotonic() < deadline:
        slow.process_data_events(0.1)
    elapsed = time.monotonic() - t0
    assert got == [b"work"]
    assert closed, "the channel was not closed within 10 s of an unacked delivery (timeout 1 s)"
    reason = closed[0]
    assert reason.reply_code == 406, reason
    assert reason.reply_text == (
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1000 ms. "
        "This timeout value can be configured, see consumers doc guide to learn more"), reason
    assert 1.0 <= elapsed < 4.0, "closed after %.1f s with a 1 s timeout" % elapsed
    assert slow.is_open, "only the channel closes, not the connection"
    # The message went back to the queue, marked redelivered.
    other = pika_conn(b).channel()
    m, _, body = wait_for(lambda: (lambda r: r if r[0] else None)(other.basic_get(q, auto_ack=True)), 5,
                          what="the requeued message")
    assert body == b"work" and m.redelivered
    slow.close()
    other.connection.close()


def test_acking_consumer_is_never_timed_out(sluiced):
    b = sluiced("--consumer-timeout", "1000")
    conn = pika_conn(b)
    ch = conn.channel()
    q = unique("prompt")
    ch.queue_declare(q)
    ch.basic_qos(prefetch_count=1)
    acked = []

    def on_message(c, m, p, body):
        c.basic_ack(m.delivery_tag)
        acked.append(body)

    ch.basic_consume(q, on_message)
    end = time.monotonic() + 3
    i = 0
    while time.monotonic() < end:                  # a message every 0.2 s for 3 s: > the timeout
        ch.basic_publish("", q, b"%d" % i)
        i += 1
        conn.process_data_events(0.2)
    assert ch.is_open and len(acked) >= i - 1
    conn.close()


# --------------------------------------------------------------------------
# handshake timeout


@pytest.mark.parametrize("sent", [b"", PROTOCOL_HEADER, "through-tune"], ids=["silent", "header-only", "no-open"])
def test_client_stalling_in_the_handshake_is_disconnected(sluiced, sent):
    b = sluiced("--handshake-timeout", "1000")
    with raw(b) as c:
        t0 = time.monotonic()
        if sent == "through-tune":
            until_tune(c)
            c.send(tune_ok(2047, 131072, 0))        # ... and no connection.open
        elif sent:
            c.send(sent)
        with pytest.raises(Closed):
            while True:
                try:
                    c.read_frame(timeout=6)
                except TimeoutError:
                    pytest.fail("still connected 6 s into a 1 s handshake timeout")
        assert time.monotonic() - t0 < 4


def test_client_past_the_handshake_is_not_cut_off(sluiced):
    b = sluiced("--handshake-timeout", "500")
    conn = pika_conn(b)
    ch = conn.channel()
    end = time.monotonic() + 1.5                    # three handshake timeouts
    while time.monotonic() < end:
        conn.process_data_events(0.1)
    assert conn.is_open and ch.is_open
    conn.close()
