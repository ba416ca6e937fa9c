"""A client that stops reading must not grow broker memory past its output
limit by any path (issue 13, item 6): pipelined basic.get + basic.reject
(requeue) pairs on one large message, mandatory publishes that come back as
basic.return, and direct reply-to deliveries to a consumer that stopped
reading. Each path stops reading the offender (or refuses what would be
queued for it) once its output is full; RSS is the judge."""

import socket
import struct

import pika
import pytest

from amqp_raw import (RawConnection, basic_get, basic_publish, method_frame, publish_message, queue_declare)
from conftest import started_broker, unique, wait_for
from proc_stats import rss_bytes, sanitized_build

pytestmark = pytest.mark.deadline(120)

MiB = 1 << 20
BODY = 1 * MiB        # the message every get copies into the output
PAIRS = 300           # get + reject pairs: 300 MiB of output if nothing stops them
ALLOWED = 96 * MiB    # RSS growth allowed (the limit is 4 MiB of output per connection)
if sanitized_build():
    # ASan's quarantine keeps freed bodies resident (256 MiB by default):
    # there RSS says nothing about what the broker holds; release builds check it.
    ALLOWED += 1024 * MiB


@pytest.fixture(scope="module")
def broker():
    with started_broker() as b:
        yield b


def basic_reject(ch, tag, requeue):
    return method_frame(ch, (60, 90), struct.pack(">QB", tag, 1 if requeue else 0))


def grew(broker, before):
    return rss_bytes(broker.proc.pid) - before


def test_get_reject_loop_of_a_client_that_does_not_read(broker):
    if broker.external:
        pytest.skip("measures sluiced's memory")
    name = unique("amp")
    c = RawConnection("127.0.0.1", broker.port)
    c.handshake()
    c.open_channel(1)
    c.send(queue_declare(1, name))
    c.expect_method((50, 11))
    c.send(publish_message(1, "", name, b"m" * BODY))
    wait_for(lambda: _ready(broker, name) == 1, what="the message in the queue")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    before = rss_bytes(broker.proc.pid)
    pipeline = b"".join(basic_get(1, name, no_ack=False) + basic_reject(1, tag, True)
                        for tag in range(1, PAIRS + 1))
    c.send(pipeline)  # and read nothing
    peak = 0
    for _ in range(20):  # the broker handles what it will of it
        peak = max(peak, grew(broker, before))
        _ready(broker, name)  # a round trip through the broker's loop
    assert peak < ALLOWED, "RSS grew %d MiB for a client that reads nothing" % (peak // MiB)
    c.close()


def test_replies_to_a_reply_consumer_that_stopped_reading(broker):
    if broker.external:
        pytest.skip("measures sluiced's memory")
    rpc = unique("rpc")
    requester = broker.pika()
    rch = requester.channel()
    rch.basic_consume("amq.rabbitmq.reply-to", lambda *a: None, auto_ack=True)
    rch.queue_declare(rpc)
    rch.basic_publish("", rpc, b"question", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    # From here on the requester reads nothing.
    server = broker.pika()
    sch = server.channel()
    m, props, body = None, None, None
    for _ in range(100):
        m, props, body = sch.basic_get(rpc, auto_ack=True)
        if m:
            break
    assert m and props.reply_to.startswith("amq.rabbitmq.reply-to.")
    before = rss_bytes(broker.proc.pid)
    big = b"r" * BODY
    for _ in range(PAIRS):
        sch.basic_publish("", props.reply_to, big)
    server.process_data_events(time_limit=0.1)
    sch.queue_declare(rpc, passive=True)  # a round trip: every reply was handled
    growth = grew(broker, before)
    assert growth < ALLOWED, "RSS grew %d MiB holding replies for a consumer that reads nothing" % (growth // MiB)
    server.close()
    requester.close()


def _ready(broker, name):
    c = broker.pika()
    try:
        return c.channel().queue_declare(name, passive=True).method.message_count
    finally:
        c.close()
