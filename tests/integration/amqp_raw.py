"""A deliberately small AMQP 0-9-1 client built by hand over a raw socket,
for sending what real clients never send.  Independent of Sluice's codec.

Frame: type(1) channel(2) size(4) payload(size) frame-end(0xCE).
Method payload: class-id(2) method-id(2) arguments."""

import socket
import struct
import time

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = 0xCE
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8

# (class, method)
CONNECTION_START = (10, 10)
CONNECTION_START_OK = (10, 11)
CONNECTION_TUNE = (10, 30)
CONNECTION_TUNE_OK = (10, 31)
CONNECTION_OPEN = (10, 40)
CONNECTION_OPEN_OK = (10, 41)
CONNECTION_CLOSE = (10, 50)
CONNECTION_CLOSE_OK = (10, 51)
CHANNEL_OPEN = (20, 10)
CHANNEL_OPEN_OK = (20, 11)
CHANNEL_CLOSE = (20, 40)
CHANNEL_CLOSE_OK = (20, 41)
QUEUE_DECLARE = (50, 10)
QUEUE_DECLARE_OK = (50, 11)
BASIC_CONSUME = (60, 20)
BASIC_CONSUME_OK = (60, 21)
BASIC_PUBLISH = (60, 40)
BASIC_DELIVER = (60, 60)
BASIC_GET = (60, 70)
BASIC_GET_OK = (60, 71)
BASIC_GET_EMPTY = (60, 72)


# --------------------------------------------------------------------------
# encoding

def octet(v):
    return struct.pack(">B", v)


def short(v):
    return struct.pack(">H", v)


def long_(v):
    return struct.pack(">I", v)


def longlong(v):
    return struct.pack(">Q", v)


def shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    assert len(b) < 256
    return octet(len(b)) + b


def longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return long_(len(b)) + b


def bits(*flags):
    v = 0
    for i, f in enumerate(flags):
        if f:
            v |= 1 << i
    return octet(v)


def table(d=None):
    out = b""
    for k, v in (d or {}).items():
        out += shortstr(k)
        if isinstance(v, bool):
            out += b"t" + octet(1 if v else 0)
        elif isinstance(v, int):
            out += b"l" + struct.pack(">q", v)
        elif isinstance(v, dict):
            out += b"F" + table(v)
        else:
            out += b"S" + longstr(v)
    return long_(len(out)) + out


def frame(ftype, channel, payload, end=FRAME_END):
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + octet(end)


def method_frame(channel, cm, args=b""):
    return frame(FRAME_METHOD, channel, struct.pack(">HH", *cm) + args)


def header_frame(channel, body_size, class_id=60, flags=0, props=b""):
    return frame(FRAME_HEADER, channel,
                 struct.pack(">HHQH", class_id, 0, body_size, flags) + props)


def body_frame(channel, body):
    return frame(FRAME_BODY, channel, body)


def heartbeat_frame():
    return frame(FRAME_HEARTBEAT, 0, b"")


def start_ok(user="guest", password="guest"):
    return method_frame(0, CONNECTION_START_OK,
                        table({"product": "sluice-raw-test",
                               "capabilities": {"authentication_failure_close": True}})
                        + shortstr("PLAIN") + longstr(b"\0%s\0%s" % (user.encode(), password.encode()))
                        + shortstr("en_US"))


def tune_ok(channel_max, frame_max, heartbeat):
    return method_frame(0, CONNECTION_TUNE_OK, short(channel_max) + long_(frame_max) + short(heartbeat))


def connection_open(vhost="/"):
    return method_frame(0, CONNECTION_OPEN, shortstr(vhost) + shortstr("") + bits(False))


def connection_close_ok():
    return method_frame(0, CONNECTION_CLOSE_OK)


def channel_open(ch):
    return method_frame(ch, CHANNEL_OPEN, shortstr(""))


def queue_declare(ch, name, passive=False, durable=False, exclusive=False,
                  auto_delete=False, nowait=False, arguments=None):
    return method_frame(ch, QUEUE_DECLARE, short(0) + shortstr(name)
                        + bits(passive, durable, exclusive, auto_delete, nowait)
                        + table(arguments))


def basic_publish(ch, exchange, routing_key, mandatory=False, immediate=False):
    return method_frame(ch, BASIC_PUBLISH, short(0) + shortstr(exchange)
                        + shortstr(routing_key) + bits(mandatory, immediate))


def basic_consume(ch, queue, tag="", no_local=False, no_ack=False, exclusive=False,
                  nowait=False):
    return method_frame(ch, BASIC_CONSUME, short(0) + shortstr(queue) + shortstr(tag)
                        + bits(no_local, no_ack, exclusive, nowait) + table())


def basic_get(ch, queue, no_ack=True):
    return method_frame(ch, BASIC_GET, short(0) + shortstr(queue) + bits(no_ack))


def publish_message(ch, exchange, routing_key, body, frame_max=131072):
    out = basic_publish(ch, exchange, routing_key) + header_frame(ch, len(body))
    step = frame_max - 8
    for i in range(0, len(body), step):
        out += body_frame(ch, body[i:i + step])
    return out


# --------------------------------------------------------------------------
# decoding

