"""Bad input is normal input.  Hand-built frames over raw sockets (amqp_raw,
independent of Sluice's codec), each while another, well-behaved pika
connection stays open; after every case that connection must still publish
and get, and a new connection must still handshake.

What RabbitMQ 3.10.8 answers is recorded beside each case; where Sluice is
meant to differ (RabbitMQ just drops the socket on an unknown method) the
test says so and accepts RabbitMQ's answer only from a server whose
connection.start says product=RabbitMQ."""

import socket
import struct
import time

import pika
import pytest

from amqp_raw import (BASIC_GET_OK, CHANNEL_CLOSE, CONNECTION_CLOSE, FRAME_BODY,
                      FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, PROTOCOL_HEADER,
                      QUEUE_DECLARE, QUEUE_DECLARE_OK, Closed, Close, RawConnection,
                      basic_consume, basic_get, basic_publish, bits, body_frame,
                      channel_open, frame, header_frame, heartbeat_frame, method_frame,
                      publish_message, queue_declare, short, shortstr, table)
from conftest import unique, wait_for

FRAME_MAX = 4096          # what the raw client negotiates, to make "too large" cheap


class Bystander:
    """A pika connection that must not notice anything."""

    def __init__(self, broker):
        self.conn = broker.pika()
        self.ch = self.conn.channel()
        self.queue = unique("bystander")
        self.ch.queue_declare(queue=self.queue, exclusive=True)
        self.n = 0
        self.check()

    def check(self):
        assert self.conn.is_open, "the bystander connection was closed"
        self.n += 1
        body = b"still here %d" % self.n
        self.ch.basic_publish(exchange="", routing_key=self.queue, body=body)
        got = wait_for(lambda: self.ch.basic_get(queue=self.queue, auto_ack=True)[2], 5,
                       what="bystander's own message")
        assert got == body

    def close(self):
        if self.conn.is_open:
            self.conn.close()


@pytest.fixture
def bystander(broker):
    b = Bystander(broker)
    yield b
    b.close()


def raw(broker, timeout=5.0):
    return RawConnection(broker.host, broker.port, timeout=timeout)


def opened(broker, channel=True, frame_max=FRAME_MAX, heartbeat=0):
    c = raw(broker)
    c.handshake(frame_max=frame_max, heartbeat=heartbeat)
    if channel:
        c.open_channel(1)
    return c


