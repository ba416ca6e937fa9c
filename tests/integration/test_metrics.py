"""Prometheus metrics over HTTP: GET /metrics (node level) and, once routed,
GET /metrics/per-object (per queue). Publish N, see N; gauges follow what
clients hold open; storage and recovery series move; alarms show; and both
texts pass `promtool check metrics` (Debian's prometheus package; the test
skips that check only where promtool is not installed)."""

import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pika
import pytest

from conftest import _sluiced_path, amqp_answers, free_port, unique, wait_for


@pytest.fixture(autouse=True)
def _sluiced_only(broker):
    if broker.external or not broker.http_port:
        pytest.skip("Sluice's metrics: needs a sluiced started by the test")


# --------------------------------------------------------------------------
# fetching and parsing the exposition format

def get(port, path):
    """(status, content type, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode("utf-8", "replace")


def fetch(broker, path="/metrics"):
    # /metrics on both ports; /metrics/per-object only on the Prometheus port.
    status, ctype, body = get(broker.prometheus_port if path != "/metrics" else broker.http_port, path)
    assert status == 200, "%s: HTTP %d %s" % (path, status, body[:200])
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    return body


def parse_labels(s, i):
    """Parses {a="x",b="y"} starting at s[i] == '{'; returns (labels, next index)."""
    labels = {}
    i += 1
    while s[i] != "}":
        eq = s.index("=", i)
        name = s[i:eq].strip().lstrip(",").strip()
        assert s[eq + 1] == '"', s
        j = eq + 2
        value = []
        while s[j] != '"':
            if s[j] == "\\":
                value.append({"n": "\n", "\\": "\\", '"': '"'}[s[j + 1]])
                j += 2
            else:
                value.append(s[j])
                j += 1
        labels[name] = "".join(value)
        i = j + 1
        if s[i] == ",":
            i += 1
    return labels, i + 1


def parse(text):
    """{(name, frozenset(labels.items())): value} and {name: type}."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        brace, space = line.find("{"), line.find(" ")
        if brace != -1 and brace < space:
            name = line[:brace]
            labels, end = parse_labels(line, brace)
            rest = line[end:]
        else:
            name, labels, rest = line[:space], {}, line[space:]
        value = rest.split()[0]
        samples[(name, frozenset(labels.items()))] = float(value)
    return samples, types


class Metrics:
    def __init__(self, text):
        self.text = text
        self.samples, self.types = parse(text)

    def __getitem__(self, name):
        return self.samples[(name, frozenset())]

    def get(self, name, **labels):
        return self.samples.get((name, frozenset(labels.items())))


def scrape(broker, path="/metrics"):
    return Metrics(fetch(broker, path))


def promtool_check(text):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; deploy/install-deps.sh --test)")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        "promtool check metrics: exit %d\n%s%s" % (r.returncode, r.stdout, r.stderr)


def per_object(broker):
    """/metrics/per-object, which must be served (a 404 fails the test)."""
    status, _, _ = get(broker.prometheus_port, "/metrics/per-object")
    assert status == 200, "/metrics/per-object answered %d" % status
    return scrape(broker, "/metrics/per-object")


# --------------------------------------------------------------------------

N = 50


