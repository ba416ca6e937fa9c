"""The seed's capacity formulas, live (docs/management-api.md, "capacity"):
per queue, the time to drain (depth / (consume rate - publish rate)) and the
expected wait of a new message (depth / consume rate, Little's law), in the
API's queue objects and the per-object metrics. Checked under a known load:
a consumer and a producer paced by the test at fixed rates, with the broker
sampling every SAMPLE_S."""

import contextlib
import math
import threading
import time
import urllib.request

import pytest

from conftest import started_broker, unique, wait_for
from mgmt_http import api_for, q

SAMPLE_S = 1.0


@pytest.fixture(scope="module")
def broker():
    with started_broker(["--collect-statistics-interval", str(int(SAMPLE_S * 1000))]) as b:
        if b.external or not b.http_port:
            pytest.skip("needs a sluiced started by the test")
        yield b


class Paced(threading.Thread):
    """Does `step(channel)` `rate` times a second on a connection of its own,
    on a fixed schedule (so the long-run rate is exact), until stopped."""

    def __init__(self, broker, rate, step):
        super().__init__(daemon=True)
        self.broker, self.rate, self.step = broker, rate, step
        self.done = threading.Event()
        self.count = 0
        self.error = None

    def run(self):
        try:
            conn = self.broker.pika()
            ch = conn.channel()
            start = time.monotonic()
            while not self.done.is_set():
                due = start + self.count / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    self.done.wait(delay)  # pacing, not synchronisation
                    continue
                self.step(ch)
                self.count += 1
            conn.close()
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        self.done.set()
        self.join(10)
        assert self.error is None, self.error


def consumer(broker, queue, rate):
    return Paced(broker, rate, lambda ch: ch.basic_get(queue, auto_ack=True))


def producer(broker, queue, rate):
    return Paced(broker, rate, lambda ch: ch.basic_publish("", queue, b"x"))


@contextlib.contextmanager
def load(broker, queue, consume=None, publish=None):
    """A consumer and/or a producer at these rates while the block runs."""
    threads = ([consumer(broker, queue, consume)] if consume else []) + \
              ([producer(broker, queue, publish)] if publish else [])
    for t in threads:
        t.start()
    try:
        yield
    finally:
        for t in reversed(threads):
            t.stop()


def wait_capacity(api, queue, check, what, windows=6):
    """(depth, capacity) once `check(depth, capacity)` holds for a sampled,
    non-empty queue; fails after `windows` sampling intervals (and 5 s)."""
    def ok():
        depth, cap = capacity(api, queue)
        return cap["sampled"] and depth > 0 and check(depth, cap) and (depth, cap)
    return wait_for(ok, timeout=windows * SAMPLE_S + 5, interval=0.2, what=what)


def fill(broker, queue, n):
    c = broker.pika()
    ch = c.channel()
    ch.queue_declare(queue)
    ch.confirm_delivery()
    for _ in range(n):
        ch.basic_publish("", queue, b"x")
    c.close()


def capacity(api, queue):
    o = api.ok("GET", "/api/queues/%2F/" + q(queue))
    return o["messages"], o["capacity"]


def per_object(broker, queue):
    """{family: value} of the capacity series for `queue`."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics/per-object" % broker.prometheus_port,
                                timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("sluice_queue_") and 'queue="%s"' % queue in line:
            name = line.split("{", 1)[0]
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


def near(got, want, tolerance):
    return got is not None and abs(got - want) <= tolerance * want


# Rates come from two samples SAMPLE_S apart: a paced rate of R is seen as
# R ± 1/SAMPLE_S (one message more or less in the window) plus scheduling
# jitter; 15% covers both at the rates used here and fails a wrong formula.
TOL = 0.15


def test_no_consumer_never_drains_and_nothing_serves(broker):
    api = api_for(broker)
    queue = unique("cap-idle")
    fill(broker, queue, 300)

    def steady():
        depth, c = capacity(api, queue)
        return c["sampled"] and c["publish_rate"] == 0 and c["consume_rate"] == 0 and (depth, c)

    depth, c = wait_for(steady, timeout=4 * SAMPLE_S + 5, interval=0.2, what="a sample with no traffic")
    assert depth == 300
    assert c["drain_seconds"] is None and c["expected_wait_seconds"] is None, c
    assert c["net_drain_rate"] == 0
    m = per_object(broker, queue)   # the same samples as the API's (NaN if none)
    assert math.isinf(m["sluice_queue_drain_seconds"]) and math.isinf(m["sluice_queue_expected_wait_seconds"]), m
    assert m["sluice_queue_consume_rate"] == 0


def test_paced_consumer_littles_law(broker):
    api = api_for(broker)
    queue = unique("cap-consume")
    rate = 50.0
    fill(broker, queue, 2000)   # 40 s of work at 50/s: it stays deep throughout
    with load(broker, queue, consume=rate):
        depth, cap = wait_capacity(
            api, queue,
            lambda depth, cap: (near(cap["consume_rate"], rate, TOL)
                                and near(cap["expected_wait_seconds"], depth / rate, TOL)
                                # nothing published: drain time = wait
                                and near(cap["drain_seconds"], depth / rate, TOL)),
            "expected wait ≈ depth / %.0f per s" % rate)
        print("consumer at %.0f/s: depth %d, capacity %r" % (rate, depth, cap))
        assert cap["publish_rate"] == 0

        # The metrics show the same figures (the same samples).
        def metrics_match():
            depth, _ = capacity(api, queue)
            m = per_object(broker, queue)
            return near(m.get("sluice_queue_expected_wait_seconds"), depth / rate, TOL) and m
        wait_for(metrics_match, timeout=3 * SAMPLE_S + 5, interval=0.2, what="per-object expected wait")


def test_consumer_outpacing_producer_drains_at_the_net_rate(broker):
    api = api_for(broker)
    queue = unique("cap-net")
    out_rate, in_rate = 100.0, 40.0
    fill(broker, queue, 2400)   # drains at 60/s: 40 s
    with load(broker, queue, consume=out_rate, publish=in_rate):
        depth, cap = wait_capacity(
            api, queue,
            lambda depth, cap: (near(cap["publish_rate"], in_rate, TOL) and near(cap["consume_rate"], out_rate, TOL)
                                and near(cap["drain_seconds"], depth / (out_rate - in_rate), TOL)
                                and near(cap["expected_wait_seconds"], depth / out_rate, TOL)),
            "drain ≈ depth / 60 per s and wait ≈ depth / 100 per s", windows=8)
        print("in %.0f/s, out %.0f/s: depth %d, capacity %r" % (in_rate, out_rate, depth, cap))
        assert near(cap["net_drain_rate"], out_rate - in_rate, 2 * TOL)


def test_growing_queue_never_drains_but_serves(broker):
    api = api_for(broker)
    queue = unique("cap-grow")
    fill(broker, queue, 100)
    with load(broker, queue, consume=20.0, publish=60.0):
        _, cap = wait_capacity(
            api, queue,
            lambda depth, cap: (cap["drain_seconds"] is None and near(cap["consume_rate"], 20.0, TOL)
                                and near(cap["expected_wait_seconds"], depth / 20.0, TOL)),
            "a growing queue's figures")
        assert cap["net_drain_rate"] < 0
