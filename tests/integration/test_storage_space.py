"""The disk and memory a long queue takes come back by themselves (issue 12,
item 5): within a minute of a queue's deletion or drain, with no restart and
no manual step, the data dir is back near its starting size and RSS near
idle.

Transient messages that leave memory go to the spill file (no WAL, no sync);
persistent ones are chunks in RocksDB whose key range is compacted once the
queue is deleted or drained. Before that work, a transient flood left
gigabytes in the data dir after its queue was deleted, still there after a
restart, and a drained 1M-message backlog left 549 MB."""

import os
import time

import pika

import amqp_raw
from conftest import unique, wait_for
from proc_stats import rss_bytes, sanitized_build

MIB = 1 << 20


def dir_bytes(path):
    """Bytes allocated to the files under path (what df would see)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass  # compacted away while we looked
    return total


def flood(b, queue, count, body, persistent=False):
    """Publishes `count` messages of `body` to `queue` through the default
    exchange as fast as a socket takes them (pre-built frames, no confirms),
    then waits until the broker has them all queued."""
    raw = amqp_raw.RawConnection(b.host, b.port, timeout=30)
    raw.handshake()
    raw.open_channel(1)
    props = b"\x02" if persistent else b""           # delivery_mode 2
    flags = 0x1000 if persistent else 0
    one = (amqp_raw.basic_publish(1, "", queue)
           + amqp_raw.header_frame(1, len(body), flags=flags, props=props)
           + amqp_raw.body_frame(1, body))
    chunk = one * 256
    sent = 0
    while sent < count:
        n = min(256, count - sent)
        raw.send(chunk if n == 256 else one * n)
        sent += n
    conn = b.pika()
    try:
        ch = conn.channel()
        wait_for(lambda: ch.queue_declare(queue, passive=True).method.message_count == count,
                 timeout=120, what="%d messages queued in %s" % (count, queue))
    finally:
        conn.close()
    raw.close()


def test_a_deleted_transient_flood_gives_its_disk_and_memory_back(fresh_broker):
    b = fresh_broker
    n = 8000 if sanitized_build() else 40000
    # ASan's quarantine keeps freed memory resident: there only the disk
    # figures mean something.
    slack = 1024 * MIB if sanitized_build() else 0
    body = b"t" * 4096
    q = unique("space.transient")
    conn = b.pika()
    conn.channel().queue_declare(q)
    start_disk = dir_bytes(b.data_dir)
    idle_rss = rss_bytes(b.proc.pid)

    flood(b, q, n, body)
    # The flood (160 MB) left memory: it is on disk, not in RSS.
    assert dir_bytes(b.data_dir) > start_disk + n * len(body) // 2
    assert rss_bytes(b.proc.pid) < idle_rss + 96 * MIB + slack

    conn.channel().queue_delete(q)
    wait_for(lambda: dir_bytes(b.data_dir) < start_disk + 4 * MIB, timeout=60,
             what="the data dir back near its starting size (now %d, started %d)"
             % (dir_bytes(b.data_dir), start_disk))
    assert rss_bytes(b.proc.pid) < idle_rss + 64 * MIB + slack
    conn.close()


def test_a_drained_persistent_backlog_gives_its_disk_back(fresh_broker):
    b = fresh_broker
    n = 5000 if sanitized_build() else 20000
    body = b"p" * 4096
    q = unique("space.persistent")
    conn = b.pika()
    ch = conn.channel()
    ch.queue_declare(q, durable=True)
    start_disk = dir_bytes(b.data_dir)

    flood(b, q, n, body, persistent=True)
    assert dir_bytes(b.data_dir) > start_disk + n * len(body) // 2

    got = 0
    ch.basic_qos(prefetch_count=1000)
    for method, _props, _body in ch.consume(q, auto_ack=False, inactivity_timeout=30):
        assert method is not None, "the queue stopped delivering after %d of %d" % (got, n)
        got += 1
        if got % 500 == 0 or got == n:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if got == n:
            break
    ch.cancel()
    assert ch.queue_declare(q, durable=True, passive=True).method.message_count == 0
    wait_for(lambda: dir_bytes(b.data_dir) < start_disk + 16 * MIB, timeout=60,
             what="the data dir back near its starting size after the drain (now %d, started %d)"
             % (dir_bytes(b.data_dir), start_disk))
    conn.close()


def test_paged_messages_survive_a_restart_only_if_persistent(fresh_broker):
    """Both kinds page out of a long durable queue; after a restart the
    persistent ones are all back, in order and redelivered, the transient
    ones are gone (they were never written to the store)."""
    b = fresh_broker
    n = 12000
    q = unique("space.mixed")
    conn = b.pika()
    ch = conn.channel()
    ch.queue_declare(q, durable=True)
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", q, b"%d" % i,
                         pika.BasicProperties(delivery_mode=2 if i % 2 == 0 else 1))
    assert ch.queue_declare(q, durable=True, passive=True).method.message_count == n
    conn.close()

    b.kill9()
    b.restart()
    conn = b.pika()
    ch = conn.channel()
    assert ch.queue_declare(q, durable=True, passive=True).method.message_count == n // 2
    expected = 0
    while True:
        method, _props, body = ch.basic_get(q, auto_ack=True)
        if method is None:
            break
        assert body == b"%d" % expected
        assert method.redelivered
        expected += 2
    assert expected == n
    conn.close()


def test_a_reply_queue_per_call_leaves_memory_where_it_started(fresh_broker):
    """RPC clients that declare an exclusive reply queue for every call (and
    cancel, which deletes it): the connection's list of its exclusive queues
    held a weak reference to each, and with the queue and its control block
    in one allocation that kept every queue's memory until the connection
    closed (a million calls: 724 MiB peak)."""
    from test_sluice_perf import run_perf
    b = fresh_broker
    calls = 4000 if sanitized_build() else 60000
    slack = 1024 * MIB if sanitized_build() else 0
    idle_rss = rss_bytes(b.proc.pid)
    s, _ = run_perf(b, "--rpc-queue-per-call", "-x", "1", "-y", "1", "-C", str(calls), timeout=150)
    assert s["rpc_calls"] == calls
    peak = s["broker_peak_rss_kib"] * 1024
    # 60,000 queues pinned were about 40 MiB; one at a time is nothing.
    assert peak < idle_rss + 16 * MIB + slack, "peak RSS %d MiB, idle %d MiB" % (peak // MIB, idle_rss // MIB)
