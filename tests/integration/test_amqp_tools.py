"""librabbitmq (rabbitmq-c) through Debian's amqp-tools command-line programs."""

import shutil
import subprocess
import time

import pika
import pytest
from pika.exceptions import UnroutableError

from conftest import unique, wait_for

TOOLS = ("amqp-declare-queue", "amqp-publish", "amqp-get", "amqp-consume",
         "amqp-delete-queue")


@pytest.fixture(scope="module", autouse=True)
def tools_installed():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    # a missing install step must fail, not skip
    assert not missing, "amqp-tools not installed (apt-get install amqp-tools): %s" % missing


def run(broker, tool, *args, input=None, timeout=10, check=True):
    url = "amqp://guest:guest@%s:%d" % (broker.host, broker.port)
    p = subprocess.run([tool, "-u", url, *args], input=input, capture_output=True,
                       timeout=timeout)
    if check:
        assert p.returncode == 0, "%s %s -> rc %d\nstdout: %r\nstderr: %r" % (
            tool, " ".join(args), p.returncode, p.stdout, p.stderr)
    return p


def ready(ch, q):
    return ch.queue_declare(queue=q, passive=True).method.message_count


def test_declare_publish_get(broker, connect):
    q = unique("tools")
    out = run(broker, "amqp-declare-queue", "-q", q).stdout.decode().strip()
    assert out == q
    ch = connect().channel()
    assert ready(ch, q) == 0
    run(broker, "amqp-publish", "-r", q, "-b", "hello from librabbitmq",
        "-C", "text/plain", "-p", "-H", "x-test: yes")
    wait_for(lambda: ready(ch, q) == 1, 3)
    method, props, body = ch.basic_get(queue=q, auto_ack=False)
    assert body == b"hello from librabbitmq"
    assert props.content_type == "text/plain"
    assert props.delivery_mode == 2
    assert props.headers == {"x-test": "yes"}
    ch.basic_nack(method.delivery_tag, requeue=True)
    got = run(broker, "amqp-get", "-q", q)
    assert got.stdout == b"hello from librabbitmq"
    # get-empty: amqp-get exits 2
    empty = run(broker, "amqp-get", "-q", q, check=False)
    assert empty.returncode == 2, (empty.returncode, empty.stdout, empty.stderr)
    # a missing queue: channel error 404, exit 1
    missing = run(broker, "amqp-get", "-q", unique("missing"), check=False)
    assert missing.returncode == 1
    assert b"404" in missing.stderr, missing.stderr
    out = run(broker, "amqp-delete-queue", "-q", q).stdout.decode().strip()
    assert out == "0"


def test_server_named_queue_and_delete_count(broker, connect):
    name = run(broker, "amqp-declare-queue", "-q", "").stdout.decode().strip()
    assert name.startswith("amq.gen-"), name
    ch = connect().channel()
    for i in range(3):
        ch.basic_publish(exchange="", routing_key=name, body=b"x")
    wait_for(lambda: ready(ch, name) == 3, 3)
    assert run(broker, "amqp-delete-queue", "-q", name).stdout.decode().strip() == "3"


def test_publish_lines_and_consume_count(broker, connect):
    q = unique("tools.consume")
    run(broker, "amqp-declare-queue", "-q", q)
    lines = b"".join(b"line %d\n" % i for i in range(7))
    run(broker, "amqp-publish", "-r", q, "-l", input=lines)
    ch = connect().channel()
    wait_for(lambda: ready(ch, q) == 7, 3)
    # one `sh` per message, body on stdin; stop after 5
    p = run(broker, "amqp-consume", "-q", q, "-c", "5", "-p", "1",
            "--", "sh", "-c", "cat; echo '|'")
    # amqp-publish -l keeps each line's newline in the body
    assert p.stdout.decode().split("|\n")[:-1] == ["line %d\n" % i for i in range(5)]
    wait_for(lambda: ready(ch, q) == 2, 3, what="2 left after consuming 5")
    run(broker, "amqp-delete-queue", "-q", q)


def test_consume_exclusive_bound_queue(broker, connect):
    """amqp-consume declares an exclusive queue and binds it; publish
    (mandatory, confirmed) until it is routed, then it must arrive."""
    q = unique("tools.excl")
    key = unique("key")
    proc = subprocess.Popen(["amqp-consume", "-u",
                             "amqp://guest:guest@%s:%d" % (broker.host, broker.port),
                             "-q", q, "-x", "-e", "amq.direct", "-r", key, "-c", "2", "cat"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ch = connect().channel()
        ch.confirm_delivery()

        def routed():
            try:
                ch.basic_publish(exchange="amq.direct", routing_key=key, body=b"first;",
                                 mandatory=True)
                return True
            except UnroutableError:
                return False
        wait_for(routed, 5, interval=0.05, what="amqp-consume's queue bound")
        ch.basic_publish(exchange="amq.direct", routing_key=key, body=b"second;",
                         mandatory=True)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert out == b"first;second;"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # exclusive: gone with its connection
    conn = connect()

    def gone():
        c = conn.channel()
        try:
            c.queue_declare(queue=q, passive=True)
            c.close()
            return False
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code == 404
    wait_for(gone, 5, what="exclusive queue deleted")
