"""close / close-ok is never lost (issue 13, item 9): whichever side closes,
the peer reads the broker's last frame and then a clean end of stream (FIN),
never a reset. Closing a socket that still has unread input makes the kernel
send RST and drop what was in flight, so the broker shuts down its sending
side and drains what the peer still sends before it closes."""

import socket
import struct
import threading
import time

import pytest

from amqp_raw import (FRAME_END, RawConnection, basic_publish, body_frame, channel_open, frame,
                      header_frame, method_frame, queue_declare)
from conftest import started_broker, wait_for
from mgmt_http import ExtraBroker, q

pytestmark = pytest.mark.deadline(60)

CONNECTION_CLOSE = (10, 50)
CONNECTION_CLOSE_OK = (10, 51)


def connection_close(code=200, text="bye"):
    return method_frame(0, CONNECTION_CLOSE, struct.pack(">H", code) + bytes([len(text)]) + text.encode() +
                        struct.pack(">HH", 0, 0))


def read_to_end(sock, timeout=10.0):
    """Every byte until the peer's FIN. Fails on a reset (RST)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            pytest.fail("the broker reset the connection (RST) instead of closing it; got %d bytes first"
                        % len(data))
        if not chunk:
            return data
        data += chunk
    pytest.fail("the broker did not close the connection within %ss" % timeout)


def methods(data):
    """(class, method) of every method frame in `data`."""
    out = []
    while len(data) >= 8:
        ftype, ch, size = struct.unpack(">BHI", data[:7])
        if len(data) < 8 + size:
            break
        if ftype == 1:
            out.append(struct.unpack(">HH", data[7:11]))
        data = data[8 + size:]
    return out


def publishes(n, size=16384):
    one = basic_publish(1, "", "nowhere") + header_frame(1, size) + body_frame(1, b"z" * size)
    return one * n


@pytest.fixture(scope="module")
def broker():
    with started_broker() as b:
        yield b


@pytest.fixture(scope="module")
def alarmed():
    """A broker whose memory alarm is on from the start: a publisher is
    blocked and no longer read after its first message."""
    b = ExtraBroker("--vm-memory-high-watermark-absolute", "1")
    yield b
    b.stop()


def test_close_ok_reaches_a_client_that_sends_more_after_close(alarmed):
    """connection.close followed at once by more frames and a half-close
    (Go clients closing from several goroutines): close-ok, then FIN."""
    for _ in range(20):
        c = RawConnection("127.0.0.1", alarmed.port)
        c.handshake()
        c.send(channel_open(2) + connection_close() + channel_open(3) + method_frame(3, (20, 40)) * 50)
        c.sock.shutdown(socket.SHUT_WR)
        got = methods(c.buf + read_to_end(c.sock))
        assert CONNECTION_CLOSE_OK in got, got
        c.sock.close()


def test_forced_close_of_a_blocked_publisher_is_read_not_reset(alarmed):
    """The broker closes (DELETE /api/connections/…) a publisher it stopped
    reading (blocked by an alarm) while the publisher's data waits unread in
    the socket: the client still reads connection.close and then a FIN."""
    api = alarmed.api
    c = RawConnection("127.0.0.1", alarmed.port)
    c.handshake()
    c.open_channel(1)
    wait_for(lambda: any(x["state"] == "running" for x in api.get("/api/connections").json))
    # The first publish blocks the connection; the rest stays unread.
    c.sock.setblocking(False)
    payload = publishes(400)
    sent = 0
    deadline = time.monotonic() + 10
    while sent < len(payload) and time.monotonic() < deadline:
        try:
            sent += c.sock.send(payload[sent:sent + 65536])
        except BlockingIOError:
            if any(x["state"] == "blocked" for x in api.get("/api/connections").json):
                break
            time.sleep(0.01)
    c.sock.setblocking(True)
    conns = wait_for(lambda: [x for x in api.get("/api/connections").json if x["state"] == "blocked"],
                     what="the publisher to be blocked")
    assert api.delete("/api/connections/" + q(conns[0]["name"])).status == 204
    got = methods(c.buf + read_to_end(c.sock))
    assert CONNECTION_CLOSE in got, got
    c.sock.close()


def test_close_ok_reaches_a_client_that_pipelines_publishes_after_close(broker):
    """connection.close followed, in the same write, by publishes with 16 KiB
    bodies and a channel.open, with no half-close: more input than the
    broker's first read takes is still unread when it has answered. The
    client reads close-ok as the last frame, then a FIN, never a reset."""
    for _ in range(20):
        c = RawConnection("127.0.0.1", broker.port)
        c.handshake()
        c.open_channel(1)
        c.send(connection_close() + publishes(16) + channel_open(2))
        got = methods(c.buf + read_to_end(c.sock))
        assert got == [CONNECTION_CLOSE_OK], got
        c.sock.close()


def test_connection_error_is_read_by_a_client_that_keeps_sending(broker):
    """The broker closes the connection (504: a method on a channel that is
    not open) while the client is still streaming publishes at it: the
    client reads connection.close, its writes are not refused, and once it
    stops, the stream ends with a FIN, never a reset."""
    for _ in range(5):
        c = RawConnection("127.0.0.1", broker.port)
        c.handshake()
        c.open_channel(1)
        chunk = publishes(4)
        stop = threading.Event()
        send_errors = []

        def keep_sending():
            try:
                for _ in range(4):
                    c.sock.sendall(chunk)
                c.sock.sendall(queue_declare(7, "on-a-closed-channel"))
                deadline = time.monotonic() + 20
                while not stop.is_set() and time.monotonic() < deadline:
                    c.sock.sendall(chunk)
            except OSError as e:
                send_errors.append(e)

        sender = threading.Thread(target=keep_sending)
        sender.start()
        try:
            close = c.expect_connection_close(timeout=10)
        finally:
            stop.set()
            sender.join()
        assert close.code == 504, close
        assert not send_errors, "the broker refused the client's writes: %r" % send_errors
        got = methods(c.buf + read_to_end(c.sock))
        assert CONNECTION_CLOSE not in got and CONNECTION_CLOSE_OK not in got, got
        c.sock.close()
