"""Work queues (RabbitMQ tutorial 2): prefetch 1, manual acks, competing
consumers, and redelivery of what a dead consumer held."""

import os
import subprocess
import sys
import time

import pika
import pytest

from conftest import unique, wait_for


class Worker:
    """A consumer on its own connection with prefetch 1 and manual acks."""

    def __init__(self, broker, queue, ack=True, prefetch=1):
        self.conn = broker.pika()
        self.ch = self.conn.channel()
        self.ch.basic_qos(prefetch_count=prefetch)
        self.ack = ack
        self.got = []           # (body, redelivered)
        self.unacked = []       # delivery tags held
        self.tag = self.ch.basic_consume(queue=queue, on_message_callback=self.on_message)

    def on_message(self, ch, method, props, body):
        self.got.append((body, method.redelivered))
        if self.ack:
            ch.basic_ack(method.delivery_tag)
        else:
            self.unacked.append(method.delivery_tag)

    def pump(self, seconds=0.0):
        self.conn.process_data_events(time_limit=seconds)

    def close(self):
        if self.conn.is_open:
            self.conn.close()


def pump_until(workers, cond, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        for w in workers:
            w.pump(0.01)


@pytest.fixture
def queue(broker, connect):
    name = unique("work")
    ch = connect().channel()
    ch.queue_declare(queue=name, durable=False)
    yield name, ch
    try:
        ch.queue_delete(queue=name)
    except Exception:
        pass


def ready_count(ch, queue):
    return ch.queue_declare(queue=queue, passive=True).method.message_count


def test_two_workers_share_the_work(broker, queue):
    name, ch = queue
    a = Worker(broker, name)
    b = Worker(broker, name)
    try:
        n = 40
        for i in range(n):
            ch.basic_publish(exchange="", routing_key=name, body=b"task %d" % i,
                             properties=pika.BasicProperties(delivery_mode=2))
        pump_until([a, b], lambda: len(a.got) + len(b.got) >= n, what="all tasks")
        bodies = sorted(x for x, _ in a.got + b.got)
        assert bodies == sorted(b"task %d" % i for i in range(n)), "lost or duplicated tasks"
        assert a.got and b.got, "one worker got all %d tasks: a=%d b=%d" % (n, len(a.got), len(b.got))
        assert all(not r for _, r in a.got + b.got)
        # each worker saw its own tasks in publish order
        for w in (a, b):
            idx = [int(x.split()[1]) for x, _ in w.got]
            assert idx == sorted(idx)
        wait_for(lambda: ready_count(ch, name) == 0, 3, what="queue drained")
    finally:
        a.close()
        b.close()


def test_prefetch_one_holds_back_while_unacked(broker, queue):
    """A worker holding one unacked message with prefetch 1 gets nothing
    more; everything else goes to the other worker."""
    name, ch = queue
    slow = Worker(broker, name, ack=False)
    try:
        for i in range(10):
            ch.basic_publish(exchange="", routing_key=name, body=b"job %d" % i)
        pump_until([slow], lambda: len(slow.got) == 1, what="first delivery")
        # the broker has one message out and nine ready, and does not push more
        wait_for(lambda: ready_count(ch, name) == 9, 3, what="9 ready")
        slow.pump(0.2)
        assert len(slow.got) == 1, "prefetch=1 exceeded: %r" % slow.got
        fast = Worker(broker, name)
        try:
            pump_until([slow, fast], lambda: len(fast.got) == 9, what="fast worker gets the rest")
            assert len(slow.got) == 1
            assert [x for x, _ in fast.got] == [b"job %d" % i for i in range(1, 10)]
            # acking lets the slow worker take the next one
            ch.basic_publish(exchange="", routing_key=name, body=b"job 10")
            ch.basic_publish(exchange="", routing_key=name, body=b"job 11")
            slow.ch.basic_ack(slow.unacked.pop())
            pump_until([slow, fast], lambda: len(slow.got) + len(fast.got) == 12,
                       what="last two jobs")
            assert len(slow.got) == 2, "slow worker got %r after ack" % slow.got
        finally:
            fast.close()
    finally:
        slow.close()


def test_closed_consumer_unacked_is_redelivered(broker, queue):
    name, ch = queue
    holder = Worker(broker, name, ack=False)
    for i in range(3):
        ch.basic_publish(exchange="", routing_key=name, body=b"m%d" % i)
    pump_until([holder], lambda: len(holder.got) == 1, what="holder's delivery")
    assert holder.got == [(b"m0", False)]
    other = Worker(broker, name)
    try:
        pump_until([other], lambda: len(other.got) == 2, what="other gets m1, m2")
        holder.close()            # graceful close while holding m0
        pump_until([other], lambda: len(other.got) == 3, what="redelivery of m0")
        assert other.got == [(b"m1", False), (b"m2", False), (b"m0", True)]
        wait_for(lambda: ready_count(ch, name) == 0, 3, what="queue empty")
    finally:
        other.close()


DYING_CONSUMER = r"""
import os, sys, pika
params = pika.ConnectionParameters(host=sys.argv[1], port=int(sys.argv[2]),
                                   socket_timeout=5, stack_timeout=10)
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.basic_qos(prefetch_count=1)
def on_message(ch, method, props, body):
    sys.stdout.write("got %s %s\n" % (body.decode(), method.redelivered))
    sys.stdout.flush()
    sys.stdin.readline()         # hold the message until killed
ch.basic_consume(queue=sys.argv[3], on_message_callback=on_message)
print("ready", flush=True)
conn.process_data_events(time_limit=10)
"""


def test_killed_consumer_unacked_is_redelivered(broker, queue):
    """The consumer process is SIGKILLed (no channel.close, no
    connection.close) while holding an unacked message."""
    name, ch = queue
    ch.basic_publish(exchange="", routing_key=name, body=b"precious")
    proc = subprocess.Popen([sys.executable, "-c", DYING_CONSUMER, broker.host,
                             str(broker.port), name],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert proc.stdout.readline().strip() == "got precious False"
        wait_for(lambda: ready_count(ch, name) == 0, 3, what="message out to the consumer")
        proc.kill()
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    other = Worker(broker, name)
    try:
        pump_until([other], lambda: len(other.got) == 1, what="redelivery after kill")
        assert other.got == [(b"precious", True)]
    finally:
        other.close()
