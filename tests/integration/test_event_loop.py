"""sluiced's event loop with and without busy-polling (--busy-poll-us):
request/reply, confirms of persistent messages (completed by the storage
thread) and SIGTERM work in both loops, and a busy-polling broker that goes
idle stops polling and sleeps.  Needs sluiced processes of its own: skipped
against an external broker."""

import os
import subprocess
import time
import uuid

import pika
import pytest

from conftest import _sluiced_path, started_broker, unique, wait_for

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def cpu_seconds(pid):
    """utime + stime of a process, seconds (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rpc_round_trips(b, n):
    """n request/reply calls through a server-side queue and direct
    reply-to, on two connections (client and server)."""
    server_conn, client_conn = b.pika(), b.pika()
    try:
        srv = server_conn.channel()
        q = unique("el-rpc")
        srv.queue_declare(queue=q, auto_delete=True)
        cli = client_conn.channel()
        replies = []
        cli.basic_consume(queue=DIRECT_REPLY_TO, auto_ack=True,
                          on_message_callback=lambda ch, m, p, body: replies.append((p.correlation_id, body)))
        for i in range(n):
            cid = uuid.uuid4().hex
            cli.basic_publish(exchange="", routing_key=q, body=b"%d" % i,
                              properties=pika.BasicProperties(reply_to=DIRECT_REPLY_TO, correlation_id=cid))
            req = wait_for(lambda: srv.basic_get(queue=q, auto_ack=True), 5, what="request %d" % i)
            method, props, body = req
            srv.basic_publish(exchange="", routing_key=props.reply_to, body=body + b"!",
                              properties=pika.BasicProperties(correlation_id=props.correlation_id))
            wait_for(lambda: client_conn.process_data_events(0) or len(replies) > i, 5, what="reply %d" % i)
            assert replies[i] == (cid, b"%d!" % i)
    finally:
        client_conn.close()
        server_conn.close()


def confirmed_persistent_publish(b, n):
    conn = b.pika()
    try:
        ch = conn.channel()
        q = unique("el-durable")
        ch.queue_declare(queue=q, durable=True)
        ch.confirm_delivery()
        for i in range(n):  # BlockingChannel raises if one is nacked or not confirmed
            ch.basic_publish(exchange="", routing_key=q, body=b"p%d" % i,
                             properties=pika.BasicProperties(delivery_mode=2))
        assert ch.queue_declare(queue=q, passive=True).method.message_count == n
        ch.queue_delete(queue=q)
    finally:
        conn.close()


@pytest.fixture
def broker_with(request):
    """A sluiced of the test's own, started with the options given."""
    if os.environ.get("SLUICE_TEST_AMQP_PORT"):
        pytest.skip("needs a sluiced started by the test (SLUICED)")
    opened = []

    def start(*args):
        cm = started_broker(extra_args=args)
        b = cm.__enter__()
        opened.append(cm)
        return b

    yield start
    for cm in reversed(opened):
        cm.__exit__(None, None, None)   # SIGTERM; fails the test on an unclean exit


@pytest.mark.parametrize("busy_poll_us", ["0", "100", "2000"])
def test_rpc_and_confirms_in_either_loop(broker_with, busy_poll_us):
    b = broker_with("--busy-poll-us", busy_poll_us)
    rpc_round_trips(b, 50)
    confirmed_persistent_publish(b, 50)
    # (the fixture then checks that SIGTERM ends the loop with exit code 0)


def test_idle_busy_polling_broker_sleeps(broker_with):
    # A window far longer than any gap here: were the loop never to block,
    # the broker would burn a whole core while idle.
    b = broker_with("--busy-poll-us", "10000")
    rpc_round_trips(b, 200)
    conn = b.pika()      # an idle connection with heartbeats stays open
    try:
        c0, t0 = cpu_seconds(b.proc.pid), time.monotonic()
        time.sleep(1.5)  # the measurement interval (nothing to wait for)
        used = cpu_seconds(b.proc.pid) - c0
        elapsed = time.monotonic() - t0
        assert used / elapsed < 0.15, "idle broker used %.0f%% of a core" % (100 * used / elapsed)
    finally:
        conn.close()


@pytest.mark.parametrize("value", ["-1", "10001", "many"])
def test_busy_poll_out_of_range_is_refused(value, tmp_path):
    p = subprocess.run([_sluiced_path(), "--busy-poll-us", value, "--amqp-port", "0", "--http-port", "0", "--prometheus-port", "0",
                        "--data-dir", str(tmp_path / "data")],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "busy-poll-us" in p.stderr
