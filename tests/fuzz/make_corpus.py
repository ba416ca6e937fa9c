#!/usr/bin/python3
"""Regenerates the fuzz seed corpus (tests/fuzz/corpus/{frame,session}/) from
real traffic: starts sluiced on ephemeral ports, puts a small recording TCP
proxy in front of it, drives it with pika (and one scenario with py-amqp, whose
handshake and tables differ) through a few scenarios, and writes what crossed
the proxy.

  corpus/frame/    whole client and server byte streams (protocol header
                   stripped) plus one file per distinct frame kind seen
  corpus/table/    every distinct field table seen (client and server
                   properties, declare/bind/consume arguments, message
                   headers), and binding arguments followed by message
                   headers (fuzz_field_table matches the two)
  corpus/session/  (files named regression-* are kept: hand-made inputs that
                   once found a bug)
                   fuzz_session inputs: a layout octet, then the client
                   streams with pika's handshake (up to its channel.open on
                   channel 1) cut off, since fuzz_session sends its own; when
                   a scenario has two connections their bytes are interleaved
                   in time order with "@@SWAP@@" between turns

Usage: tests/fuzz/make_corpus.py [path/to/sluiced]   (default: $SLUICED or
build/release/cli/sluiced). Needs Debian's python3-pika and python3-amqp.
"""