def test_publish_n_see_n(broker, connect):
    """N persistent messages, confirmed, into a durable queue: each counter
    moves by exactly N; the store syncs; consuming and acking them moves
    delivered/acked by N and brings the depth back."""
    q = unique("metrics")
    ch = connect().channel()
    ch.queue_declare(queue=q, durable=True)
    ch.confirm_delivery()
    before = scrape(broker)
    props = pika.BasicProperties(delivery_mode=2)
    for i in range(N):
        ch.basic_publish("", q, b"m%d" % i, props)   # blocks until confirmed
    after = scrape(broker)

    def delta(name):
        return after[name] - before[name]

    assert delta("sluice_messages_published_total") == N
    assert delta("sluice_messages_routed_total") == N
    assert delta("sluice_messages_unroutable_total") == 0
    assert delta("sluice_messages_confirmed_total") == N
    assert delta("sluice_queue_messages_ready") == N
    assert delta("sluice_queue_messages") == N
    assert delta("sluice_connection_incoming_bytes_total") > N * 30
    assert delta("sluice_connection_outgoing_bytes_total") > 0
    # Synced before confirmed: at least one WAL sync and batch, each recorded
    # in the histograms; every message is one write in some batch.
    assert delta("sluice_storage_wal_syncs_total") >= 1
    assert delta("sluice_storage_batches_total") >= 1
    assert delta("sluice_storage_wal_sync_duration_seconds_count") >= 1
    assert delta("sluice_storage_commit_duration_seconds_count") >= 1
    assert delta("sluice_storage_batch_writes_sum") >= N
    assert after.get("sluice_storage_wal_sync_duration_seconds_bucket", le="+Inf") == \
        after["sluice_storage_wal_sync_duration_seconds_count"]
    assert after["sluice_storage_written_bytes_total"] > before["sluice_storage_written_bytes_total"]

    got = 0
    while got < N:
        method, _, body = ch.basic_get(q)
        assert method is not None, "queue ran dry after %d" % got
        ch.basic_ack(method.delivery_tag)
        got += 1
    ch.queue_declare(queue=q, durable=True, passive=True)   # a round trip: the acks are in
    done = scrape(broker)
    assert done["sluice_messages_delivered_total"] - after["sluice_messages_delivered_total"] == N
    assert done["sluice_messages_acked_total"] - after["sluice_messages_acked_total"] == N
    assert done["sluice_queue_messages_ready"] == before["sluice_queue_messages_ready"]
    assert done["sluice_queue_messages_unacked"] == before["sluice_queue_messages_unacked"]
    ch.queue_delete(q)


def test_gauges_follow_connections_channels_consumers_queues(broker, connect):
    before = scrape(broker)
    c1, c2 = connect(), connect()
    ch1, ch2, ch3 = c1.channel(), c1.channel(), c2.channel()
    q = unique("gauge")
    ch1.queue_declare(queue=q, exclusive=True)
    ch2.basic_consume(q, lambda *a: None)
    ch3.exchange_declare(unique("ex"), "fanout", auto_delete=True)
    m = scrape(broker)
    assert m["sluice_connections"] - before["sluice_connections"] == 2
    assert m["sluice_channels"] - before["sluice_channels"] == 3
    assert m["sluice_consumers"] - before["sluice_consumers"] == 1
    assert m["sluice_queues"] - before["sluice_queues"] == 1
    assert m["sluice_exchanges"] - before["sluice_exchanges"] == 1
    assert m["sluice_connections_opened_total"] - before["sluice_connections_opened_total"] == 2
    assert m["sluice_channels_opened_total"] - before["sluice_channels_opened_total"] == 3
    c2.close()
    c1.close()
    m = wait_for(lambda: (lambda s: s if s["sluice_connections"] == before["sluice_connections"] else None)(
        scrape(broker)), what="connections gauge back down")
    assert m["sluice_connections_closed_total"] - before["sluice_connections_closed_total"] == 2
    assert m["sluice_channels"] == before["sluice_channels"]
    assert m["sluice_consumers"] == before["sluice_consumers"]
    assert m["sluice_queues"] == before["sluice_queues"]   # the exclusive queue went with c1


