"""sluiced --prometheus-names rabbitmq: RabbitMQ's Grafana dashboard
("RabbitMQ-Overview", every query in rabbitmq_overview_queries.py) works
against Sluice unchanged. A real Prometheus (Debian's) scrapes the sluiced
started here, on /metrics and /metrics/per-object, after pika has done a known
load; each dashboard query is evaluated through Prometheus's HTTP API. The
ones over figures Sluice keeps must return data, and the value the load
implies; the ones over figures Sluice does not keep (docs/metrics.md, "What
is missing") must return nothing, so that list stays true. promtool lints
both texts. Without the option the names are absent and the dashboard is
empty (test_without_the_option_the_names_are_absent)."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request

import pika
import pytest
import yaml

from conftest import free_port, started_broker, wait_for
from rabbitmq_overview_queries import OVERVIEW_QUERIES

QUEUE = "rabbitmq-dashboard"
PUBLISHED = 50        # to QUEUE, with confirms
GOT = 20              # basic.get, then acked
HELD = 4              # delivered to a consumer (prefetch 4) and not acked
RETURNED = 3          # mandatory, unroutable
DROPPED = 2           # unroutable, not mandatory
READY = PUBLISHED - GOT - HELD

# rabbitmq_prometheus families Sluice does not export (docs/metrics.md
# lists them, and why). A dashboard query naming one returns no data.
MISSING = {
    "rabbitmq_global_publishers",
    "rabbitmq_global_messages_received_confirm_total",
    "rabbitmq_message_size_bytes",
}

# What the dashboard's panels show after the load (the value of each series
# the query returns), by panel title. Panels not listed must only have data.
EXPECTED = {
    "Ready messages": READY,
    "Unacknowledged messages": HELD,
    "Messages ready to be delivered to consumers": READY,
    "Messages pending consumer acknowledgement": HELD,
    "Connections": 1,
    "Total connections": 1,
    "Channels": 2,
    "Total channels": 2,
    "Queues": 1,
    "Total queues": 1,
    "Consumers": 1,
    "Nodes": 1,
}

# Counters the load moved by a known amount (from their value before it: the
# test's start-up probe opens a connection too), in their aggregated series.
COUNTERS = {
    'rabbitmq_global_messages_received_total{protocol="amqp091"}': PUBLISHED + RETURNED + DROPPED,
    'rabbitmq_global_messages_routed_total{protocol="amqp091"}': PUBLISHED,
    'rabbitmq_global_messages_unroutable_returned_total{protocol="amqp091"}': RETURNED,
    'rabbitmq_global_messages_unroutable_dropped_total{protocol="amqp091"}': DROPPED,
    'rabbitmq_global_messages_confirmed_total{protocol="amqp091"}': PUBLISHED + RETURNED + DROPPED,
    'rabbitmq_global_messages_delivered_total{protocol="amqp091",queue_type="rabbit_classic_queue"}': GOT + HELD,
    'rabbitmq_global_messages_acknowledged_total{protocol="amqp091",queue_type="rabbit_classic_queue"}': GOT,
    'rabbitmq_global_messages_redelivered_total{protocol="amqp091",queue_type="rabbit_classic_queue"}': 0,
    'rabbitmq_global_messages_delivered_get_manual_ack_total{protocol="amqp091",queue_type="rabbit_classic_queue"}': GOT,
    'rabbitmq_global_messages_delivered_consume_manual_ack_total{protocol="amqp091",queue_type="rabbit_classic_queue"}':
        HELD,
    'rabbitmq_global_messages_delivered_get_auto_ack_total{protocol="amqp091",queue_type="rabbit_classic_queue"}': 0,
    'rabbitmq_global_messages_delivered_consume_auto_ack_total{protocol="amqp091",queue_type="rabbit_classic_queue"}': 0,
    'rabbitmq_global_messages_get_empty_total{protocol="amqp091",queue_type="rabbit_classic_queue"}': 0,
    "rabbitmq_queues_declared_total": 1,
    "rabbitmq_queues_created_total": 1,
    "rabbitmq_queues_deleted_total": 0,
    "rabbitmq_connections_opened_total": 1,
    "rabbitmq_channels_opened_total": 2,
    "rabbitmq_queue_messages": READY + HELD,
}

# Per object (/metrics/per-object), labels vhost and queue as RabbitMQ's.
PER_QUEUE = {
    "rabbitmq_queue_messages_ready": READY,
    "rabbitmq_queue_messages_unacked": HELD,
    "rabbitmq_queue_messages": READY + HELD,
    "rabbitmq_queue_consumers": 1,
    "rabbitmq_queue_messages_acked_total": GOT,
}


def sample(text, series):
    """The value of `series` (name or name{labels}, as printed) in a text."""
    m = re.search(r"^%s (\S+)$" % re.escape(series), text, re.M)
    assert m, "%s not in:\n%s" % (series, text)
    return float(m.group(1))


def http_text(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return r.read().decode()


# Label names the dashboard's queries use that look like family names.
LABEL_NAMES = {"rabbitmq_cluster", "rabbitmq_endpoint", "rabbitmq_node", "rabbitmq_version"}


def names_in(expr):
    """rabbitmq_* families a PromQL expression names (histogram suffixes off)."""
    return {re.sub(r"_(bucket|sum|count)$", "", n)
            for n in re.findall(r"\brabbitmq_[a-z0-9_]+", expr)} - LABEL_NAMES


def promtool_lint(text):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; deploy/install-deps.sh --test)")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


class Prometheus:
    """Debian's prometheus on a free port and a temp dir, scraping `jobs`
    ({job name: (port, path)}) every second."""

    def __init__(self, jobs):
        exe = shutil.which("prometheus")
        if exe is None:
            pytest.skip("prometheus not installed (deploy/install-deps.sh --test)")
        self.work = tempfile.mkdtemp(prefix="sluice-rmq-prom-")
        self.port = free_port()
        conf = os.path.join(self.work, "prometheus.yml")
        with open(conf, "w") as f:
            yaml.safe_dump({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": name, "metrics_path": path,
                     "static_configs": [{"targets": ["127.0.0.1:%d" % port]}]}
                    for name, (port, path) in jobs.items()]}, f)
        self.log = open(os.path.join(self.work, "log"), "wb")
        self.proc = subprocess.Popen([exe, "--config.file=" + conf,
                                      "--storage.tsdb.path=" + os.path.join(self.work, "data"),
                                      "--web.listen-address=127.0.0.1:%d" % self.port],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def query(self, expr):
        """The API's answer; raises OSError while Prometheus is not up."""
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (self.port, urllib.parse.urlencode({"query": expr}))
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            return json.load(e)

    def result(self, expr):
        r = self.query(expr)
        assert r.get("status") == "success", "%s -> %s" % (expr, r.get("error"))
        return r["data"]["result"]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)