import datetime
import decimal
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import amqp
import pika

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SWAP = b"@@SWAP@@"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class RecordingProxy:
    """Forwards 127.0.0.1:listen_port to the broker; records every chunk as
    (sequence, connection id, 'c2s'|'s2c', bytes)."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.chunks = []
        self.next_conn = 0
        self.threads = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                conn = self.next_conn
                self.next_conn += 1
            for src, dst, d in ((client, upstream, "c2s"), (upstream, client, "s2c")):
                t = threading.Thread(target=self._pump, args=(conn, src, dst, d), daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, conn, src, dst, direction):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with self.lock:
                self.chunks.append((len(self.chunks), conn, direction, data))
            try:
                dst.sendall(data)
            except OSError:
                return

    def take(self):
        for t in list(self.threads):
            t.join(timeout=5)
        with self.lock:
            chunks, self.chunks = self.chunks, []
            self.threads = []
        return chunks


# ---------------------------------------------------------------------------
# scenarios (each opens its own connections through the proxy)

def params(port):
    return pika.ConnectionParameters("127.0.0.1", port, heartbeat=0, blocked_connection_timeout=10)


def scenario_work_queue(port):
    with pika.BlockingConnection(params(port)) as conn:
        ch = conn.channel()
        ch.queue_declare("work", durable=False)
        props = pika.BasicProperties(
            content_type="text/plain", delivery_mode=2, priority=3, correlation_id="c1",
            message_id="m1", timestamp=1700000000, type="job", app_id="corpus",
            headers={"int": 42, "neg": -7, "str": "v", "bool": True, "list": [1, "two", False],
                     "nested": {"k": "v"}, "big": 2**40, "bytes": b"\x00\x01"})
        for i in range(3):
            ch.basic_publish("", "work", b"job %d" % i, props)
        method, _, body = ch.basic_get("work")
        ch.basic_ack(method.delivery_tag)
        method, _, body = ch.basic_get("work")
        ch.basic_nack(method.delivery_tag, requeue=True)
        ch.basic_qos(prefetch_count=2)
        got = []

        def on_message(c, m, p, b):
            got.append(m.delivery_tag)
            if len(got) == 2:
                c.basic_ack(m.delivery_tag, multiple=True)
                c.stop_consuming()
        tag = ch.basic_consume("work", on_message)
        ch.start_consuming()
        ch.basic_cancel(tag)
        ch.basic_publish("", "work", b"reject me")
        method, _, _ = ch.basic_get("work")
        ch.basic_reject(method.delivery_tag, requeue=False)
        ch.queue_purge("work")
        ch.queue_delete("work")


def scenario_confirms(port):
    with pika.BlockingConnection(params(port)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        q = ch.queue_declare("", exclusive=True).method.queue
        for i in range(3):
            ch.basic_publish("", q, b"confirmed %d" % i)
        try:
            ch.basic_publish("", "no-such-queue", b"lost", mandatory=True)
        except pika.exceptions.UnroutableError:
            pass
        ch.basic_publish("", q, b"x" * 20000)  # several body frames? one at frame_max 131072
        ch.close()


def scenario_exchanges(port):
    with pika.BlockingConnection(params(port)) as conn:
        ch = conn.channel()
        ch.exchange_declare("x.topic", "topic", auto_delete=True)
        ch.exchange_declare("x.fan", "fanout")
        ch.exchange_declare("x.hdr", "headers")
        q1 = ch.queue_declare("", exclusive=True).method.queue
        q2 = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q1, "x.topic", "a.*.c")
        ch.queue_bind(q2, "x.topic", "a.#")
        ch.exchange_bind("x.fan", "x.topic", "#")
        ch.queue_bind(q1, "x.hdr", arguments={"x-match": "any", "k": "v", "n": 1})
        ch.basic_publish("x.topic", "a.b.c", b"t")
        ch.basic_publish("x.hdr", "", b"h", pika.BasicProperties(headers={"k": "v"}))
        ch.queue_unbind(q1, "x.topic", "a.*.c")
        ch.exchange_unbind("x.fan", "x.topic", "#")
        ch.exchange_delete("x.fan")
        ch.exchange_delete("x.hdr")
        ch.exchange_declare("amq.topic", "topic", passive=True)


def scenario_tx(port):
    with pika.BlockingConnection(params(port)) as conn:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.tx_select()
        ch.basic_publish("", q, b"in tx")
        ch.tx_commit()
        ch.basic_publish("", q, b"rolled back")
        ch.tx_rollback()
        method, _, _ = ch.basic_get(q)
        ch.basic_ack(method.delivery_tag)
        ch.tx_commit()


def scenario_errors(port):
    with pika.BlockingConnection(params(port)) as conn:
        ch = conn.channel()
        try:
            ch.queue_declare("missing", passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            pass
        ch = conn.channel()
        ch.queue_declare("eq", durable=False, arguments={"x-max-length": 10})
        try:
            ch.queue_declare("eq", durable=True)
        except pika.exceptions.ChannelClosedByBroker:
            pass
        ch = conn.channel()
        ch.queue_delete("eq")


def scenario_rpc(port):
    server = pika.BlockingConnection(params(port))
    client = pika.BlockingConnection(params(port))
    try:
        sch = server.channel()
        sch.queue_declare("rpc")
        cch = client.channel()
        replies = []
        cch.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append(b), auto_ack=True)
        cch.basic_publish("", "rpc", b"2+2", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to",
                                                                  correlation_id="r1"))
        deadline = time.monotonic() + 5
        req = None
        while req is None and time.monotonic() < deadline:
            req = sch.basic_get("rpc", auto_ack=True)
            if req[0] is None:
                req = None
                server.process_data_events(0.05)
        method, props, body = req
        sch.basic_publish("", props.reply_to, b"4", pika.BasicProperties(correlation_id=props.correlation_id))
        while not replies and time.monotonic() < deadline:
            client.process_data_events(0.05)
    finally:
        client.close()
        server.close()


def scenario_unacked_then_delete(port):
    # Deliveries left unacked while their queue goes away (queue.delete, and an
    # auto-delete queue losing its last consumer): one ack away from the paths
    # that settle into a deleted queue.
    with pika.BlockingConnection(params(port)) as conn:
        ch = conn.channel()
        ch.queue_declare("doomed")
        ch.basic_publish("", "doomed", b"held")
        ch.basic_get("doomed")
        ch.queue_delete("doomed")
        ch.queue_declare("doomed-ad", auto_delete=True)
        ch.basic_publish("", "doomed-ad", b"held too")
        got = []

        def on_message(c, m, p, b):
            got.append(m.delivery_tag)
            c.stop_consuming()
        tag = ch.basic_consume("doomed-ad", on_message)
        ch.start_consuming()
        ch.basic_cancel(tag)


def scenario_py_amqp(port):
    # py-amqp logs in with AMQPLAIN and sends its own client properties.
    with amqp.Connection("127.0.0.1:%d" % port, heartbeat=0) as conn:
        ch = conn.channel()
        ch.exchange_declare("py.hdr", "headers", auto_delete=True)
        q = ch.queue_declare("", exclusive=True, auto_delete=False, arguments={"x-max-length": 100}).queue
        ch.queue_bind(q, "py.hdr", arguments={"x-match": "all", "kind": "py", "n": 7, "ok": True})
        headers = {"kind": "py", "n": 7, "ok": True, "ratio": 1.5, "price": decimal.Decimal("12.34"),
                   "at": datetime.datetime(2026, 1, 2, 3, 4, 5), "tags": ["a", 2, None], "meta": {"depth": 1}}
        ch.basic_publish(amqp.Message(b"py", application_headers=headers, content_type="application/json",
                                      delivery_mode=2, priority=1), exchange="py.hdr")
        msg = ch.basic_get(q)
        ch.basic_ack(msg.delivery_tag)
        tag = ch.basic_consume(q, arguments={"x-priority": 3})
        ch.basic_cancel(tag)
        ch.queue_unbind(q, "py.hdr", arguments={"x-match": "all", "kind": "py", "n": 7, "ok": True})
        ch.close()


SCENARIOS = [scenario_work_queue, scenario_unacked_then_delete, scenario_confirms, scenario_exchanges, scenario_tx, scenario_errors, scenario_rpc,
             scenario_py_amqp]


# ---------------------------------------------------------------------------
# frames

def split_frames(stream):
    """(frames, rest): frames as (type, channel, payload, raw bytes)."""
    frames = []
    pos = 0
    while len(stream) - pos >= 8:
        ftype, channel, size = struct.unpack(">BHI", stream[pos:pos + 7])
        end = pos + 7 + size + 1
        if end > len(stream):
            break
        frames.append((ftype, channel, stream[pos + 7:end - 1], stream[pos:end]))
        pos = end
    return frames, stream[pos:]


def strip_handshake(stream):
    """Client stream after pika's channel.open on channel 1."""
    if stream.startswith(PROTOCOL_HEADER):
        stream = stream[len(PROTOCOL_HEADER):]
    frames, _ = split_frames(stream)
    pos = 0
    for ftype, channel, payload, raw in frames:
        pos += len(raw)
        if ftype == 1 and channel == 1 and payload[:4] == struct.pack(">HH", 20, 10):
            return stream[pos:]
    return b""