def test_returns_nacks_rejects_redeliveries(broker, connect):
    ch = connect().channel()
    q = unique("settle")
    ch.queue_declare(queue=q, exclusive=True)
    before = scrape(broker)
    ch.basic_publish("", unique("nowhere"), b"lost", mandatory=True)
    for i in range(3):
        ch.basic_publish("", q, b"x%d" % i)
    m1, _, _ = ch.basic_get(q)
    ch.basic_nack(m1.delivery_tag, requeue=True)       # back, redelivered next time
    m2, _, _ = ch.basic_get(q)
    assert m2.redelivered
    ch.basic_reject(m2.delivery_tag, requeue=False)
    m3, _, _ = ch.basic_get(q, auto_ack=True)
    ch.queue_declare(queue=q, passive=True)             # a round trip
    m = scrape(broker)
    d = lambda name: m[name] - before[name]             # noqa: E731
    assert d("sluice_messages_returned_total") == 1
    assert d("sluice_messages_unroutable_total") == 1
    assert d("sluice_messages_nacked_total") == 1
    assert d("sluice_messages_rejected_total") == 1
    assert d("sluice_messages_delivered_total") == 3
    assert d("sluice_messages_redelivered_total") == 1
    assert d("sluice_queue_messages_ready") == 1


def test_expired_dropped_dead_lettered(broker, connect):
    ch = connect().channel()
    q, dlq = unique("limited"), unique("dlq")
    ch.queue_declare(queue=dlq, exclusive=True)
    ch.queue_declare(queue=q, exclusive=True, arguments={
        "x-max-length": 1, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    before = scrape(broker)
    ch.basic_publish("", q, b"dropped")                   # pushed out by the next one
    ch.basic_publish("", q, b"expires", pika.BasicProperties(expiration="0"))  # TTL 0, no consumer
    ch.queue_declare(queue=dlq, passive=True)            # a round trip
    m = scrape(broker)
    d = lambda name: m[name] - before[name]             # noqa: E731
    assert d("sluice_messages_dropped_maxlen_total") == 1
    assert d("sluice_messages_expired_total") == 1
    assert d("sluice_messages_dead_lettered_total") == 2
    p = scrape(broker, "/metrics/per-object")
    assert p.get("sluice_queue_messages_expired_total", queue=q, vhost="/") == 1
    assert p.get("sluice_queue_messages_dead_lettered_total", queue=q, vhost="/") == 2


def test_process_and_memory_series(broker):
    m = scrape(broker)
    assert m["sluice_process_resident_memory_bytes"] > 1 << 20
    assert 0 < m["sluice_process_open_fds"] <= m["sluice_process_max_fds"]
    assert m["sluice_uptime_seconds"] > 0
    assert abs(m["sluice_process_start_time_seconds"] + m["sluice_uptime_seconds"] - time.time()) < 60
    assert m["sluice_message_memory_bytes"] >= 0
    assert m["sluice_message_memory_limit_bytes"] > 0
    assert m["sluice_alarms_free_disk_space_watermark"] == 0
    assert m["sluice_alarms_memory_used_watermark"] == 0
    assert m["sluice_storage_disk_bytes"] >= 0
    for name in ("sluice_recovery_duration_seconds", "sluice_recovered_messages", "sluice_recovered_queues"):
        assert m[name] >= 0
    assert m.types["sluice_storage_wal_sync_duration_seconds"] == "histogram"
    assert m.types["sluice_messages_published_total"] == "counter"
    assert m.types["sluice_queue_messages_ready"] == "gauge"


def test_aggregated_has_no_per_queue_series(broker, connect):
    ch = connect().channel()
    q = unique("agg")
    ch.queue_declare(queue=q, exclusive=True)
    text = fetch(broker)
    assert q not in text
    assert 'queue="' not in text


def test_promtool_accepts_metrics(broker, connect):
    # Some traffic first, so histograms and counters are not all zero.
    ch = connect().channel()
    q = unique("lint")
    ch.queue_declare(queue=q, durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"x", pika.BasicProperties(delivery_mode=2))
    promtool_check(fetch(broker))
    ch.queue_delete(q)


def test_per_object_series(broker, connect):
    ch = connect().channel()
    q = unique("perq")
    ch.queue_declare(queue=q, exclusive=True)
    for i in range(4):
        ch.basic_publish("", q, b"abcd")
    method, _, _ = ch.basic_get(q)
    ch.basic_ack(method.delivery_tag)
    method, _, _ = ch.basic_get(q)          # held unacked
    ch.basic_consume(q, lambda *a: None, auto_ack=False)
    ch.connection.process_data_events(time_limit=0.2)
    m = per_object(broker)
    labels = dict(vhost="/", queue=q)
    assert m.get("sluice_queue_messages_published_total", **labels) == 4
    assert m.get("sluice_queue_messages_acked_total", **labels) == 1
    assert m.get("sluice_queue_consumers", **labels) == 1
    delivered = m.get("sluice_queue_messages_delivered_total", **labels)
    ready = m.get("sluice_queue_messages_ready", **labels)
    unacked = m.get("sluice_queue_messages_unacked", **labels)
    assert delivered == 4 and ready == 0 and unacked == 3   # the consumer took the last two
    assert m.get("sluice_queue_messages_ram_bytes", **labels) == 4 * ready
    promtool_check(m.text)


def test_head_message_age(broker, connect):
    """The age of the oldest ready message grows while it waits, and is 0 for an empty queue."""
    ch = connect().channel()
    q = unique("ageq")
    ch.queue_declare(queue=q, exclusive=True)
    per_object(broker)
    labels = dict(vhost="/", queue=q)
    assert per_object(broker).get("sluice_queue_head_message_age_seconds", **labels) == 0
    ch.basic_publish("", q, b"old")
    # The broker's clock ticks once a second: wait (with a deadline) until the age shows.
    wait_for(lambda: per_object(broker).get("sluice_queue_head_message_age_seconds", **labels) >= 2,
             timeout=10, what="the head message to age 2 s")
    method, _, _ = ch.basic_get(q, auto_ack=True)
    assert method is not None
    assert per_object(broker).get("sluice_queue_head_message_age_seconds", **labels) == 0


# --------------------------------------------------------------------------
# brokers of their own: recovery and the disk alarm

def test_recovery_series_after_restart(fresh_broker):
    b = fresh_broker
    c = b.pika()
    ch = c.channel()
    ch.queue_declare(queue="recover-me", durable=True)
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish("", "recover-me", b"r%d" % i, pika.BasicProperties(delivery_mode=2))
    c.close()
    b.restart()
    m = scrape(b)
    assert m["sluice_recovered_messages"] == 20
    assert m["sluice_recovered_queues"] == 1
    assert m["sluice_recovery_duration_seconds"] > 0
    assert m["sluice_queue_messages_ready"] == 20
    assert m["sluice_queues"] == 1


@pytest.mark.deadline(60)
def test_disk_alarm_shows_in_metrics():
    """A data dir on a tmpfs smaller than --disk-free-limit: the alarm is on
    from the first disk check (CI runs as root and may mount)."""
    mnt = tempfile.mkdtemp(prefix="sluice-metrics-disk-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt], capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(mnt)
        pytest.skip("cannot mount a tmpfs: %s" % r.stderr.strip())
    proc = None
    try:
        port, http = free_port(), free_port()
        log = open(os.path.join(mnt, "log"), "wb")
        proc = subprocess.Popen([_sluiced_path(), "--amqp-port", str(port), "--http-port", str(http),
                                 "--data-dir", os.path.join(mnt, "data"), "--disk-free-limit", str(64 << 20)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        wait_for(lambda: amqp_answers("127.0.0.1", port), timeout=15, what="sluiced serving")

        def alarm_on():
            status, _, body = get(http, "/metrics")
            return status == 200 and parse(body)[0].get(("sluice_alarms_free_disk_space_watermark",
                                                         frozenset())) == 1
        wait_for(alarm_on, timeout=10, interval=0.1, what="disk alarm metric = 1")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(["umount", "-l", mnt])
        os.rmdir(mnt)
