"""The consistent-hash exchange (`x-consistent-hash`), as RabbitMQ's
rabbitmq_consistent_hash_exchange plugin: the binding key is a weight, the
routing key (or a header, or a property) is hashed, and the spread over the
bound queues follows the weights. Driven with pika; the amqplib variant is
node/consistent_hash.test.js (run by test_node_amqplib.py)."""

import time

import pika
import pika.exceptions
import pytest

from conftest import unique, wait_for
from mgmt_http import api_for, q

N = 30000
# Binomial noise on 30k keys is ~1.3% of a 1/6 share; 5% is a property of
# the exchange, not luck.
TOLERANCE = 0.05


def declare(ch, weights, arguments=None, durable=False):
    x = unique("chx")
    ch.exchange_declare(x, "x-consistent-hash", durable=durable, arguments=arguments)
    queues = []
    for w in weights:
        name = unique("chq")
        ch.queue_declare(name, durable=durable)
        ch.queue_bind(name, x, routing_key=str(w))
        queues.append(name)
    return x, queues


def depths(ch, queues):
    return [ch.queue_declare(name, passive=True).method.message_count for name in queues]


def wait_total(ch, queues, total):
    wait_for(lambda: sum(depths(ch, queues)) >= total, timeout=30, what="%d messages routed" % total)
    return depths(ch, queues)


def assert_spread(counts, weights):
    total = sum(counts)
    shares = [w / sum(weights) for w in weights]
    for c, share, w in zip(counts, shares, weights):
        assert abs(c / (total * share) - 1) < TOLERANCE, (
            "weight %d got %d of %d (expected %.0f); all: %r" % (w, c, total, total * share, counts))
    print("spread", list(zip(weights, counts)))


def publish_many(ch, x, n, props_for=None, key_for=None):
    for i in range(n):
        ch.basic_publish(x, key_for(i) if key_for else "k-%d" % i, b"",
                         props_for(i) if props_for else None)


def routes(ch, x, queues, keys):
    """key → queue, by publishing each key once and draining the queues."""
    for k in keys:
        ch.basic_publish(x, k, k.encode(), pika.BasicProperties(delivery_mode=2))
    wait_total(ch, queues, len(keys))
    got = {}
    for name in queues:
        while True:
            m, _, body = ch.basic_get(name, auto_ack=True)
            if m is None:
                break
            got[body.decode()] = name
    return got


def test_spread_over_routing_keys_follows_the_weights(connect):
    ch = connect().channel()
    weights = [1, 2, 3]
    x, queues = declare(ch, weights)
    publish_many(ch, x, N)
    counts = wait_total(ch, queues, N)
    assert sum(counts) == N, "each message goes to exactly one queue"
    assert_spread(counts, weights)


def test_same_key_same_queue_and_a_new_queue_takes_only_its_share(connect):
    ch = connect().channel()
    x, queues = declare(ch, [1, 1, 1])
    keys = ["order-%d" % i for i in range(3000)]

    def where():
        return routes(ch, x, queues, keys)

    before = where()
    assert where() == before, "the same key must go to the same queue while bindings stay"
    extra = unique("chq")
    ch.queue_declare(extra)
    ch.queue_bind(extra, x, routing_key="1")
    queues.append(extra)
    after = where()
    moved = [k for k in keys if after[k] != before[k]]
    assert all(after[k] == extra for k in moved), "keys move only to the new queue"
    assert abs(len(moved) / len(keys) - 0.25) < 0.04, "a quarter should move, %d did" % len(moved)


def test_hash_header(connect):
    ch = connect().channel()
    weights = [3, 1, 2]
    x, queues = declare(ch, weights, arguments={"hash-header": "hash-on"})
    pub = connect().channel()
    publish_many(pub, x, N, key_for=lambda i: "same",
                 props_for=lambda i: pika.BasicProperties(headers={"hash-on": "user-%d" % i}))
    assert_spread(wait_total(ch, queues, N), weights)

    # Without the header the message is not routed: mandatory returns it.
    pub.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        pub.basic_publish(x, "same", b"no header", pika.BasicProperties(headers={"other": "1"}), mandatory=True)
    assert sum(depths(ch, queues)) == N