def skip_shortstrs(payload, pos, n):
    for _ in range(n):
        pos += 1 + payload[pos]
    return pos


# Where a method's field table starts: (class, method) -> offset after the
# method id of the fields before it, as (fixed octets, short strings, octets).
TABLE_AT = {
    (10, 10): (2, 0, 0),   # connection.start: version; server-properties
    (10, 11): (0, 0, 0),   # connection.start-ok: client-properties
    (40, 10): (2, 2, 1),   # exchange.declare: arguments
    (40, 30): (2, 3, 1),   # exchange.bind
    (40, 40): (2, 3, 1),   # exchange.unbind
    (50, 10): (2, 1, 1),   # queue.declare
    (50, 20): (2, 3, 1),   # queue.bind
    (50, 50): (2, 3, 0),   # queue.unbind
    (60, 20): (2, 2, 1),   # basic.consume
}
BINDS = {(40, 30), (50, 20)}


def tables_in(ftype, payload):
    """[(kind, table bytes with their length prefix)] in a frame."""
    try:
        if ftype == 1 and len(payload) >= 4:
            cm = struct.unpack(">HH", payload[:4])
            if cm not in TABLE_AT:
                return []
            fixed, shortstrs, octets = TABLE_AT[cm]
            pos = skip_shortstrs(payload, 4 + fixed, shortstrs) + octets
            kind = "bind" if cm in BINDS else "method-%d-%d" % cm
        elif ftype == 2 and len(payload) >= 14:
            flags = struct.unpack(">H", payload[12:14])[0]
            if not flags & 0x2000:
                return []
            pos = skip_shortstrs(payload, 14, bin(flags & 0xC000).count("1"))
            kind = "headers"
        else:
            return []
        size = struct.unpack(">I", payload[pos:pos + 4])[0]
        table = payload[pos:pos + 4 + size]
        return [(kind, table)] if len(table) == 4 + size else []
    except (IndexError, struct.error):
        return []


def frame_kind(ftype, payload):
    if ftype == 1 and len(payload) >= 4:
        return "method-%d-%d" % struct.unpack(">HH", payload[:4])
    return {2: "header", 3: "body", 8: "heartbeat"}.get(ftype, "type-%d" % ftype)


