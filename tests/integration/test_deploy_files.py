"""deploy/: what can be checked without Docker, Kubernetes or a booted
systemd. Compose, Kubernetes and Grafana files parse and agree with each
other; promtool accepts the Prometheus config and its rules; every metric the
dashboard and the alerts name is one sluiced exports, and every query
evaluates in a real Prometheus scraping a real sluiced; systemd-analyze
verifies the unit; the example config lists every `sluiced --help` option with
its default and sluiced runs with all of it uncommented; the Dockerfile's
runtime stage finds sluiced's libraries."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

from conftest import REPO, Broker, _sluiced_path, amqp_answers, free_port, wait_for

DEPLOY = os.path.join(REPO, "deploy")


def path(*parts):
    return os.path.join(DEPLOY, *parts)


def load_yaml(*parts):
    with open(path(*parts)) as f:
        return yaml.safe_load(f)


def load_yaml_all(*parts):
    with open(path(*parts)) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def dashboard():
    with open(path("grafana", "dashboards", "sluice.json")) as f:
        return json.load(f)


def dashboard_exprs():
    out = []
    for p in dashboard()["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    return out


def alert_rules():
    rules = []
    for g in load_yaml("prometheus", "alerts.yml")["groups"]:
        rules.extend(g["rules"])
    return rules


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


# --------------------------------------------------------------------------
# sluiced itself: its options, and the families it exports

def help_options():
    """{option: default or None} from `sluiced --help` (without help, config)."""
    text = run([_sluiced_path(), "--help"]).stdout
    opts = {}
    for m in re.finditer(r"^\s+(?:-\w \[ )?--([a-z0-9-]+)(?: \])?(?: arg)?(?: \(=([^)]*)\))?", text, re.M):
        if m.group(1) not in ("help", "config"):
            opts[m.group(1)] = m.group(2)
    assert len(opts) >= 15, text
    return opts


# Families only /metrics/per-object has (until that route exists to ask).
PER_OBJECT_ONLY = {
    "sluice_queue_consumers", "sluice_queue_messages_published_total",
    "sluice_queue_messages_delivered_total", "sluice_queue_messages_redelivered_total",
    "sluice_queue_messages_acked_total",
}


def exported_families(port):
    names = set()
    for p in ("/metrics", "/metrics/per-object"):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, p), timeout=10) as r:
                text = r.read().decode()
        except urllib.error.HTTPError:
            continue
        names |= set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    return names | PER_OBJECT_ONLY


def metric_names(expr):
    """sluice_* names in a PromQL expression, histogram suffixes removed."""
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(r"\bsluice_[a-z0-9_]+", expr)}


# --------------------------------------------------------------------------
# compose and Grafana

def test_compose_parses_and_its_files_exist():
    c = load_yaml("compose.yaml")
    services = c["services"]
    assert {"sluiced", "prometheus", "grafana"} <= set(services)
    b = services["sluiced"]["build"]
    assert os.path.isfile(os.path.join(DEPLOY, b["context"], b["dockerfile"]))
    declared = set(c.get("volumes") or {})
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert os.path.exists(os.path.join(DEPLOY, src)), "%s mounts missing %s" % (name, src)
            else:
                assert src in declared, "%s uses undeclared volume %s" % (name, src)
    ports = {p.split(":")[-1] for p in services["sluiced"]["ports"]}
    assert {"5672", "15672"} <= ports
    # Grafana's provisioning agrees with the mounts and the data source.
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    provider = load_yaml("grafana", "provisioning", "dashboards", "sluice.yml")["providers"][0]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    ds = load_yaml("grafana", "provisioning", "datasources", "prometheus.yml")["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"]
    for p in dashboard()["panels"]:
        if "datasource" in p:
            assert p["datasource"]["uid"] == ds["uid"], p["title"]


def test_dashboard_json_is_complete():
    d = dashboard()
    assert d["uid"] and d["title"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(e for _, e in dashboard_exprs())
    # rates, depths, latency, alarms
    for needed in ("sluice_messages_published_total", "sluice_messages_delivered_total",
                   "sluice_queue_messages_ready", "sluice_storage_commit_duration_seconds_bucket",
                   "sluice_storage_wal_sync_duration_seconds_bucket", "sluice_alarms_free_disk_space_watermark",
                   "sluice_alarms_memory_used_watermark"):
        assert needed in exprs, needed
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]


# --------------------------------------------------------------------------
# Prometheus

def promtool():
    t = shutil.which("promtool")
    if t is None:
        pytest.skip("promtool not installed (Debian package prometheus; deploy/install-deps.sh --test)")
    return t


def test_promtool_checks_prometheus_config_and_rules():
    r = run([promtool(), "check", "config", path("prometheus", "prometheus.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr
    cfg = load_yaml("prometheus", "prometheus.yml")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["sluice"]["metrics_path"] == "/metrics"
    assert jobs["sluice-per-object"]["metrics_path"] == "/metrics/per-object"
    for j in jobs.values():
        assert j["static_configs"][0]["targets"] == ["sluiced:15692"]


def test_dashboard_and_alerts_name_only_exported_metrics(broker):
    if broker.external:
        pytest.skip("needs sluiced")
    families = exported_families(broker.prometheus_port)
    used = set()
    for title, expr in dashboard_exprs():
        used |= metric_names(expr)
    for rule in alert_rules():
        used |= metric_names(rule["expr"])
    assert used, "no sluice metrics in the dashboard?"
    assert used <= families, "not exported: %s" % sorted(used - families)


@pytest.mark.deadline(90)
def test_dashboard_and_alert_queries_evaluate_in_prometheus(broker):
    """A real Prometheus (Debian's) scrapes this sluiced; each dashboard and
    alert expression must parse and evaluate; the basic ones return data."""
    if broker.external:
        pytest.skip("needs sluiced")
    prom = shutil.which("prometheus")
    if prom is None:
        pytest.skip("prometheus not installed (deploy/install-deps.sh --test)")
    import pika
    c = broker.pika()
    ch = c.channel()
    ch.queue_declare(queue="deploy-check", durable=True)
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish("", "deploy-check", b"x", pika.BasicProperties(delivery_mode=2))

    work = tempfile.mkdtemp(prefix="sluice-prom-")
    port = free_port()
    with open(os.path.join(work, "prometheus.yml"), "w") as f:
        yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [path("prometheus", "alerts.yml")],
            "scrape_configs": [
                {"job_name": "sluice", "metrics_path": "/metrics",
                 "static_configs": [{"targets": ["127.0.0.1:%d" % broker.http_port]}]},
                {"job_name": "sluice-per-object", "metrics_path": "/metrics/per-object",
                 "static_configs": [{"targets": ["127.0.0.1:%d" % broker.http_port]}]},
            ]}, f)
    log = open(os.path.join(work, "log"), "wb")
    proc = subprocess.Popen([prom, "--config.file=" + os.path.join(work, "prometheus.yml"),
                             "--storage.tsdb.path=" + os.path.join(work, "data"),
                             "--web.listen-address=127.0.0.1:%d" % port],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def query(expr):
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": expr}))
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return json.loads(body)
            except ValueError:      # not an API answer: e.g. 503 "Service Unavailable" while it starts
                return {"status": "http %d" % e.code, "error": body.decode(errors="replace")}

    def ready():
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/-/ready" % port, timeout=5) as r:
                return r.status == 200
        except OSError:             # refused, or 503 until its storage is open
            return False

    try:
        wait_for(ready, timeout=60, interval=0.2, what="Prometheus to be ready")

        def has_rate():
            try:
                r = query("rate(sluice_messages_published_total[5s])")
            except OSError:
                return False
            return r["status"] == "success" and r["data"]["result"]
        for i in range(20):        # traffic while Prometheus gathers samples for rate()
            ch.basic_publish("", "deploy-check", b"x", pika.BasicProperties(delivery_mode=2))
        wait_for(has_rate, timeout=30, interval=0.5, what="Prometheus to have two scrapes of sluiced")
        failures = []
        exprs = dashboard_exprs() + [("alert " + r["alert"], r["expr"]) for r in alert_rules()]
        for title, expr in exprs:
            e = expr.replace("$__rate_interval", "10s").replace("$instance", ".*")
            r = query(e)
            if r.get("status") != "success":
                failures.append("%s: %s -> %s" % (title, e, r.get("error")))
        assert not failures, "\n".join(failures)
        # The plain ones have data.
        for e in ('sum(sluice_queue_messages_ready{queue=""})', "max(sluice_alarms_free_disk_space_watermark)",
                  'histogram_quantile(0.99, sum by (le) (rate(sluice_storage_commit_duration_seconds_bucket[10s])))'):
            assert query(e)["data"]["result"], e
    finally:
        c.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------
# systemd

def test_systemd_unit_verifies():
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not available")
    with open(path("systemd", "sluiced.service")) as f:
        unit = f.read()
    assert "Restart=on-failure" in unit
    for hardening in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "SystemCallFilter="):
        assert hardening in unit
    # verify wants ExecStart's binary to exist: point it at the one built here.
    work = tempfile.mkdtemp(prefix="sluice-unit-")
    try:
        p = os.path.join(work, "sluiced.service")
        with open(p, "w") as f:
            f.write(unit.replace("/usr/local/bin/sluiced", _sluiced_path()))
        r = run([tool, "verify", p])
        assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stdout + r.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------
# the example config

CONF_LINE = re.compile(r"^#\s*([a-z0-9-]+)\s*=\s*(.*?)\s*$")


def example_settings():
    out = {}
    with open(path("sluiced.conf.example")) as f:
        for line in f:
            m = CONF_LINE.match(line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def test_example_config_lists_every_option_with_its_default():
    opts, example = help_options(), example_settings()
    assert set(opts) == set(example), "missing: %s, unknown: %s" % (
        sorted(set(opts) - set(example)), sorted(set(example) - set(opts)))
    for name, default in opts.items():
        value = example[name]
        if default is None:
            continue
        if default in ("0", "1") and value in ("true", "false"):
            value = "1" if value == "true" else "0"
        assert value == default, "%s: example says %r, sluiced --help %r" % (name, example[name], default)


@pytest.mark.deadline(60)
def test_sluiced_runs_with_the_whole_example_config_uncommented():
    work = tempfile.mkdtemp(prefix="sluice-conf-")
    proc = None
    try:
        conf = os.path.join(work, "sluiced.conf")
        with open(path("sluiced.conf.example")) as src, open(conf, "w") as dst:
            for line in src:
                m = CONF_LINE.match(line)
                dst.write("%s = %s\n" % (m.group(1), m.group(2)) if m else line)
        port, http = free_port(), free_port()
        # The command line wins: ports and data dir of the test's own, and no
        # TLS listeners (the example's certificate paths are not here; test_tls
        # covers those options).
        log = open(os.path.join(work, "log"), "wb")
        proc = subprocess.Popen([_sluiced_path(), "--config", conf, "--amqp-port", str(port),
                                 "--http-port", str(http), "--data-dir", os.path.join(work, "data"),
                                 "--amqps-port", "0", "--https-port", "0", "--prometheus-port", "0"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work)
        log.close()

        def up():
            assert proc.poll() is None, open(os.path.join(work, "log")).read()
            return amqp_answers("127.0.0.1", port)
        wait_for(up, timeout=15, what="sluiced with the example config")
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % http, timeout=5) as r:
            assert r.status == 200
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=15)
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------
# Docker

def dockerfile_instructions():
    with open(path("Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_dockerfile_shape():
    ins = dockerfile_instructions()
    froms = [i for i in ins if i.startswith("FROM ")]
    assert len(froms) == 2 and froms[0].startswith("FROM debian:12 ") and froms[1].startswith("FROM debian:12")
    runtime = ins[ins.index(froms[1]):]
    users = [i.split()[1] for i in runtime if i.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    volumes = [i for i in runtime if i.startswith("VOLUME ")]
    assert volumes and "/var/lib/sluice" in volumes[0]
    assert any(i.startswith("HEALTHCHECK ") and "/metrics" in i for i in runtime)
    entry = [i for i in runtime if i.startswith("ENTRYPOINT ")][0]
    assert json.loads(entry[len("ENTRYPOINT "):])[1:] == ["--data-dir", "/var/lib/sluice"]
    assert any("install-deps.sh" in i for i in ins if i.startswith("RUN "))
    # COPY sources (other than --from) exist in the build context (the repo).
    for i in ins:
        if i.startswith("COPY ") and "--from" not in i:
            for src in i.split()[1:-1]:
                if src != ".":
                    assert os.path.exists(os.path.join(REPO, src)), src
    # The runtime user is the one the Kubernetes manifests run as.
    sts = [d for d in load_yaml_all("k8s", "statefulset.yaml") if d["kind"] == "StatefulSet"][0]
    assert str(sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) == users[-1].split(":")[0]


def test_runtime_packages_finds_sluiced_libraries():
    r = run([path("runtime-packages.sh"), _sluiced_path()])
    assert r.returncode == 0, r.stderr
    pkgs = r.stdout.split()
    # RocksDB is linked in statically (storage/CMakeLists.txt): the image
    # needs the compression libraries it calls, not librocksdb.
    for needed in ("libsnappy1v5", "libzstd1", "libprometheus-cpp-core1.0", "libstdc++6", "libc6"):
        assert needed in pkgs, pkgs
    assert not any(p.startswith("librocksdb") for p in pkgs), pkgs
    # Several binaries (the image ships sluicectl too): the union, once each.
    ctl = os.environ.get("SLUICECTL") or os.path.join(os.path.dirname(_sluiced_path()), "sluicectl")
    if os.path.exists(ctl):
        r2 = run([path("runtime-packages.sh"), _sluiced_path(), ctl])
        assert r2.returncode == 0, r2.stderr
        both = r2.stdout.split()
        assert set(pkgs) <= set(both) and len(both) == len(set(both)), both


# --------------------------------------------------------------------------
# Kubernetes

def k8s_docs():
    docs = []
    for name in sorted(os.listdir(path("k8s"))):
        if name.endswith(".yaml"):
            docs.extend((name, d) for d in load_yaml_all("k8s", name))
    return docs


def test_k8s_manifests_agree():
    docs = k8s_docs()
    by_kind = {}
    for name, d in docs:
        assert d.get("apiVersion") and d.get("kind"), name
        by_kind.setdefault(d["kind"], []).append(d)
    kust = by_kind["Kustomization"][0]
    for res in kust["resources"]:
        assert os.path.isfile(path("k8s", res)), res

    sts = by_kind["StatefulSet"][0]
    spec = sts["spec"]
    tmpl = spec["template"]
    labels = tmpl["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    headless = services[spec["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    for s in services.values():
        assert all(labels.get(k) == v for k, v in s["spec"]["selector"].items())

    claims = {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
    volumes = {v["name"]: v for v in tmpl["spec"].get("volumes", [])}
    container = tmpl["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"amqp": 5672, "http": 15672, "prometheus": 15692}
    for s in services.values():
        for p in s["spec"]["ports"]:
            assert p["targetPort"] in ports
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == "/var/lib/sluice" and "data" in claims
    for m in mounts:
        assert m in claims or m in volumes, m

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/metrics" and get["port"] in ports, probe

    ann = tmpl["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert int(ann["prometheus.io/port"]) == ports["prometheus"]
    assert ann["prometheus.io/path"] == "/metrics"

    cm_name = volumes["config"]["configMap"]["name"]
    cm = [c for c in by_kind["ConfigMap"] if c["metadata"]["name"] == cm_name][0]
    assert "--config=%s/sluiced.conf" % mounts["config"] in container["args"]
    secret_ref = container["env"][0]["valueFrom"]["secretKeyRef"]
    secret = [s for s in by_kind["Secret"] if s["metadata"]["name"] == secret_ref["name"]][0]
    assert secret_ref["key"] in secret["stringData"]

    # sluiced accepts the ConfigMap's config file.
    work = tempfile.mkdtemp(prefix="sluice-k8s-")
    try:
        conf = os.path.join(work, "sluiced.conf")
        with open(conf, "w") as f:
            f.write(cm["data"]["sluiced.conf"])
        r = run([_sluiced_path(), "--config", conf, "--help"])
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------
# Cluster mode: compose.cluster.yaml, Dockerfile.etcd, k8s/cluster/

def flag_values(args):
    """{"--flag": value} of '--flag=value' arguments (a bare flag: True)."""
    out = {}
    for a in args:
        assert a.startswith("--"), a
        name, eq, value = a.partition("=")
        assert name not in out, "%s given twice" % name
        out[name] = value if eq else True
    return out


def etcd_options():
    """etcd's flags (from `etcd --help`), or None without etcd."""
    exe = shutil.which("etcd")
    if exe is None:
        return None
    r = run([exe, "--help"])
    return set(re.findall(r"^\s+(--[a-z0-9-]+)", r.stdout + r.stderr, re.M))


def check_etcd_members(members, etcd_flags):
    """members: {name: {flag: value}}. Every member in --initial-cluster, at
    its advertised peer URL, with one token; the flags are etcd's."""
    for name, f in members.items():
        assert f["--name"] == name
        initial = dict(m.split("=", 1) for m in f["--initial-cluster"].split(","))
        assert set(initial) == set(members), initial
        assert initial[name] == f["--initial-advertise-peer-urls"], name
        assert f["--initial-cluster-state"] == "new"
        if etcd_flags is not None:
            assert set(f) <= etcd_flags, "not etcd flags: %s" % sorted(set(f) - etcd_flags)
    assert len({f["--initial-cluster-token"] for f in members.values()}) == 1


def dockerfile_etcd_instructions():
    with open(path("Dockerfile.etcd")) as f:
        text = f.read().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_dockerfile_etcd_is_debians_etcd_as_a_user():
    ins = dockerfile_etcd_instructions()
    froms = [i for i in ins if i.startswith("FROM ")]
    assert froms == ["FROM debian:12-slim"]
    run_lines = " ".join(i for i in ins if i.startswith("RUN "))
    assert "etcd-server" in run_lines and "--uid 10002" in run_lines
    users = [i.split()[1] for i in ins if i.startswith("USER ")]
    assert users == ["10002:10002"]
    assert not any(i.startswith(("COPY ", "ADD ")) for i in ins)   # built from Debian's packages only
    entry = json.loads([i for i in ins if i.startswith("ENTRYPOINT ")][0][len("ENTRYPOINT "):])
    assert entry[0] == "/usr/bin/etcd" and "--data-dir" in entry
    assert any(i.startswith("VOLUME ") and "/var/lib/etcd" in i for i in ins)
    opts = etcd_options()
    if opts is not None:
        assert "--data-dir" in opts


def compose_cluster():
    c = load_yaml("compose.cluster.yaml")
    services = c["services"]
    etcd = {n: s for n, s in services.items() if n.startswith("etcd")}
    nodes = {n: s for n, s in services.items() if n.startswith("sluice")}
    assert len(etcd) == 3 and len(nodes) == 3 and len(services) == 6, sorted(services)
    return c, etcd, nodes


def test_cluster_compose_parses_and_agrees():
    c, etcd, nodes = compose_cluster()
    declared = set(c.get("volumes") or {})
    for name, svc in c["services"].items():
        b = svc["build"]
        assert os.path.isfile(os.path.join(DEPLOY, b["context"], b["dockerfile"])), name
        for v in svc.get("volumes", []):
            assert v.split(":")[0] in declared, "%s uses undeclared volume %s" % (name, v)
    # Each service its own volume; each node its own host ports.
    mounts = [v.split(":")[0] for s in c["services"].values() for v in s["volumes"]]
    assert len(mounts) == len(set(mounts)) == 6
    host_ports = [p.split(":")[0] for s in nodes.values() for p in s["ports"]]
    assert len(host_ports) == len(set(host_ports)) and "5672" in host_ports and "15672" in host_ports

    check_etcd_members({n: flag_values(s["command"]) for n, s in etcd.items()}, etcd_options())
    for n, s in etcd.items():
        f = flag_values(s["command"])
        assert f["--advertise-client-urls"] == "http://%s:2379" % n
        assert f["--initial-advertise-peer-urls"] == "http://%s:2380" % n
        assert s["image"] == "sluice-etcd:latest" and "/var/lib/etcd" in s["volumes"][0]

    opts = help_options()
    ids = set()
    for n, s in nodes.items():
        f = flag_values(s["command"])
        assert {k[2:] for k in f} <= set(opts), "not sluiced options: %s" % sorted(
            k for k in f if k[2:] not in opts)
        # id and advertised host: the service's name, which the others resolve
        assert f["--node-id"] == n and f["--advertise-host"] == n
        ids.add(f["--node-id"])
        assert sorted(f["--cluster-etcd"].split(",")) == ["%s:2379" % e for e in sorted(etcd)]
        assert set(s["depends_on"]) == set(etcd)
        assert f["--default-user-loopback-only"] == "false"
        assert s["image"] == "sluice:latest" and s["volumes"][0].endswith(":/var/lib/sluice")
    assert len(ids) == 3
    # Every node passes the same cluster settings.
    shared = [{k: v for k, v in flag_values(s["command"]).items() if k not in ("--node-id", "--advertise-host")}
              for s in nodes.values()]
    assert all(x == shared[0] for x in shared)


@pytest.mark.deadline(90)
def test_cluster_compose_nodes_form_a_cluster_with_a_real_etcd(tmp_path):
    """The compose file's sluiced commands, run here against one etcd (test_
    cluster.py's) with loopback addresses and free ports for the compose
    network's names: one leader, the other two in sync, logged in as the
    compose file's user."""
    from mgmt_http import Api
    from test_cluster import Etcd
    _, _, nodes = compose_cluster()
    etcd = Etcd(str(tmp_path))
    etcd.start()
    started = []
    try:
        for name, svc in sorted(nodes.items()):
            args = []
            for a in svc["command"]:
                flag = a.partition("=")[0]
                a = {"--cluster-etcd": "--cluster-etcd=" + etcd.endpoint,
                     "--advertise-host": "--advertise-host=127.0.0.1",
                     "--replication-port": "--replication-port=%d" % free_port(),
                     "--default-password": "--default-password=secret"}.get(flag, a)
                args.append(a)
            b = Broker("127.0.0.1", free_port(), http_port=free_port(), data_dir=str(tmp_path / name / "data"),
                       exe=_sluiced_path(), workdir=str(tmp_path / name), extra_args=args)
            os.makedirs(b.workdir)
            b.start()
            started.append(b)
        api = Api(started[0].http_port, user="sluice", password="secret")

        def settled():
            r = api.get("/api/nodes")
            if r.status != 200:
                return None
            # (Just elected, a leader may answer before its first view of
            # the cluster: one node, without the cluster's fields.)
            view = r.json
            ok = (sorted(n.get("node_id", "") for n in view) == sorted(nodes)
                  and sorted(n.get("role", "") for n in view) == ["follower", "follower", "leader"]
                  and all(n.get("in_sync") for n in view))
            return view if ok else None
        wait_for(settled, 30, interval=0.1, what="a leader and two followers in sync")
    finally:
        for b in started:
            b._hard_stop()
        etcd.stop()


def cluster_k8s_docs():
    docs = []
    for name in sorted(os.listdir(path("k8s", "cluster"))):
        if name.endswith(".yaml"):
            docs.extend((name, d) for d in load_yaml_all("k8s", "cluster", name))
    return docs


def env_refs(container):
    """$(VAR) references in args resolve to env entries of the container."""
    names = {e["name"]: e for e in container.get("env", [])}
    for a in container.get("args", []):
        for ref in re.findall(r"\$\(([A-Z_]+)\)", a):
            assert ref in names, "%s: $(%s) is not in env" % (a, ref)
    return names


def test_cluster_k8s_manifests_agree():
    docs = cluster_k8s_docs()
    by_kind = {}
    for name, d in docs:
        assert d.get("apiVersion") and d.get("kind"), name
        by_kind.setdefault(d["kind"], []).append(d)
    for res in by_kind["Kustomization"][0]["resources"]:
        assert os.path.isfile(path("k8s", "cluster", res)), res
    sets = {s["metadata"]["name"]: s for s in by_kind["StatefulSet"]}
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    assert set(sets) == {"sluice-cluster", "sluice-etcd"}

    # Selectors: each Service picks the pods of one StatefulSet, and none of
    # the single-node manifests' (deploy/k8s) pods.
    single = [d for _, d in k8s_docs() if d["kind"] == "StatefulSet"][0]
    single_labels = single["spec"]["template"]["metadata"]["labels"]
    for sts in sets.values():
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in sts["spec"]["selector"]["matchLabels"].items())
        assert not all(single_labels.get(k) == v for k, v in sts["spec"]["selector"]["matchLabels"].items())
        headless = services[sts["spec"]["serviceName"]]
        assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
        assert sts["spec"]["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    for s in services.values():
        picked = [n for n, sts in sets.items()
                  if all(sts["spec"]["template"]["metadata"]["labels"].get(k) == v
                         for k, v in s["spec"]["selector"].items())]
        assert len(picked) == 1, s["metadata"]["name"]
        ports = {p["name"] for p in sets[picked[0]]["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for p in s["spec"]["ports"]:
            assert p["targetPort"] in ports, (s["metadata"]["name"], p)

    # etcd: the members are the StatefulSet's pods at their headless names.
    etcd = sets["sluice-etcd"]
    ec = etcd["spec"]["template"]["spec"]["containers"][0]
    env = env_refs(ec)
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    svc = etcd["spec"]["serviceName"]
    pods = ["sluice-etcd-%d" % i for i in range(etcd["spec"]["replicas"])]
    members = {}
    for pod in pods:   # the args as each pod sees them
        members[pod] = flag_values([a.replace("$(POD_NAME)", pod) for a in ec["args"]])
        assert members[pod]["--initial-advertise-peer-urls"] == "http://%s.%s:2380" % (pod, svc)
    check_etcd_members(members, etcd_options())
    with open(path("Dockerfile.etcd")) as f:
        assert "USER %d:" % etcd["spec"]["template"]["spec"]["securityContext"]["runAsUser"] in f.read()
    client_port = {p["name"]: p["containerPort"] for p in ec["ports"]}["client"]

    # sluiced: node id from the pod name, advertised at its headless name.
    sts = sets["sluice-cluster"]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    env = env_refs(c)
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    f = flag_values(c["args"])
    assert f["--node-id"] == "$(POD_NAME)"
    assert f["--advertise-host"].startswith("$(POD_NAME).%s." % sts["spec"]["serviceName"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["amqp"] == 5672 and ports["http"] == 15672
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["data"] == "/var/lib/sluice"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        action = c[probe].get("httpGet") or c[probe]["tcpSocket"]
        assert action["port"] in ports, probe
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    cm = [d for d in by_kind["ConfigMap"] if d["metadata"]["name"] == volumes["config"]["configMap"]["name"]][0]
    assert f["--config"] == mounts["config"] + "/sluiced.conf"
    conf = dict(line.split("=", 1) for line in cm["data"]["sluiced.conf"].splitlines()
                if line.strip() and not line.lstrip().startswith("#"))
    conf = {k.strip(): v.strip() for k, v in conf.items()}
    opts = help_options()
    assert set(conf) <= set(opts) and {k[2:] for k in f} - {"config"} <= set(opts)
    assert int(conf["replication-port"]) == ports["replication"]
    assert sorted(conf["cluster-etcd"].split(",")) == ["%s.%s:%d" % (p, svc, client_port) for p in pods]
    # The runtime user is the sluice image's, as in deploy/k8s.
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == \
        single["spec"]["template"]["spec"]["securityContext"]["runAsUser"]

    # sluiced accepts the ConfigMap's file and the pod's arguments.
    work = tempfile.mkdtemp(prefix="sluice-k8s-cluster-")
    try:
        with open(os.path.join(work, "sluiced.conf"), "w") as fh:
            fh.write(cm["data"]["sluiced.conf"])
        args = [a.replace("$(POD_NAME)", "sluice-cluster-0").replace("$(POD_NAMESPACE)", "default")
                 .replace("$(SLUICE_PASSWORD)", "x").replace(mounts["config"], work) for a in c["args"]]
        r = run([_sluiced_path()] + args + ["--help"])
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # kubectl renders the kustomization as it is (no cluster needed).
    kubectl = shutil.which("kubectl")
    if kubectl:
        r = run([kubectl, "kustomize", path("k8s", "cluster")])
        assert r.returncode == 0, r.stderr
        rendered = [d for d in yaml.safe_load_all(r.stdout) if d]
        assert sorted(d["kind"] for d in rendered) == sorted(d["kind"] for _, d in docs if d["kind"] != "Kustomization")
