"""A full disk: the disk alarm blocks publishers (connection.blocked), consumers
keep draining, publishing resumes when space returns, and nothing crashes.

The data dir is a small tmpfs the test mounts (CI runs as root); filling it
with a file is the "full disk". Needs `mount`; a machine that refuses it
fails the test rather than skipping it, so a missing capability is noticed.
"""
import os
import subprocess
import tempfile
import threading
import time

import pika
import pytest

from conftest import _sluiced_path, amqp_answers, free_port, wait_for

pytestmark = pytest.mark.deadline(60)

LIMIT = 16 << 20  # --disk-free-limit


@pytest.fixture
def small_disk():
    mnt = tempfile.mkdtemp(prefix="sluice-disk-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt], capture_output=True, text=True)
    assert r.returncode == 0, "cannot mount a tmpfs for the full-disk test: %s" % r.stderr
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt])
        os.rmdir(mnt)


def start_sluiced(data_dir, log_path):
    port = free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen([_sluiced_path(), "--amqp-port", str(port), "--http-port", "0", "--prometheus-port", "0",
                             "--data-dir", data_dir, "--disk-free-limit", str(LIMIT)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_for(lambda: amqp_answers("127.0.0.1", port) or proc.poll() is not None, 15, what="sluiced to listen")
    assert proc.poll() is None, open(log_path).read()
    return proc, port


def fill(path, mnt):
    """Write a file until the volume is (nearly) full."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    with open(path, "wb") as f:
        f.write(b"\0" * max(0, free - (1 << 20)))  # leave 1 MiB: under the limit


def test_disk_alarm_blocks_publishers_and_recovers(small_disk):
    log_path = os.path.join(tempfile.mkdtemp(), "sluiced.log")
    proc, port = start_sluiced(os.path.join(small_disk, "data"), log_path)
    try:
        params = pika.ConnectionParameters("127.0.0.1", port, blocked_connection_timeout=30, heartbeat=0)
        pub = pika.BlockingConnection(params)
        events = []
        pub.add_on_connection_blocked_callback(lambda c, m: events.append(("blocked", m.method.reason)))
        pub.add_on_connection_unblocked_callback(lambda c, m: events.append(("unblocked",)))
        ch = pub.channel()
        ch.queue_declare("disk-q", durable=True)
        ch.confirm_delivery()
        for i in range(20):
            ch.basic_publish("", "disk-q", b"before-%d" % i, pika.BasicProperties(delivery_mode=2))

        cons = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
        cch = cons.channel()

        filler = os.path.join(small_disk, "filler")
        fill(filler, small_disk)
        deadline = time.monotonic() + 10
        while not events and time.monotonic() < deadline:
            pub.process_data_events(0.1)
        assert events and events[0] == ("blocked", "low on disk"), events

        # Consumers are not blocked: they drain the queue during the alarm.
        got = []
        while True:
            m, _, body = cch.basic_get("disk-q", auto_ack=False)
            if m is None:
                break
            cch.basic_ack(m.delivery_tag)
            got.append(body)
        assert got == [b"before-%d" % i for i in range(20)]

        # A publish now waits (the broker stops reading this connection) and
        # goes through once space returns.
        threading.Timer(1.5, os.remove, [filler]).start()
        t0 = time.monotonic()
        ch.basic_publish("", "disk-q", b"during", pika.BasicProperties(delivery_mode=2))  # confirmed
        waited = time.monotonic() - t0
        assert waited >= 1.0, "the publish was confirmed during the alarm (after %.2fs)" % waited
        pub.process_data_events(0.2)
        assert ("unblocked",) in events, events
        m, _, body = cch.basic_get("disk-q", auto_ack=True)
        assert body == b"during"
        assert proc.poll() is None, "sluiced died"
        pub.close()
        cons.close()
    finally:
        proc.terminate()
        rc = proc.wait(15)
        log = open(log_path).read()
        assert rc == 0, "sluiced exited %s\n%s" % (rc, log)
        assert "disk alarm set" in log and "disk alarm cleared" in log, log