def main():
    sluiced = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "SLUICED", os.path.join(REPO, "build", "release", "cli", "sluiced"))
    out_frame = os.path.join(HERE, "corpus", "frame")
    out_session = os.path.join(HERE, "corpus", "session")
    out_table = os.path.join(HERE, "corpus", "table")
    for d in (out_frame, out_session, out_table):
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            if not name.startswith("regression-"):
                os.remove(os.path.join(d, name))

    workdir = tempfile.mkdtemp(prefix="sluice-corpus-")
    amqp_port, http_port = free_port(), free_port()
    log = open(os.path.join(workdir, "sluiced.log"), "wb")
    proc = subprocess.Popen([sluiced, "--amqp-port", str(amqp_port), "--http-port", str(http_port),
                             "--prometheus-port", "0",
                             "--amqp-bind", "127.0.0.1", "--http-bind", "127.0.0.1",
                             "--data-dir", os.path.join(workdir, "data"), "--heartbeat", "0"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_port(amqp_port, time.monotonic() + 15):
            raise SystemExit("sluiced did not start; see %s" % log.name)
        proxy = RecordingProxy(amqp_port)
        seen_kinds = set()
        seen_tables = set()
        for scenario in SCENARIOS:
            name = scenario.__name__[len("scenario_"):]
            scenario(proxy.port)
            chunks = proxy.take()
            streams = {}
            for _, conn, direction, data in chunks:
                streams.setdefault((conn, direction), bytearray()).extend(data)
            # frame corpus: whole streams and one file per new frame kind
            for (conn, direction), data in sorted(streams.items()):
                data = bytes(data)
                if data.startswith(PROTOCOL_HEADER):
                    data = data[len(PROTOCOL_HEADER):]
                with open(os.path.join(out_frame, "%s-%d-%s" % (name, conn, direction)), "wb") as f:
                    f.write(data)
                for ftype, _, payload, raw in split_frames(data)[0]:
                    kind = frame_kind(ftype, payload)
                    if kind in seen_kinds:
                        continue
                    seen_kinds.add(kind)
                    with open(os.path.join(out_frame, "one-" + kind), "wb") as f:
                        f.write(raw)
            # table corpus: each distinct table; binding arguments + headers
            found = [t for (_, _), data in sorted(streams.items())
                     for ftype, _, payload, _ in split_frames(bytes(data).removeprefix(PROTOCOL_HEADER))[0]
                     for t in tables_in(ftype, payload)]
            binds = [t for kind, t in found if kind == "bind"]
            headers = [t for kind, t in found if kind == "headers"]
            for kind, table in found:
                if table not in seen_tables:
                    seen_tables.add(table)
                    with open(os.path.join(out_table, "%s-%s-%d" % (name, kind, len(seen_tables))), "wb") as f:
                        f.write(table)
            for i, bind in enumerate(binds[:2]):
                for j, hdr in enumerate(headers[:2]):
                    with open(os.path.join(out_table, "%s-match-%d-%d" % (name, i, j)), "wb") as f:
                        f.write(bind + hdr)
            # session corpus: client bytes after the handshake, interleaved
            conns = sorted({conn for (conn, d) in streams if d == "c2s"})
            skip = {c: len(bytes(streams[(c, "c2s")])) - len(strip_handshake(bytes(streams[(c, "c2s")])))
                    for c in conns}
            if len(conns) > 2:
                raise SystemExit("scenario %s uses more than two connections" % name)
            seq = bytearray()
            current = conns[0] if conns else None
            consumed = {c: 0 for c in conns}
            for _, conn, direction, data in chunks:
                if direction != "c2s":
                    continue
                start = max(0, skip[conn] - consumed[conn])
                consumed[conn] += len(data)
                data = data[start:]
                if not data:
                    continue
                if conn != current:
                    seq += SWAP
                    current = conn
                seq += data
            for layout in (0x00, 0x05, 0x18):
                with open(os.path.join(out_session, "%s-%02x" % (name, layout)), "wb") as f:
                    f.write(bytes([layout]) + bytes(seq))
        print("wrote %d frame seeds, %d table seeds, %d session seeds" % (
            len(os.listdir(out_frame)), len(os.listdir(out_table)), len(os.listdir(out_session))))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