def new_connection_works(broker):
    with raw(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send(queue_declare(1, unique("raw"), exclusive=True))
        c.expect_method(QUEUE_DECLARE_OK)


def expect_connection_error(c, code, close_timeout=5.0):
    """The broker answers with connection.close `code`, and closes the socket
    once we send close-ok.  RabbitMQ, after a frame-level error (501),
    ignores the close-ok and drops the socket after its 3 s close timeout."""
    close = c.expect_close(timeout=5)
    assert close.kind == "connection", "expected connection.close %d, got %r" % (code, close)
    assert close.code == code, "expected connection.close %d, got %r" % (code, close)
    c.finish_close(close_timeout)
    return close


def test_raw_client_baseline(broker, bystander):
    """The hand-built client itself works: publish, get, frame_max honoured
    on a delivery split across many body frames."""
    with opened(broker) as c:
        c.send(queue_declare(1, unique("raw"), exclusive=True))
        q = c.expect_method(QUEUE_DECLARE_OK).args().shortstr()
        body = bytes(range(256)) * 80          # 20480 bytes: > 5 frames of 4096
        c.send(publish_message(1, "", q, body, frame_max=FRAME_MAX))
        # basic.get until the message is there (publish is asynchronous)
        deadline = time.monotonic() + 5
        while True:
            c.send(basic_get(1, q))
            f = c.read_method()
            if f.method == BASIC_GET_OK:
                break
            assert time.monotonic() < deadline, "message never arrived"
        hdr = c.read_frame()
        assert hdr.type == FRAME_HEADER and hdr.channel == 1
        assert struct.unpack(">Q", hdr.payload[4:12])[0] == len(body)
        got = b""
        frames = 0
        while len(got) < len(body):
            f = c.read_frame()
            assert f.type == FRAME_BODY, f
            assert f.size <= FRAME_MAX, "broker sent a %d-byte frame, frame_max %d" % (f.size, FRAME_MAX)
            got += f.payload
            frames += 1
        assert got == body
        assert frames >= 5
        # a frame of exactly frame_max octets (payload frame_max - 8) is legal
        c.send(basic_publish(1, "", q) + header_frame(1, FRAME_MAX - 8)
               + body_frame(1, b"x" * (FRAME_MAX - 8)))
        c.send(queue_declare(1, q, passive=True))
        ok = c.expect_method(QUEUE_DECLARE_OK).args()
        ok.shortstr()
        assert ok.long() in (0, 1)     # message count (routing may lag the declare)
    bystander.check()


# --------------------------------------------------------------------------
# protocol header


@pytest.mark.parametrize("header", [
    b"AMQP\x00\x00\x08\x00",      # RabbitMQ: AMQP\x00\x00\x09\x01, then closes
    b"AMQP\x00\x00\x09\x00",      # RabbitMQ: same
    b"AMQP\x00\x01\x00\x00",      # AMQP 1.0 (plugin off) -- RabbitMQ: same
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",   # RabbitMQ: same
], ids=["amqp-0-0-8-0", "amqp-0-0-9-0", "amqp-1.0", "http"])
def test_wrong_protocol_header(broker, bystander, header):
    with raw(broker) as c:
        c.send(header)
        reply = b""
        deadline = time.monotonic() + 5
        try:
            while True:
                c._fill(deadline)
        except Closed:
            reply = c.buf
        assert reply == PROTOCOL_HEADER, "expected %r then close, got %r" % (PROTOCOL_HEADER, reply)
    bystander.check()


def test_short_header_then_disconnect(broker, bystander):
    with raw(broker) as c:
        c.send(b"AMQ")
    bystander.check()
    new_connection_works(broker)


# --------------------------------------------------------------------------
# frame errors: connection.close 501 FRAME_ERROR


def test_frame_larger_than_frame_max_method(broker, bystander):
    # RabbitMQ: 501 "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,6020,4088}"
    # (class 0 method 0); closes the socket 3 s later, ignoring our close-ok.
    with opened(broker) as c:
        c.send(queue_declare(1, "big", arguments={"k": "v" * 6000}))
        expect_connection_error(c, 501)
    bystander.check()


def test_frame_larger_than_frame_max_body(broker, bystander):
    # RabbitMQ: 501 "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,5000,4088}".
    # (RabbitMQ 3.10 is lenient by 8 octets: payloads of 4089..4096 with
    # frame_max 4096 pass unnoticed, 4100 is refused; so we test well over.)
    with opened(broker) as c:
        n = FRAME_MAX + 904
        c.send(basic_publish(1, "", "nowhere") + header_frame(1, n) + body_frame(1, b"x" * n))
        expect_connection_error(c, 501)
    bystander.check()


def test_wrong_frame_end(broker, bystander):
    # RabbitMQ: 501 "FRAME_ERROR - type 1, all octets = <<...>>: {invalid_frame_end_marker,0}"
    with opened(broker) as c:
        good = queue_declare(1, unique("raw"), exclusive=True)
        c.send(good[:-1] + b"\x00")
        expect_connection_error(c, 501)
    bystander.check()


def test_unknown_frame_type(broker, bystander):
    # RabbitMQ: 501 "FRAME_ERROR - type 5, all octets = <<"abc">>: unknown_frame"
    with opened(broker) as c:
        c.send(frame(5, 1, b"abc"))
        expect_connection_error(c, 501)
    bystander.check()


def test_method_frame_too_short(broker, bystander):
    # A method frame whose payload cannot even hold class-id and method-id.
    # RabbitMQ: 501 "FRAME_ERROR - type 1, all octets = <<0,50>>: unknown_frame".
    # The spec's 502 SYNTAX_ERROR is an equally clear refusal.
    with opened(broker) as c:
        c.send(frame(FRAME_METHOD, 1, b"\x00\x32"))
        close = c.expect_close()
        assert close.kind == "connection" and close.code in (501, 502), close
        c.finish_close()
    bystander.check()


def test_truncated_method_arguments(broker, bystander):
    # queue.declare whose queue-name shortstr claims 80 octets but has 2.
    # RabbitMQ: 501 "FRAME_ERROR - cannot decode <<0,0,80,97,98>>" (class 50 method 10).
    # The spec would call this 502 SYNTAX_ERROR; either is a correct refusal.
    with opened(broker) as c:
        c.send(frame(FRAME_METHOD, 1, struct.pack(">HH", *QUEUE_DECLARE) + short(0) + b"\x50ab"))
        close = c.expect_close()
        assert close.kind == "connection" and close.code in (501, 502), close
        c.finish_close()
    bystander.check()


def test_method_with_bytes_after_its_arguments(broker, bystander):
    # queue.declare and one byte more.
    # RabbitMQ: 501 "FRAME_ERROR - cannot decode <<0,0,1,113,0,0,0,0,0,7>>".
    with opened(broker) as c:
        c.send(frame(FRAME_METHOD, 1, struct.pack(">HH", *QUEUE_DECLARE) + short(0) + shortstr("q")
                     + bits() + table() + b"\x07"))
        close = c.expect_close()
        assert close.kind == "connection" and close.code == 501, close
        assert close.text == "FRAME_ERROR - cannot decode <<0,0,1,113,0,0,0,0,0,7>>", close
        c.finish_close()
    bystander.check()


def test_short_string_of_256_bytes(broker, bystander):
    # basic.publish whose exchange name is 256 bytes: the length octet wraps
    # to 0 and the name's bytes run into the fields after it (here they set
    # immediate, which would be 540). RabbitMQ: 501 "FRAME_ERROR - cannot decode <<...>>".
    with opened(broker) as c:
        c.send(frame(FRAME_METHOD, 1, struct.pack(">HH", 60, 40) + short(0) + b"\x00" + b"b" * 256
                     + shortstr("k") + bits(False, False)))
        close = c.expect_close()
        assert close.kind == "connection" and close.code == 501, close
        assert close.text.startswith("FRAME_ERROR - cannot decode <<"), close
        c.finish_close()
    bystander.check()


# --------------------------------------------------------------------------
# unknown methods: 540 NOT_IMPLEMENTED


@pytest.mark.parametrize("cm", [(99, 99), (60, 999), (10, 99)],
                         ids=["unknown-class", "unknown-basic-method", "unknown-connection-method"])
def test_unknown_class_or_method(broker, bystander, cm):
    # Sluice: connection.close 540 NOT_IMPLEMENTED.
    # RabbitMQ 3.10: no connection.close at all -- the reader process crashes
    # with {unknown_method_id,{99,99}} and the TCP connection is just closed.
    with opened(broker) as c:
        channel = 0 if cm[0] == 10 else 1
        c.send(method_frame(channel, cm, b"\x00\x00\x00\x00"))
        try:
            close = c.expect_close()
        except Closed:
            assert c.server_product == "RabbitMQ", (
                "socket closed without connection.close 540 for unknown method %s" % (cm,))
        else:
            assert close.kind == "connection" and close.code == 540, close
            c.finish_close()
    bystander.check()
    new_connection_works(broker)


def test_publish_immediate_not_implemented(broker, bystander):
    # RabbitMQ: 540 "NOT_IMPLEMENTED - immediate=true" (class 60 method 40)
    with opened(broker) as c:
        c.send(basic_publish(1, "amq.direct", "x", immediate=True) + header_frame(1, 1)
               + body_frame(1, b"x"))
        close = expect_connection_error(c, 540)
        assert (close.class_id, close.method_id) == (60, 40)
    bystander.check()


# --------------------------------------------------------------------------
# channel errors: 504 CHANNEL_ERROR


def test_method_on_unopened_channel(broker, bystander):
    # RabbitMQ: 504 "CHANNEL_ERROR - expected 'channel.open'" (class 50 method 10)
    with opened(broker) as c:
        c.send(queue_declare(3, "", exclusive=True))
        close = expect_connection_error(c, 504)
        assert (close.class_id, close.method_id) == (50, 10)
    bystander.check()


def test_publish_on_unopened_channel(broker, bystander):
    # RabbitMQ: 504 "CHANNEL_ERROR - expected 'channel.open'" (class 60 method 40)
    with opened(broker, channel=False) as c:
        c.send(basic_publish(3, "", "x") + header_frame(3, 1) + body_frame(3, b"x"))
        expect_connection_error(c, 504)
    bystander.check()


def test_channel_close_on_unopened_channel(broker, bystander):
    # RabbitMQ: 504 "CHANNEL_ERROR - expected 'channel.open'" (class 20 method 40)
    with opened(broker) as c:
        c.send(method_frame(7, CHANNEL_CLOSE, short(200) + shortstr("") + short(0) + short(0)))
        expect_connection_error(c, 504)
    bystander.check()


def test_second_channel_open(broker, bystander):
    # RabbitMQ: 504 "CHANNEL_ERROR - second 'channel.open' seen" (class 20 method 10)
    with opened(broker) as c:
        c.send(channel_open(1))
        expect_connection_error(c, 504)
    bystander.check()


def test_channel_method_on_channel_zero(broker, bystander):
    # RabbitMQ: 504 "CHANNEL_ERROR - unexpected method in connection state running"
    # (class 50 method 10).  The spec is vague between 504 CHANNEL_ERROR and
    # 503 COMMAND_INVALID here (RabbitMQ itself answers the mirror case,
    # a connection method on channel 1, with 503); either is accepted.
    with opened(broker, channel=False) as c:
        c.send(queue_declare(0, unique("raw"), exclusive=True))
        close = c.expect_close()
        assert close.kind == "connection" and close.code in (503, 504), close
        c.finish_close()
    bystander.check()


def test_connection_method_on_channel_one(broker, bystander):
    # connection.open on channel 1.
    # RabbitMQ: 503 "COMMAND_INVALID - unimplemented method" (class 10 method 40)
    with opened(broker) as c:
        c.send(method_frame(1, (10, 40), shortstr("/") + shortstr("") + bits(False)))
        close = c.expect_close()
        assert close.kind == "connection" and close.code in (503, 504), close
        c.finish_close()
    bystander.check()


def test_duplicate_consumer_tag(broker, bystander):
    # RabbitMQ: 530 "NOT_ALLOWED - attempt to reuse consumer tag 't1'" (class 60 method 20)
    with opened(broker) as c:
        c.send(queue_declare(1, unique("raw"), exclusive=True))
        c.expect_method(QUEUE_DECLARE_OK)
        c.send(basic_consume(1, "", "t1") + basic_consume(1, "", "t1"))
        expect_connection_error(c, 530)
    bystander.check()


# --------------------------------------------------------------------------
# content out of order: 505 UNEXPECTED_FRAME


def test_body_without_header(broker, bystander):
    # RabbitMQ: 505 "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
    with opened(broker) as c:
        c.send(body_frame(1, b"orphan body"))
        expect_connection_error(c, 505)
    bystander.check()


def test_header_without_method(broker, bystander):
    # RabbitMQ: 505 "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
    with opened(broker) as c:
        c.send(header_frame(1, 5))
        expect_connection_error(c, 505)
    bystander.check()


def test_method_instead_of_content_header(broker, bystander):
    # RabbitMQ: 505 "UNEXPECTED_FRAME - expected content header for class 60, got non
    # content header frame instead" (class 60 method 40)
    with opened(broker) as c:
        c.send(basic_publish(1, "", "x") + queue_declare(1, unique("raw"), exclusive=True))
        expect_connection_error(c, 505)
    bystander.check()


def test_method_instead_of_content_body(broker, bystander):
    # RabbitMQ: 505 "UNEXPECTED_FRAME - expected content body, got non content body
    # frame instead" (class 60 method 40)
    with opened(broker) as c:
        c.send(basic_publish(1, "", "x") + header_frame(1, 10) + body_frame(1, b"12345")
               + queue_declare(1, unique("raw"), exclusive=True))
        expect_connection_error(c, 505)
    bystander.check()


def test_content_header_class_mismatch(broker, bystander):
    # RabbitMQ: 505 "UNEXPECTED_FRAME - expected content header for class 60, got one
    # for class 50 instead"
    with opened(broker) as c:
        c.send(basic_publish(1, "", "x") + header_frame(1, 1, class_id=50) + body_frame(1, b"x"))
        expect_connection_error(c, 505)
    bystander.check()


def test_heartbeat_on_nonzero_channel(broker, bystander):
    # RabbitMQ: 505 "UNEXPECTED_FRAME - type 8, all octets = <<>>"; the spec says 501.
    with opened(broker) as c:
        c.send(frame(FRAME_HEARTBEAT, 1, b""))
        close = c.expect_close()
        assert close.kind == "connection" and close.code in (501, 505), close
        c.finish_close()
    bystander.check()


# --------------------------------------------------------------------------
# broken connections


def test_truncated_frame_then_disconnect(broker, bystander):
    # RabbitMQ: logs "client unexpectedly closed TCP connection", carries on.
    for cut in (3, 9, 20):
        c = opened(broker)
        msg = queue_declare(1, "abc", arguments={"x": "y" * 50})
        c.send(msg[:cut])
        c.close()
    # mid-body, in a publish
    c = opened(broker)
    c.send(basic_publish(1, "", "x") + header_frame(1, 1000) + body_frame(1, b"z" * 1000)[:300])
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    bystander.check()
    new_connection_works(broker)


def test_garbage_start_ok(broker, bystander):
    # connection.start-ok whose arguments do not decode.
    # RabbitMQ: closes the socket with no connection.close (handshake_error,
    # frame_error "cannot decode"); a connection.close 501/502 is also fine.
    with raw(broker) as c:
        c.send(PROTOCOL_HEADER)
        c.read_method()
        c.send(method_frame(0, (10, 11), b"garbage"))
        try:
            close = c.expect_close()
        except Closed:
            pass
        else:
            assert close.kind == "connection" and close.code in (501, 502), close
            c.finish_close()
    bystander.check()


@pytest.mark.deadline(20)
def test_heartbeat_timeout_closes_silent_client(broker, bystander):
    # tune-ok heartbeat=1, then silence.
    # RabbitMQ: sends heartbeats every 0.5 s, closes the socket after ~3 s
    # ("missed heartbeats from client, timeout: 1s"), no connection.close.
    with raw(broker) as c:
        c.handshake(heartbeat=1)
        t0 = time.monotonic()
        c.expect_eof(timeout=8)
        waited = time.monotonic() - t0
        assert waited >= 1.0, "closed after %.2fs, before one heartbeat interval" % waited
        assert waited <= 6.0, "closed only after %.2fs" % waited
        assert c.heartbeats_received >= 1, "the broker sent no heartbeat before closing"
    bystander.check()


@pytest.mark.deadline(20)
def test_heartbeating_client_stays_connected(broker, bystander):
    with raw(broker) as c:
        c.handshake(heartbeat=1)
        c.open_channel(1)
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            c.send(heartbeat_frame())
            try:
                c.read_frame(timeout=0.4)
            except TimeoutError:
                pass
        # still there and serving
        c.send(queue_declare(1, unique("raw"), exclusive=True))
        c.expect_method(QUEUE_DECLARE_OK)
        assert c.heartbeats_received >= 2
    bystander.check()
