"""Request/reply over AMQP with pika: the RabbitMQ tutorial 6 RPC pair
(reply_to + correlation_id on an exclusive server-named callback queue) and
RabbitMQ's direct reply-to (amq.rabbitmq.reply-to)."""

import threading
import time
import uuid

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from conftest import unique, wait_for

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class RpcServer(threading.Thread):
    """Tutorial 6's server on its own connection and thread: consumes
    `queue` with prefetch 1 and answers fib(n) to props.reply_to."""

    def __init__(self, broker, queue):
        super().__init__(daemon=True)
        self.broker = broker
        self.queue = queue
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error = None
        self.served = 0
        self.reply_tos = set()

    def run(self):
        conn = None
        try:
            conn = self.broker.pika()
            ch = conn.channel()
            ch.queue_declare(queue=self.queue)
            ch.basic_qos(prefetch_count=1)

            def on_request(ch, method, props, body):
                n = int(body)
                self.reply_tos.add(props.reply_to)
                ch.basic_publish(exchange="", routing_key=props.reply_to,
                                 properties=pika.BasicProperties(
                                     correlation_id=props.correlation_id),
                                 body=str(fib(n)).encode())
                ch.basic_ack(delivery_tag=method.delivery_tag)
                self.served += 1

            ch.basic_consume(queue=self.queue, on_message_callback=on_request)
            self.ready.set()
            while not self.stop.is_set():
                conn.process_data_events(time_limit=0.05)
        except Exception as e:          # reported by the test
            self.error = e
            self.ready.set()
        finally:
            if conn is not None and conn.is_open:
                try:
                    conn.close()
                except Exception:
                    pass

    def __enter__(self):
        self.start()
        assert self.ready.wait(10), "RPC server did not start"
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(10)
        assert not self.is_alive(), "RPC server thread did not stop"


@pytest.fixture
def rpc_queue(broker, connect):
    name = "rpc_queue"
    yield name
    # leave nothing behind on a shared broker
    try:
        connect().channel().queue_delete(queue=name)
    except Exception:
        pass


def test_tutorial_rpc_pipelined_1000(broker, connect, rpc_queue):
    with RpcServer(broker, rpc_queue) as server:
        conn = connect()
        ch = conn.channel()
        callback_queue = ch.queue_declare(queue="", exclusive=True).method.queue
        expected = {}
        got = {}

        def on_response(ch, method, props, body):
            assert props.correlation_id not in got, "duplicate reply %s" % props.correlation_id
            got[props.correlation_id] = body

        ch.basic_consume(queue=callback_queue, on_message_callback=on_response,
                         auto_ack=True)
        for i in range(1000):
            corr = str(uuid.uuid4())
            n = i % 40
            expected[corr] = str(fib(n)).encode()
            ch.basic_publish(exchange="", routing_key=rpc_queue,
                             properties=pika.BasicProperties(reply_to=callback_queue,
                                                             correlation_id=corr),
                             body=str(n).encode())
        deadline = time.monotonic() + 20
        while len(got) < len(expected) and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert server.error is None, server.error
        assert len(got) == 1000, "got %d of 1000 replies" % len(got)
        assert got == expected
        assert server.reply_tos == {callback_queue}
    assert server.error is None, server.error
    assert server.served == 1000


def test_tutorial_rpc_sequential_calls(broker, connect, rpc_queue):
    """One call at a time, exactly as the tutorial's FibonacciRpcClient."""
    with RpcServer(broker, rpc_queue) as server:
        conn = connect()
        ch = conn.channel()
        callback_queue = ch.queue_declare(queue="", exclusive=True).method.queue
        state = {}

        def on_response(ch, method, props, body):
            if props.correlation_id == state["corr"]:
                state["response"] = body

        ch.basic_consume(queue=callback_queue, on_message_callback=on_response,
                         auto_ack=True)

        def call(n):
            state["response"] = None
            state["corr"] = str(uuid.uuid4())
            ch.basic_publish(exchange="", routing_key=rpc_queue,
                             properties=pika.BasicProperties(reply_to=callback_queue,
                                                             correlation_id=state["corr"]),
                             body=str(n).encode())
            deadline = time.monotonic() + 5
            while state["response"] is None:
                assert time.monotonic() < deadline, "no reply to fib(%d)" % n
                conn.process_data_events(time_limit=0.05)
            return int(state["response"])

        for i in range(200):
            assert call(i % 30) == fib(i % 30)
        assert server.error is None, server.error


def test_direct_reply_to(broker, connect):
    server_q = unique("drt.server")
    sconn = connect()
    sch = sconn.channel()
    sch.queue_declare(queue=server_q, auto_delete=True)

    conn = connect()
    ch = conn.channel()
    replies = []

    def on_reply(ch, method, props, body):
        replies.append((props.correlation_id, body))

    ch.basic_consume(queue=DIRECT_REPLY_TO, on_message_callback=on_reply, auto_ack=True)

    calls = 50
    for i in range(calls):
        ch.basic_publish(exchange="", routing_key=server_q,
                         properties=pika.BasicProperties(reply_to=DIRECT_REPLY_TO,
                                                         correlation_id="c%d" % i),
                         body=b"ping %d" % i)

    seen_reply_to = set()
    for i in range(calls):
        method, props, body = wait_for(lambda: _get(sch, server_q), 5,
                                       what="request %d on the server queue" % i)
        assert body == b"ping %d" % i
        assert props.correlation_id == "c%d" % i
        # the broker rewrites the pseudo-queue name into a routable one
        assert props.reply_to.startswith(DIRECT_REPLY_TO + "."), props.reply_to
        assert props.reply_to != DIRECT_REPLY_TO
        seen_reply_to.add(props.reply_to)
        sch.basic_publish(exchange="", routing_key=props.reply_to,
                          properties=pika.BasicProperties(correlation_id=props.correlation_id),
                          body=b"pong %d" % i)
        sch.basic_ack(method.delivery_tag)
    # one channel, one reply-to name
    assert len(seen_reply_to) == 1

    deadline = time.monotonic() + 5
    while len(replies) < calls and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert replies == [("c%d" % i, b"pong %d" % i) for i in range(calls)]


def _get(ch, queue):
    method, props, body = ch.basic_get(queue=queue, auto_ack=False)
    return (method, props, body) if method else None


def test_direct_reply_to_without_consumer_is_406(broker, connect):
    server_q = unique("drt.noconsumer")
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(queue=server_q, auto_delete=True)
    ch.basic_publish(exchange="", routing_key=server_q,
                     properties=pika.BasicProperties(reply_to=DIRECT_REPLY_TO),
                     body=b"nobody listens")
    with pytest.raises(ChannelClosedByBroker) as ei:
        # a synchronous round trip to collect the asynchronous channel.close
        ch.queue_declare(queue=server_q, passive=True)
    assert ei.value.reply_code == 406, ei.value
    # the connection survives a channel error
    ch2 = conn.channel()
    assert ch2.queue_declare(queue=server_q, passive=True).method.message_count == 0
    ch2.queue_delete(queue=server_q)


def test_direct_reply_to_consumer_must_be_no_ack(broker, connect):
    conn = connect()
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.basic_consume(queue=DIRECT_REPLY_TO, on_message_callback=lambda *a: None,
                         auto_ack=False)
    assert ei.value.reply_code == 406, ei.value
