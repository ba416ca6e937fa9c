"""A client that stops reading must not grow broker memory past its output
limit by any path (issue 13, item 6): pipelined basic.get + basic.reject
(requeue) pairs on one large message, mandatory publishes that come back as
basic.return, many channels that each fetch a large message, and direct
reply-to deliveries to a consumer that stopped reading. Each path stops
reading the offender (or refuses what would be queued for it) once its
output is full; RSS is the judge, and another client's publish and get must
still go through while the offender sits there."""

import select
import socket
import struct
import time

import pika
import pytest

from amqp_raw import (RawConnection, basic_get, basic_publish, body_frame, channel_open, header_frame,
                      method_frame, publish_message, queue_declare, short, shortstr)
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


def one_message_client(broker, name, body):
    """A raw client on channel 1 that declared queue `name` and published
    `body` to it, with a small receive buffer: from here on it reads nothing."""
    c = RawConnection("127.0.0.1", broker.port)
    c.handshake()
    c.open_channel(1)
    c.send(queue_declare(1, name))
    c.expect_method((50, 11))
    c.send(publish_message(1, "", name, body))
    wait_for(lambda: _ready(broker, name) == 1, what="the message in the queue")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return c


def test_get_reject_loop_of_a_client_that_does_not_read(broker):
    if broker.external:
        pytest.skip("measures sluiced's memory")
    name = unique("amp")
    c = one_message_client(broker, name, b"m" * BODY)
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


def channel_close(ch):
    return method_frame(ch, (20, 40), short(200) + shortstr("bye") + short(0) + short(0))


def mandatory_publish(ch, routing_key, body, frame_max=131072):
    out = basic_publish(ch, "", routing_key, mandatory=True) + header_frame(ch, len(body))
    step = frame_max - 8
    for i in range(0, len(body), step):
        out += body_frame(ch, body[i:i + step])
    return out


def send_until_refused(broker, sock, data, before, stall=2.0, deadline=60.0):
    """Writes `data` to a socket whose owner never reads, until it is all
    sent or the broker stops taking it (the socket stays unwritable for
    `stall` seconds: its buffers are full because the broker no longer
    reads). Returns (bytes sent, peak RSS growth seen meanwhile)."""
    sock.setblocking(False)
    sent, peak = 0, 0
    end = time.monotonic() + deadline
    while sent < len(data) and time.monotonic() < end:
        peak = max(peak, grew(broker, before))
        try:
            sent += sock.send(data[sent:sent + 1 * MiB])
        except BlockingIOError:
            _, writable, _ = select.select([], [sock], [], stall)
            if not writable:
                break
    return sent, peak


def assert_bounded_while_others_work(broker, before, peak, what):
    """RSS stays within ALLOWED while the broker handles what it took, and
    a second client still publishes and gets a message meanwhile."""
    probe = unique("probe")
    c = broker.pika()
    ch = c.channel()
    ch.queue_declare(probe)
    for i in range(10):  # round trips through the broker's loop
        peak = max(peak, grew(broker, before))
        ch.basic_publish("", probe, b"still here %d" % i)

        def fetched():
            m, _, body = ch.basic_get(probe, auto_ack=True)
            return body if m else None
        assert wait_for(fetched, what="another client's message back") == b"still here %d" % i
    peak = max(peak, grew(broker, before))
    ch.queue_delete(probe)
    c.close()
    assert peak < ALLOWED, "RSS grew %d MiB for %s" % (peak // MiB, what)


def test_mandatory_returns_to_a_client_that_does_not_read(broker):
    """Unroutable mandatory publishes of 1 MiB each come back as basic.return
    with their bodies: a publisher that never reads fills its own output,
    then is no longer read."""
    if broker.external:
        pytest.skip("measures sluiced's memory")
    c = RawConnection("127.0.0.1", broker.port)
    c.handshake()
    c.open_channel(1)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    one = mandatory_publish(1, unique("nowhere"), b"r" * BODY)
    before = rss_bytes(broker.proc.pid)
    sent, peak = send_until_refused(broker, c.sock, one * PAIRS, before)
    # The broker stopped reading long before the end: what it took is about
    # its output limit plus what the sockets buffer, not 300 MiB.
    assert sent < len(one) * PAIRS // 2, "the broker read %d MiB from a client that reads nothing" % (sent // MiB)
    assert_bounded_while_others_work(broker, before, peak, "returns to a client that reads nothing")
    c.close()


def test_many_channels_of_a_client_that_does_not_read(broker):
    """One connection opens channel after channel, each fetching a 4 MiB
    message (get, then close: the message goes back for the next channel):
    ~70 bytes in, 4 MiB out per channel, all in one small write."""
    if broker.external:
        pytest.skip("measures sluiced's memory")
    name = unique("amp-ch")
    c = one_message_client(broker, name, b"c" * (4 * BODY))
    before = rss_bytes(broker.proc.pid)
    channels = range(2, 102)  # 100 channels: 400 MiB of output if nothing stops them
    c.send(b"".join(channel_open(ch) + basic_get(ch, name, no_ack=False) + channel_close(ch) for ch in channels))
    assert_bounded_while_others_work(broker, before, 0, "100 channels of a client that reads nothing")
    c.close()
    # The offender gone, its channels closed: the message is back in the queue.
    wait_for(lambda: _ready(broker, name) == 1, what="the message requeued by the closed channels")