def drive_load(broker):
    """The known load, on one connection with two channels; returns the
    connection (open: the consumer keeps HELD unacked)."""
    conn = broker.pika()
    pub = conn.channel()
    pub.queue_declare(queue=QUEUE, durable=True)
    pub.confirm_delivery()
    for i in range(PUBLISHED):
        pub.basic_publish("", QUEUE, b"m%d" % i, pika.BasicProperties(delivery_mode=2))
    for _ in range(RETURNED):
        with pytest.raises(pika.exceptions.UnroutableError):
            pub.basic_publish("", "no-such-queue", b"r", mandatory=True)
    for _ in range(DROPPED):
        pub.basic_publish("", "no-such-queue", b"d")
    for _ in range(GOT):
        method, _, _ = pub.basic_get(QUEUE)
        assert method is not None
        pub.basic_ack(method.delivery_tag)
    cons = conn.channel()
    cons.basic_qos(prefetch_count=HELD)
    held = []
    cons.basic_consume(QUEUE, lambda ch, m, p, b: held.append(m.delivery_tag))
    wait_for(lambda: conn.process_data_events(0.05) or len(held) == HELD, timeout=10,
             what="%d deliveries to the consumer" % HELD)
    return conn


def grafana_vars(prom):
    """The dashboard's template variables as Grafana picks them: namespace
    from label_values(rabbitmq_identity_info, namespace) (none here, so ""),
    rabbitmq_cluster from its label values, endpoint the first (sorted) of
    rabbitmq_endpoint's values other than memory-breakdown."""
    ids = prom.result('rabbitmq_identity_info{namespace="", rabbitmq_endpoint!="memory-breakdown"}')
    clusters = sorted({s["metric"]["rabbitmq_cluster"] for s in ids})
    assert len(clusters) == 1, ids
    endpoints = sorted({s["metric"]["rabbitmq_endpoint"] for s in ids})
    assert endpoints == ["aggregated", "per-object"], endpoints
    return {"$namespace": "", "$rabbitmq_cluster": clusters[0], "$endpoint": endpoints[0],
            "$__rate_interval": "10s", "$__range": "5m"}


def fill(expr, variables):
    for name in sorted(variables, key=len, reverse=True):  # $__rate_interval before a shorter prefix
        expr = expr.replace(name, variables[name])
    assert "$" not in expr, expr
    return expr


