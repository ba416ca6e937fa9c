"""The numbers a user reads are true (issue 13, item 14): known workloads,
and the values the management API and /metrics report for them — rates
under a paced load, counters that move by exactly what the workload did,
consumers of a single-active-consumer queue, and totals filtered for a
management-tag user. Values, not shapes."""

import time

import pika
import pika.exceptions
import pytest

from conftest import started_broker, unique, wait_for
from mgmt_http import Api, q

INTERVAL_MS = 1000  # --collect-statistics-interval: rates over 1 s windows


@pytest.fixture(scope="module")
def broker():
    with started_broker(extra_args=["--collect-statistics-interval", str(INTERVAL_MS)]) as b:
        yield b


@pytest.fixture
def api(broker):
    return Api(broker.http_port)


def metric(api, name):
    r = api.get("/metrics", auth=False)
    assert r.status == 200
    for line in r.body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no metric " + name)


def paced_publish(ch, queue, rate, seconds, until=None):
    """Publishes `rate` messages a second for `seconds` (or until `until()`
    is true), paced against the clock. Returns how many it published."""
    start = time.monotonic()
    n = 0
    while True:
        now = time.monotonic()
        elapsed = now - start
        if elapsed >= seconds or (until and n % 20 == 0 and until()):
            return n
        due = int(elapsed * rate)
        while n < due:
            ch.basic_publish("", queue, b"x")
            n += 1
        ch.connection.process_data_events(time_limit=0.002)


@pytest.mark.deadline(40)
def test_node_and_queue_rates_follow_a_known_load(broker, api):
    """200 msg/s for a few seconds: /api/overview's publish rate and the
    queue's are 200/s within one sampling window's tolerance; once the load
    stops, the queue's rate falls to 0 instead of staying at a stale average."""
    rate = 200
    name = unique("rate")
    c = broker.pika()
    ch = c.channel()
    ch.queue_declare(name)
    api.get("/api/queues/%2F/" + q(name))  # the API is being watched: per-queue samples from now on

    seen = {}

    def in_band(value):
        return 0.75 * rate <= value <= 1.25 * rate

    def rates_ok():
        node = api.get("/api/overview").json["message_stats"]["publish_details"]["rate"]
        queue = api.get("/api/queues/%2F/" + q(name)).json["message_stats"]["publish_details"]["rate"]
        seen["node"], seen["queue"] = node, queue
        return in_band(node) and in_band(queue)

    deadline = time.monotonic() + 15
    ok = False
    while time.monotonic() < deadline and not ok:
        paced_publish(ch, name, rate, 0.5)
        ok = rates_ok()
    assert ok, "publishing %d msg/s, the API says %r" % (rate, seen)
    c.close()

    def idle_rate_zero():
        info = api.get("/api/queues/%2F/" + q(name)).json
        ov = api.get("/api/overview").json
        return (info["message_stats"]["publish_details"]["rate"] == 0 and
                ov["message_stats"]["publish_details"]["rate"] == 0)

    wait_for(idle_rate_zero, timeout=4 * INTERVAL_MS / 1000.0, interval=0.1,
             what="the publish rates to fall to 0 once the load stopped")


def test_http_get_requeue_counts_no_acks(broker, api):
    """ack_requeue_true (sluicectl get's and the dashboard's "keep them")
    is a get and a requeue, as in RabbitMQ: 3 messages stay queued and no
    ack is counted anywhere."""
    name = unique("keep")
    c = broker.pika()
    ch = c.channel()
    ch.queue_declare(name)
    for i in range(3):
        ch.basic_publish("", name, b"m%d" % i)
    wait_for(lambda: api.get("/api/queues/%2F/" + q(name)).json["messages"] == 3)
    acks_before = api.get("/api/overview").json["message_stats"]["ack"]
    metric_before = metric(api, "sluice_messages_acked_total")
    got = api.post("/api/queues/%2F/" + q(name) + "/get", {"count": 3, "ackmode": "ack_requeue_true"}).json
    assert [m["payload"] for m in got] == ["m0", "m1", "m2"]
    info = api.get("/api/queues/%2F/" + q(name)).json
    assert info["messages_ready"] == 3 and info["messages_unacknowledged"] == 0
    assert info["message_stats"]["ack"] == 0
    assert api.get("/api/overview").json["message_stats"]["ack"] == acks_before
    assert metric(api, "sluice_messages_acked_total") == metric_before
    # The messages come back, in order, marked redelivered.
    m, _, body = ch.basic_get(name, auto_ack=True)
    assert body == b"m0" and m.redelivered
    c.close()


