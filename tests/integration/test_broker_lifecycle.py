"""The harness's own promises, which the crash and durability tests build on:
sluiced starts on the ports and data dir it is given, serves again after
kill -9 and after a restart, and exits cleanly on SIGTERM: listeners close,
clients get connection.close 320 CONNECTION_FORCED, confirmed messages are
kept, and a second signal exits at once.  Needs a sluiced of its own:
skipped against an external broker."""

import os
import signal
import time

import pika
import pytest

import amqp_raw
from conftest import amqp_answers, temp_queue, unique, wait_for

SHUTDOWN_WAIT = 5.0   # how long sluiced waits for clients to answer the close


def roundtrip(b):
    conn = b.pika()
    try:
        ch = conn.channel()
        q = temp_queue(ch)
        ch.basic_publish(exchange="", routing_key=q, body=b"alive")
        body = wait_for(lambda: ch.basic_get(queue=q, auto_ack=True)[2], 5)
        assert body == b"alive"
    finally:
        conn.close()


def test_started_on_given_ports_and_data_dir(fresh_broker):
    b = fresh_broker
    assert b.alive()
    assert os.path.isdir(b.data_dir)
    assert b.http_port and b.http_port != b.port
    assert b.url == "amqp://guest:guest@127.0.0.1:%d/%%2F" % b.port
    conn = pika.BlockingConnection(pika.URLParameters(b.url + "?socket_timeout=5"))
    assert conn.is_open
    conn.close()
    roundtrip(b)


def test_kill9_then_restart_serves_again(fresh_broker):
    b = fresh_broker
    roundtrip(b)
    b.kill9()
    assert not b.alive()
    assert b.proc.returncode == -signal.SIGKILL
    wait_for(lambda: not amqp_answers(b.host, b.port, timeout=0.5), 5,
             what="port closed after kill -9")
    b.restart()
    assert b.alive()
    roundtrip(b)


def test_sigterm_exits_cleanly_and_restarts(fresh_broker):
    b = fresh_broker
    conn = b.pika()               # an open client must not stop a clean shutdown
    conn.channel().queue_declare(queue=unique("lifecycle"), durable=True)
    code = b.stop()
    assert code == 0, "sluiced did not exit 0 on SIGTERM (exit %r)\n%s" % (
        b.proc.returncode, b.log_tail())
    b.start()
    roundtrip(b)


def shutting_down(b):
    with open(b.log_path, "rb") as f:
        return b"shutting down" in f.read()


def test_sigterm_closes_clients_with_320_and_keeps_confirmed_messages(fresh_broker):
    b = fresh_broker
    q = unique("shutdown")
    conn = b.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue=q, durable=True)
    # A confirmed persistent message: the promise the shutdown must keep.
    ch.basic_publish(exchange="", routing_key=q, body=b"kept",
                     properties=pika.BasicProperties(delivery_mode=2), mandatory=True)
    consumer = b.pika()
    consumer.channel().basic_consume(queue=temp_queue(consumer.channel()), on_message_callback=lambda *a: None)

    sent = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    closes = []
    for c in (conn, consumer):
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            deadline = time.monotonic() + SHUTDOWN_WAIT
            while time.monotonic() < deadline:
                c.process_data_events(time_limit=0.1)
        closes.append((e.value.reply_code, e.value.reply_text))
    assert closes == [(320, "CONNECTION_FORCED - broker shutdown")] * 2
    b.proc.wait(timeout=SHUTDOWN_WAIT + 5)
    took = time.monotonic() - sent
    assert b.proc.returncode == 0, b.log_tail()
    # Both clients answered close-ok: no waiting for the deadline.
    assert took < SHUTDOWN_WAIT, "shutdown took %.1fs\n%s" % (took, b.log_tail())

    b.start()
    conn = b.pika()
    try:
        method, _, body = conn.channel().basic_get(queue=q, auto_ack=True)
        assert body == b"kept"
    finally:
        conn.close()


def test_sigterm_stops_accepting_and_waits_for_a_silent_client_up_to_a_bound(fresh_broker):
    b = fresh_broker
    with amqp_raw.RawConnection(b.host, b.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        sent = time.monotonic()
        b.proc.send_signal(signal.SIGTERM)
        close = raw.expect_connection_close(timeout=SHUTDOWN_WAIT)
        assert (close.code, close.text) == (320, "CONNECTION_FORCED - broker shutdown")
        # This client never answers; meanwhile the listeners are closed.
        assert b.alive()
        assert not amqp_answers(b.host, b.port, timeout=0.5), "still accepting during shutdown"
        # The broker half-closed after its close; it waits for ours.
        raw.expect_eof(timeout=SHUTDOWN_WAIT)
        assert b.proc.wait(timeout=SHUTDOWN_WAIT + 5) == 0, b.log_tail()
        took = time.monotonic() - sent
        assert SHUTDOWN_WAIT - 0.5 <= took < SHUTDOWN_WAIT + 5, took
    b.start()
    roundtrip(b)


def test_second_signal_exits_at_once(fresh_broker):
    b = fresh_broker
    with amqp_raw.RawConnection(b.host, b.port) as raw:
        raw.handshake()
        b.proc.send_signal(signal.SIGTERM)
        raw.expect_connection_close(timeout=SHUTDOWN_WAIT)
        wait_for(lambda: shutting_down(b), 5, what="the shutdown to start")
        # Still waiting for the silent client's close-ok.
        assert b.alive()
        sent = time.monotonic()
        b.proc.send_signal(signal.SIGINT)
        b.proc.wait(timeout=SHUTDOWN_WAIT - 1)
        assert b.proc.returncode == 128 + signal.SIGINT, b.log_tail()
        assert time.monotonic() - sent < 2
    # The forced exit lost nothing the broker had promised: it serves again.
    b.start()
    roundtrip(b)
