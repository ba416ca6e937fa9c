"""The harness's own promises, which the crash and durability tests build on:
sluiced starts on the ports and data dir it is given, serves again after
kill -9 and after a restart, and exits cleanly on SIGTERM.  Needs a sluiced
of its own: skipped against an external broker."""

import os
import signal

import pika
import pytest

from conftest import amqp_answers, temp_queue, unique, wait_for


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