def test_http_get_reject_requeue_false_dead_letters(broker, api):
    """reject_requeue_false is basic.reject(requeue=false): the message goes
    to the queue's dead-letter exchange, as over AMQP, not to /dev/null."""
    name, dlq = unique("dlsrc"), unique("dlq")
    c = broker.pika()
    ch = c.channel()
    ch.queue_declare(dlq)
    ch.queue_declare(name, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", name, b"precious")
    wait_for(lambda: api.get("/api/queues/%2F/" + q(name)).json["messages"] == 1)
    got = api.post("/api/queues/%2F/" + q(name) + "/get", {"count": 1, "ackmode": "reject_requeue_false"}).json
    assert [m["payload"] for m in got] == ["precious"]
    assert api.get("/api/queues/%2F/" + q(name)).json["messages"] == 0
    wait_for(lambda: api.get("/api/queues/%2F/" + q(dlq)).json["messages"] == 1,
             what="the rejected message in the dead-letter queue")
    m, props, body = ch.basic_get(dlq, auto_ack=True)
    assert body == b"precious"
    assert props.headers["x-death"][0]["reason"] == "rejected"
    c.close()


def test_single_active_consumer_waiting_consumers_are_not_active(broker, api):
    name = unique("sac")
    c = broker.pika()
    ch = c.channel()
    ch.queue_declare(name, arguments={"x-single-active-consumer": True})
    ch.basic_consume(name, lambda *a: None, consumer_tag="first")
    ch.basic_consume(name, lambda *a: None, consumer_tag="second")

    def consumers():
        return {x["consumer_tag"]: x for x in api.get("/api/consumers/%2F").json
                if x["queue"]["name"] == name}

    cs = wait_for(lambda: len(consumers()) == 2 and consumers())
    assert (cs["first"]["active"], cs["first"]["activity_status"]) == (True, "up")
    assert (cs["second"]["active"], cs["second"]["activity_status"]) == (False, "waiting")
    ch.basic_cancel("first")
    cs = wait_for(lambda: len(consumers()) == 1 and consumers())
    assert (cs["second"]["active"], cs["second"]["activity_status"]) == (True, "up")
    c.close()


def test_publish_and_routed_count_only_what_entered_routing(broker, api):
    """Refused publishes (a forged user_id, a rolled-back transaction) are
    not "published"; a publish that x-overflow reject-publish nacks is not
    "routed"."""
    name = unique("count")
    c = broker.pika()
    ch = c.channel()
    ch.queue_declare(name, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})

    def counters():
        return (api.get("/api/overview").json["message_stats"]["publish"],
                metric(api, "sluice_messages_published_total"), metric(api, "sluice_messages_routed_total"))

    p0, mp0, r0 = counters()
    # A forged user_id closes the channel (406) and publishes nothing.
    bad = c.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        bad.basic_publish("", name, b"x", pika.BasicProperties(user_id="mallory"))
        bad.queue_declare(name, passive=True)
    # A transaction rolled back publishes nothing.
    tx = c.channel()
    tx.tx_select()
    tx.basic_publish("", name, b"rolled back")
    tx.tx_rollback()
    assert counters() == (p0, mp0, r0)
    # Two publishes with confirms: the first is routed, the second is nacked.
    ch.confirm_delivery()
    ch.basic_publish("", name, b"fits")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", name, b"refused")
    assert counters() == (p0 + 2, mp0 + 2, r0 + 1)
    c.close()


def test_overview_totals_for_a_management_user_cover_only_its_vhosts(broker, api):
    vhost, user = unique("ovh"), unique("mgr")
    assert api.put("/api/vhosts/" + q(vhost)).status in (201, 204)
    assert api.put("/api/users/" + q(user), {"password": "pw", "tags": "management"}).status in (201, 204)
    assert api.put("/api/permissions/%s/%s" % (q(vhost), q(user)),
                   {"configure": ".*", "write": ".*", "read": ".*"}).status in (201, 204)
    mine = unique("mine")
    assert api.put("/api/queues/%s/%s" % (q(vhost), q(mine)), {"durable": False}).status == 201
    assert api.post("/api/exchanges/%s/amq.default/publish" % q(vhost),
                    {"routing_key": mine, "payload": "x"}).json == {"routed": True}
    # guest keeps a connection and a queue with messages in "/" meanwhile.
    c = broker.pika()
    ch = c.channel()
    other = unique("other")
    ch.queue_declare(other)
    for _ in range(5):
        ch.basic_publish("", other, b"y")
    wait_for(lambda: api.get("/api/queues/%2F/" + q(other)).json["messages"] == 5)

    mgr = Api(broker.http_port, user=user, password="pw")
    ov = mgr.get("/api/overview").json
    exchanges = len(api.get("/api/exchanges/" + q(vhost)).json)
    assert ov["object_totals"]["queues"] == 1
    assert ov["object_totals"]["exchanges"] == exchanges
    assert ov["object_totals"]["connections"] == 0 and ov["object_totals"]["channels"] == 0
    assert ov["object_totals"]["consumers"] == 0
    assert ov["queue_totals"]["messages"] == 1 and ov["queue_totals"]["messages_ready"] == 1
    assert ov["message_stats"]["publish"] == 1
    # An administrator still sees the node's totals.
    full = api.get("/api/overview").json
    assert full["object_totals"]["queues"] >= 2 and full["object_totals"]["connections"] >= 1
    assert full["queue_totals"]["messages"] >= 6
    c.close()
    api.delete("/api/vhosts/" + q(vhost))
    api.delete("/api/users/" + q(user))