class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        b = self.data[self.pos:self.pos + n]
        if len(b) != n:
            raise ValueError("short read")
        self.pos += n
        return b

    def octet(self):
        return self.take(1)[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def long(self):
        return struct.unpack(">I", self.take(4))[0]

    def longlong(self):
        return struct.unpack(">Q", self.take(8))[0]

    def shortstr(self):
        return self.take(self.octet()).decode("utf-8", "replace")

    def longstr(self):
        return self.take(self.long())

    def table(self):
        end = self.long()
        end += self.pos
        out = {}
        while self.pos < end:
            key = self.shortstr()
            out[key] = self.field()
        return out

    def field(self):
        t = self.take(1)
        simple = {b"t": ">?", b"b": ">b", b"B": ">B", b"s": ">h", b"u": ">H",
                  b"I": ">i", b"i": ">I", b"l": ">q", b"L": ">Q", b"f": ">f",
                  b"d": ">d", b"T": ">Q"}
        if t in simple:
            fmt = simple[t]
            return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        if t == b"D":
            scale = self.octet()
            return struct.unpack(">i", self.take(4))[0] / (10 ** scale)
        if t in (b"S", b"x"):
            return self.longstr()
        if t == b"F":
            return self.table()
        if t == b"A":
            end = self.long() + self.pos
            items = []
            while self.pos < end:
                items.append(self.field())
            return items
        if t == b"V":
            return None
        raise ValueError("unknown field type %r" % t)


class Frame:
    def __init__(self, ftype, channel, payload):
        self.type = ftype
        self.channel = channel
        self.payload = payload
        self.size = len(payload) + 8         # as counted against frame_max

    @property
    def method(self):
        if self.type != FRAME_METHOD:
            return None
        return struct.unpack(">HH", self.payload[:4])

    def args(self):
        return Reader(self.payload[4:])

    def __repr__(self):
        if self.type == FRAME_METHOD:
            return "<method %s ch%d %r>" % (self.method, self.channel, self.payload[4:60])
        return "<frame type %d ch%d %d bytes>" % (self.type, self.channel, len(self.payload))


class Closed(Exception):
    """The peer closed the socket."""


class Close:
    """A connection.close or channel.close received."""

    def __init__(self, f):
        r = f.args()
        self.channel = f.channel
        self.kind = "connection" if f.method == CONNECTION_CLOSE else "channel"
        self.code = r.short()
        self.text = r.shortstr()
        self.class_id = r.short()
        self.method_id = r.short()

    def __repr__(self):
        return "%s.close %d %r (class %d method %d)" % (
            self.kind, self.code, self.text, self.class_id, self.method_id)


class RawConnection:
    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.timeout = timeout
        self.frames_seen = []
        self.frame_max = None
        self.heartbeats_received = 0
        self.server_properties = {}

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the broker in time (have %r)" % self.buf[:80])
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from the broker in time (have %r)" % self.buf[:80])
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise Closed()
        self.buf += chunk

    def read_exact(self, n, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            if len(self.buf) >= 7:
                ftype, ch, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) >= 8 + size:
                    payload = self.buf[7:7 + size]
                    end = self.buf[7 + size]
                    self.buf = self.buf[8 + size:]
                    assert end == FRAME_END, "broker sent a bad frame-end octet %#x" % end
                    f = Frame(ftype, ch, payload)
                    self.frames_seen.append(f)
                    if ftype == FRAME_HEARTBEAT:
                        self.heartbeats_received += 1
                    return f
            self._fill(deadline)

    def read_method(self, timeout=None, skip_heartbeats=True):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            f = self.read_frame(timeout=max(0.001, deadline - time.monotonic()))
            if f.type == FRAME_HEARTBEAT and skip_heartbeats:
                continue
            return f

    def expect_method(self, cm, timeout=None):
        f = self.read_method(timeout)
        if f.method in (CONNECTION_CLOSE, CHANNEL_CLOSE) and f.method != cm:
            raise AssertionError("expected %s, got %r" % (cm, Close(f)))
        assert f.method == cm, "expected method %s, got %r" % (cm, f)
        return f

    def handshake(self, frame_max=131072, heartbeat=0, channel_max=None, vhost="/"):
        """Protocol header through connection.open-ok.  Returns the tune
        values the server proposed (channel_max, frame_max, heartbeat)."""
        self.send(PROTOCOL_HEADER)
        start = self.expect_method(CONNECTION_START)
        r = start.args()
        assert (r.octet(), r.octet()) == (0, 9), "connection.start version"
        self.server_properties = r.table()
        self.send(start_ok())
        tune = self.expect_method(CONNECTION_TUNE).args()
        proposed = (tune.short(), tune.long(), tune.short())
        if channel_max is None:
            channel_max = proposed[0]
        if proposed[1]:
            frame_max = min(frame_max, proposed[1])
        self.frame_max = frame_max
        self.send(tune_ok(channel_max, frame_max, heartbeat))
        self.send(connection_open(vhost))
        self.expect_method(CONNECTION_OPEN_OK)
        return proposed

    @property
    def server_product(self):
        p = self.server_properties.get("product", b"")
        return p.decode() if isinstance(p, bytes) else str(p)

    def open_channel(self, ch=1):
        self.send(channel_open(ch))
        self.expect_method(CHANNEL_OPEN_OK)

    def expect_close(self, timeout=None):
        """Read until a connection.close or channel.close; return it."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            f = self.read_method(timeout=max(0.001, deadline - time.monotonic()))
            if f.method in (CONNECTION_CLOSE, CHANNEL_CLOSE):
                return Close(f)

    def expect_connection_close(self, timeout=None):
        c = self.expect_close(timeout)
        assert c.kind == "connection", "expected connection.close, got %r" % c
        return c

    def expect_eof(self, timeout=None):
        """Everything up to the socket closing (heartbeats and other frames
        are read and dropped).  Raises TimeoutError if it stays open."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while True:
                self.read_frame(timeout=max(0.001, deadline - time.monotonic()))
        except Closed:
            return
        except AssertionError:
            # garbage after the close is not our business; keep reading raw
            while True:
                self.buf = b""
                self._fill(deadline)

    def finish_close(self, timeout=None):
        """Answer a connection.close with close-ok and wait for the socket to
        close."""
        try:
            self.send(connection_close_ok())
        except OSError:
            pass
        self.expect_eof(timeout)