@pytest.mark.deadline(120)
def test_rabbitmq_overview_dashboard_queries_in_prometheus():
    with started_broker(extra_args=("--prometheus-names", "rabbitmq")) as broker:
        if broker.external:
            pytest.skip("needs a sluiced started by the test (SLUICED)")
        port = broker.prometheus_port
        before = http_text(port, "/metrics")
        conn = drive_load(broker)
        # No Sluice names on this port under the option; both texts lint clean.
        aggregated, per_object = http_text(port, "/metrics"), http_text(port, "/metrics/per-object")
        assert "sluice_" not in aggregated and "sluice_" not in per_object
        promtool_lint(aggregated)
        promtool_lint(per_object)

        prom = Prometheus({"rabbitmq": (port, "/metrics"), "rabbitmq-per-object": (port, "/metrics/per-object")})
        try:
            def settled():
                # Up, a few scrapes since the load (rate() over 10s needs two),
                # and the last of them shows all of it.
                try:
                    r = prom.query('count_over_time(rabbitmq_queue_messages_ready[10s]) >= 3 '
                                   'and rabbitmq_queue_messages_ready == %d and rabbitmq_queue_messages_unacked == %d'
                                   % (READY, HELD))
                    ids = prom.query("rabbitmq_identity_info")
                except OSError:
                    return False
                return (r.get("status") == "success" and r["data"]["result"]
                        and len(ids.get("data", {}).get("result", [])) == 2)
            wait_for(settled, timeout=60, interval=0.25, what="Prometheus to hold several scrapes of the load")

            variables = grafana_vars(prom)
            assert variables["$rabbitmq_cluster"] == "sluice"
            failures = []
            seen_titles = set()
            for title, expr in OVERVIEW_QUERIES:
                e = fill(expr, variables)
                r = prom.query(e)
                if r.get("status") != "success":
                    failures.append("%s: does not evaluate: %s" % (title, r.get("error")))
                    continue
                result = r["data"]["result"]
                missing = names_in(expr) & MISSING
                if missing:
                    if result:
                        failures.append("%s: has data but names %s, listed as missing" % (title, sorted(missing)))
                    continue
                if not result:
                    failures.append("%s: no data: %s" % (title, e))
                    continue
                seen_titles.add(title)
                values = [float(s["value"][1]) for s in result]
                if title in EXPECTED and values != [EXPECTED[title]]:
                    failures.append("%s: %s, expected %s" % (title, values, EXPECTED[title]))
                if title in ("Memory available before publishers blocked",
                             "Disk space available before publishers blocked", "File descriptors available"):
                    if not all(v > 0 for v in values):
                        failures.append("%s: %s, expected > 0" % (title, values))
                if title == "Nodes (table)":
                    labels = result[0]["metric"]
                    if not (labels.get("rabbitmq_node", "").startswith("sluice@")
                            and labels.get("rabbitmq_cluster") == "sluice" and values[0] > 0):
                        failures.append("%s: %s" % (title, result))
            assert not failures, "\n".join(failures)
            assert set(EXPECTED) <= seen_titles, sorted(set(EXPECTED) - seen_titles)
            # Every family the dashboard names is exported or listed as missing.
            named = set().union(*(names_in(e) for _, e in OVERVIEW_QUERIES))
            exported = set(re.findall(r"^# TYPE (\S+) ", aggregated, re.M))
            assert named - MISSING <= exported, sorted(named - MISSING - exported)
            assert not (MISSING & exported), sorted(MISSING & exported)

            # The counters behind the rate panels, by the amounts the load moved them.
            for series, want in COUNTERS.items():
                sel = series.replace("}", ',job="rabbitmq"}') if "{" in series else series + '{job="rabbitmq"}'
                got = [float(s["value"][1]) for s in prom.result(sel)]
                want += sample(before, series)
                assert got == [want], "%s: %s, expected %s" % (series, got, want)
            # Per object, as RabbitMQ's /metrics/per-object labels them, and
            # joinable with that endpoint's identity_info as the dashboards do.
            for name, want in PER_QUEUE.items():
                got = prom.result('%s{job="rabbitmq-per-object", vhost="/", queue="%s"}' % (name, QUEUE))
                assert [float(s["value"][1]) for s in got] == [want], (name, got)
            joined = prom.result(
                'sum(rabbitmq_queue_messages_ready * on(instance, job) group_left(rabbitmq_cluster) '
                'rabbitmq_identity_info{rabbitmq_cluster="sluice", rabbitmq_endpoint="per-object"}) by (queue)')
            assert [(s["metric"].get("queue"), float(s["value"][1])) for s in joined] == [(QUEUE, READY)], joined
        finally:
            prom.stop()
            conn.close()


def test_without_the_option_the_names_are_absent():
    """The default (sluice) serves none of RabbitMQ's names, so every query
    above would return nothing; "both" serves each naming."""
    with started_broker() as broker:
        if broker.external:
            pytest.skip("needs a sluiced started by the test (SLUICED)")
        for path in ("/metrics", "/metrics/per-object"):
            text = http_text(broker.prometheus_port, path)
            assert "rabbitmq_" not in text and "sluice_queue_messages_ready" in text, path
    with started_broker(extra_args=("--prometheus-names", "both")) as broker:
        text = http_text(broker.prometheus_port, "/metrics")
        assert re.search(r"^sluice_queue_messages_ready 0$", text, re.M), text
        assert re.search(r"^rabbitmq_queue_messages_ready 0$", text, re.M), text
        promtool_lint(text)
        # The management port keeps Sluice's names whatever the option.
        assert "rabbitmq_" not in http_text(broker.http_port, "/metrics")
