"""A program, not a test (issue 15, item 3): a million delayed messages.

  /usr/bin/python3 tests/bench/delayed_million.py build/release/cli/sluiced [--count N]
      [--max-delay-ms MS] [--body-size B] [--window W]

Starts sluiced on free ports with a temporary data dir, declares a durable
x-delayed-message exchange (x-delayed-type direct) bound to a durable queue
with a consumer (auto-ack), and publishes COUNT (default 1,000,000) persistent
messages with publisher confirms (W unconfirmed at most, default 2,000), each
with a random x-delay in [0, MAX_DELAY_MS] (default 60,000) and a body of B
bytes (default 128) that carries its due time (publish time + x-delay). The
publisher and the consumer are processes of their own (raw AMQP over a
socket, no client library, so Python keeps up).

Prints the publish rate (confirmed messages / s), the broker's peak RSS
(VmHWM), the idle RSS before, and the lateness of each delivery (receive
time - due time): p50, p99, max, and how many came early (more than 1 ms
before the publisher's due time: the broker's clock has whole ms).
"""
import argparse
import multiprocessing as mp
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import amqp_raw as raw  # noqa: E402
from conftest import amqp_answers, free_port, wait_for  # noqa: E402

CONFIRM_SELECT = (85, 10)
CONFIRM_SELECT_OK = (85, 11)
BASIC_ACK = (60, 80)
BASIC_DELIVER = (60, 60)
BASIC_CONSUME_OK = (60, 21)
EXCHANGE_DECLARE_OK = (40, 11)
QUEUE_DECLARE_OK = (50, 11)
QUEUE_BIND_OK = (50, 21)
FLAGS = 0x2000 | 0x1000  # headers, delivery-mode


def connect(port):
    c = raw.RawConnection("127.0.0.1", port, timeout=30.0)
    c.handshake(heartbeat=0)
    c.open_channel(1)
    return c


def setup(port):
    c = connect(port)
    c.send(raw.method_frame(1, (40, 10), raw.short(0) + raw.shortstr("dx") + raw.shortstr("x-delayed-message")
                            + raw.bits(False, True, False, False, False) + raw.table({"x-delayed-type": "direct"})))
    c.expect_method(EXCHANGE_DECLARE_OK)
    c.send(raw.queue_declare(1, "dq", durable=True))
    c.expect_method(QUEUE_DECLARE_OK)
    c.send(raw.method_frame(1, (50, 20), raw.short(0) + raw.shortstr("dq") + raw.shortstr("dx") + raw.shortstr("k")
                            + raw.bits(False) + raw.table({})))
    c.expect_method(QUEUE_BIND_OK)
    c.close()


def publisher(port, count, max_delay, body_size, window, out):
    c = connect(port)
    c.send(raw.method_frame(1, CONFIRM_SELECT, raw.bits(False)))
    c.expect_method(CONFIRM_SELECT_OK)
    rnd = random.Random(1)
    pad = b"p" * max(0, body_size - 16)
    publish = raw.basic_publish(1, "dx", "k")
    sent = settled = 0
    start = time.time()
    while settled < count:
        out_frames = []
        while sent < count and sent - settled < window:
            d = rnd.randint(0, max_delay)
            body = struct.pack(">Qd", sent, time.time() + d / 1000.0) + pad
            out_frames.append(publish + raw.header_frame(1, len(body), flags=FLAGS,
                                                         props=raw.table({"x-delay": d}) + raw.octet(2))
                              + raw.body_frame(1, body))
            sent += 1
        if out_frames:
            c.send(b"".join(out_frames))
        f = c.read_method(timeout=60.0)
        assert f.method == BASIC_ACK, f
        r = f.args()
        tag, multiple = r.longlong(), r.octet() & 1
        settled = tag if multiple else settled + 1
    out.put(("published", count, time.time() - start))
    c.close()


def consumer(port, count, out, ready):
    c = connect(port)
    c.send(raw.basic_consume(1, "dq", tag="bench", no_ack=True))
    c.expect_method(BASIC_CONSUME_OK)
    ready.set()
    sock = c.sock
    sock.settimeout(None)
    buf = bytearray()
    lateness = []
    state = 0  # 0: want deliver, 1: want header, 2: want body
    need = 0
    body = bytearray()
    got = 0
    while got < count:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
        at = 0
        while len(buf) - at >= 7:
            ftype, _ch, size = struct.unpack_from(">BHI", buf, at)
            if len(buf) - at < 8 + size:
                break
            payload = bytes(buf[at + 7:at + 7 + size])
            at += 8 + size
            if ftype == 1:
                cm = struct.unpack_from(">HH", payload, 0)
                if cm == BASIC_DELIVER:
                    state = 1
            elif ftype == 2 and state == 1:
                need = struct.unpack_from(">Q", payload, 4)[0]
                body = bytearray()
                state = 2
            elif ftype == 3 and state == 2:
                body += payload
                if len(body) >= need:
                    now = time.time()
                    _i, due = struct.unpack_from(">Qd", body, 0)
                    lateness.append(now - due)
                    got += 1
                    state = 0
        del buf[:at]
    out.put(("consumed", lateness))


def vm(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sluiced")
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--max-delay-ms", type=int, default=60_000)
    ap.add_argument("--body-size", type=int, default=128)
    ap.add_argument("--window", type=int, default=2000)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-delayed-")
    port = free_port()
    broker = subprocess.Popen([a.sluiced, "--amqp-port", str(port), "--http-port", "0", "--prometheus-port", "0",
                               "--data-dir", work + "/d"], stdout=open(work + "/log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: amqp_answers("127.0.0.1", port), 15)
        setup(port)
        idle = vm(broker.pid, "VmRSS")
        out = mp.Queue()
        ready = mp.Event()
        cons = mp.Process(target=consumer, args=(port, a.count, out, ready))
        cons.start()
        ready.wait(30)
        pub = mp.Process(target=publisher, args=(port, a.count, a.max_delay_ms, a.body_size, a.window, out))
        t0 = time.time()
        pub.start()
        results = {}
        rss_peak = idle
        while len(results) < 2:
            try:
                kind, *rest = out.get(timeout=0.5)
                results[kind] = rest
            except Exception:
                pass
            rss_peak = max(rss_peak, vm(broker.pid, "VmRSS"))
            if time.time() - t0 > a.max_delay_ms / 1000.0 + 600:
                raise SystemExit("gave up waiting (%r)" % list(results))
        pub.join()
        cons.join()
        hwm = vm(broker.pid, "VmHWM")
        n, secs = results["published"]
        late = sorted(results["consumed"][0])

        def pct(p):
            return late[min(len(late) - 1, int(p * len(late)))] * 1000.0

        early = sum(1 for x in late if x < -0.001)
        print("delayed_million: %d messages, %d B bodies, x-delay 0..%d ms, window %d, persistent + confirms"
              % (n, a.body_size, a.max_delay_ms, a.window))
        print("  publish: %.0f msg/s confirmed (%.1f s)" % (n / secs, secs))
        print("  broker RSS: idle %.1f MiB, peak %.1f MiB (VmHWM %.1f MiB)"
              % (idle / 2**20, rss_peak / 2**20, hwm / 2**20))
        print("  delivered %d; lateness (receive - due) p50 %.1f ms, p99 %.1f ms, max %.1f ms; early (> 1 ms): %d"
              % (len(late), pct(0.50), pct(0.99), late[-1] * 1000.0, early))
        print("  total run %.1f s" % (time.time() - t0))
    finally:
        broker.terminate()
        broker.wait(30)


if __name__ == "__main__":
    main()