def test_hash_property_message_id_and_timestamp(connect):
    ch = connect().channel()
    weights = [1, 2, 3]
    x, queues = declare(ch, weights, arguments={"hash-property": "message_id"})
    publish_many(ch, x, N, key_for=lambda i: "same",
                 props_for=lambda i: pika.BasicProperties(message_id="m-%d" % i))
    assert_spread(wait_total(ch, queues, N), weights)

    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(x, "same", b"no message_id", mandatory=True)

    ts, tq = declare(ch, [1, 1], arguments={"hash-property": "timestamp"})
    for i in range(2000):
        ch.basic_publish(ts, "same", b"", pika.BasicProperties(timestamp=1_700_000_000 + i))
    counts = wait_total(ch, tq, 2000)
    assert min(counts) > 800, "timestamps spread over both queues: %r" % counts


@pytest.mark.parametrize("key,reason", [
    ("abc", 'The binding key must be an integer: <<"abc">>'),
    ("1.5", 'The binding key must be an integer: <<"1.5">>'),
    ("0", "The binding key must be greater than 0"),
])
def test_a_weight_that_is_not_a_positive_integer_is_refused(connect, key, reason):
    c = connect()
    ch = c.channel()
    x = unique("chx")
    ch.exchange_declare(x, "x-consistent-hash")
    name = ch.queue_declare("", exclusive=True).method.queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_bind(name, x, routing_key=key)
    assert e.value.reply_code == 406
    assert reason in e.value.reply_text


@pytest.mark.parametrize("arguments,reason", [
    ({"hash-header": "h", "hash-property": "message_id"}, "hash-header and hash-property are mutually exclusive"),
    ({"hash-property": "app_id"}, "Unsupported property: app_id"),
])
def test_bad_hash_arguments_are_refused(connect, arguments, reason):
    ch = connect().channel()
    x = unique("chx")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.exchange_declare(x, "x-consistent-hash", arguments=arguments)
    assert e.value.reply_code == 406
    assert reason in e.value.reply_text
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        connect().channel().exchange_declare(x, passive=True)


def test_durable_exchange_routes_the_same_keys_the_same_way_after_kill_9(fresh_broker):
    c = fresh_broker.pika()
    ch = c.channel()
    ch.confirm_delivery()
    x, queues = declare(ch, [1, 2, 3], durable=True)
    keys = ["customer-%d" % i for i in range(600)]
    before = routes(ch, x, queues, keys)
    assert len(set(before.values())) == 3
    fresh_broker.kill9()
    fresh_broker.start()
    c = fresh_broker.pika()
    ch = c.channel()
    ch.confirm_delivery()
    assert routes(ch, x, queues, keys) == before
    api = api_for(fresh_broker)
    e = api.ok("GET", "/api/exchanges/%2F/" + q(x))
    assert e["type"] == "x-consistent-hash"
    c.close()


def test_http_api_and_definitions_keep_the_type_and_arguments(broker, fresh_broker):
    api = api_for(broker)
    x = unique("chx-api")
    api.ok("PUT", "/api/exchanges/%2F/" + q(x),
           {"type": "x-consistent-hash", "durable": True, "arguments": {"hash-header": "h"}})
    r = api.put("/api/exchanges/%2F/" + q(unique("chx-bad")),
                {"type": "x-consistent-hash", "arguments": {"hash-property": "nope"}})
    assert r.status == 400 and b"Unsupported property: nope" in r.body, r
    queues = []
    for w in (1, 3):
        name = unique("chq-api")
        api.ok("PUT", "/api/queues/%2F/" + q(name), {"durable": True})
        api.ok("POST", "/api/bindings/%%2F/e/%s/q/%s" % (q(x), q(name)), {"routing_key": str(w)})
        queues.append(name)
    r = api.post("/api/bindings/%%2F/e/%s/q/%s" % (q(x), q(queues[0])), {"routing_key": "heavy"})
    assert r.status == 400 and b"must be an integer" in r.body, r

    defs = api.ok("GET", "/api/definitions")
    mine = [e for e in defs["exchanges"] if e["name"] == x]
    assert mine and mine[0]["type"] == "x-consistent-hash" and mine[0]["arguments"] == {"hash-header": "h"}
    fresh = api_for(fresh_broker)
    fresh.ok("POST", "/api/definitions", defs)
    c = fresh_broker.pika()
    ch = c.channel()
    publish_many(ch, x, 4000, key_for=lambda i: "same",
                 props_for=lambda i: pika.BasicProperties(headers={"h": i}))
    counts = wait_total(ch, queues, 4000)
    assert abs(counts[1] / 3000 - 1) < 0.08, counts
    c.close()
