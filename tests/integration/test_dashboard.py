"""The dashboard in a real browser: headless Chromium (Debian's `chromium`)
loads the page from a running sluiced, and the test reads the DOM the page
built from the management API: a queue a pika client filled, with its message
count; the login form; the alarm banner; the Nodes panel of a cluster
(test_cluster.py's loopback etcd and three sluiced), hidden on a single node. Screenshots go to
$SLUICE_TEST_OUTPUT (default: build/test-output/) for a person to look at.

Chromium is driven over the DevTools protocol on a pipe (no WebDriver, no
websocket client needed); the test logs in through the page's form, since
the page takes no credentials from its URL.
"""

import base64
import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import time

import pika
import pytest

from conftest import REPO, unique, wait_for
from mgmt_http import ExtraBroker, api_for, q
import test_cluster
from test_cluster import cluster, publish_confirmed  # noqa: F401 - cluster is a fixture

pytestmark = pytest.mark.deadline(120)

OUTPUT = os.environ.get("SLUICE_TEST_OUTPUT") or os.path.join(REPO, "build", "test-output")


def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (deploy/install-deps.sh --test installs it)")
        pytest.skip("chromium is not installed (deploy/install-deps.sh --test installs it)")
    return exe


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe
    (--remote-debugging-pipe: NUL-separated JSON on descriptors 3 and 4), so
    the test logs in through the page's form as a person would: credentials
    never go into a URL."""

    def __init__(self, tmp_path, height=1000):
        self.height = height
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds():  # Chromium reads commands on 3 and writes answers on 4
            r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1440,%d" % height,
             "--remote-debugging-pipe", "--user-data-dir=%s" % (tmp_path / ("profile-%d" % id(self))),
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, pass_fds=(3, 4, to_chrome_r, from_chrome_w))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.session = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=1440, height=height, deviceScaleFactor=1,
                  mobile=False)

    def call(self, method, timeout=30, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    assert "error" not in reply, "%s: %r" % (method, reply["error"])
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            assert left > 0, "Chromium did not answer %s in %ds" % (method, timeout)
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                assert chunk, "Chromium exited"
                self._buf += chunk

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, r["exceptionDetails"]
        return r["result"].get("value")

    def wait(self, expression, timeout=15, what=None):
        """Until `expression` is truthy (an exception counts as not yet: the
        element may not be built)."""
        def check():
            r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
            return "exceptionDetails" not in r and r["result"].get("value")
        return wait_for(check, timeout=timeout, interval=0.05, what=what or expression)

    def open(self, url, login=("guest", "guest")):
        self.call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && !!document.getElementById('login-form')")
        if login:
            self.wait("!document.getElementById('login').hidden", what="the login form")
            user, password = login
            self.js("""(() => {
                document.getElementById('login-user').value = %s;
                document.getElementById('login-pass').value = %s;
                document.getElementById('login-form').requestSubmit();
            })()""" % (json.dumps(user), json.dumps(password)))

    def dom(self):
        return self.js("document.documentElement.outerHTML")

    def screenshot(self, name):
        os.makedirs(OUTPUT, exist_ok=True)
        path = os.path.join(OUTPUT, name)
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        with open(path, "wb") as f:
            f.write(data)
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000, path

    def close(self):
        os.close(self._to_chrome)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._from_chrome)


@contextlib.contextmanager
def browser(tmp_path, height=1000):
    b = Browser(tmp_path, height)
    try:
        yield b
    finally:
        b.close()


def url(broker, fragment):
    return "http://127.0.0.1:%d/#%s" % (broker.http_port, fragment)


def section(dom, element_id):
    """The opening tag of the element with this id."""
    m = re.search(r'<[a-z]+[^>]*\bid="%s"[^>]*>' % re.escape(element_id), dom)
    assert m, "no #%s in the DOM" % element_id
    return m.group(0)


def queue_row(dom, name):
    m = re.search(r'<tr data-queue="%s">(.*?)</tr>' % re.escape(name), dom, re.S)
    assert m, "queue %s is not in the page's table" % name
    cells = dict(re.findall(r'<td[^>]*data-col="([a-z_]+)"[^>]*>(.*?)</td>', m.group(1), re.S))
    return {k: re.sub(r"<[^>]+>", "", v) for k, v in cells.items()}


def node_rows(dom):
    """The Nodes panel's rows: {node id: {column: text}}."""
    rows = {}
    for node_id, body in re.findall(r'<tr data-node="([^"]+)">(.*?)</tr>', dom, re.S):
        cells = dict(re.findall(r'<td[^>]*data-col="([a-z_]+)"[^>]*>(.*?)</td>', body, re.S))
        rows[node_id] = {k: re.sub(r"<[^>]+>", "", v) for k, v in cells.items()}
    return rows


def fill_queue(broker, name, n):
    c = broker.pika(client_properties={"connection_name": "dashboard-test"})
    ch = c.channel()
    ch.queue_declare(name, durable=True)
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", name, b"payload %d" % i, pika.BasicProperties(delivery_mode=2))
    return c


# --------------------------------------------------------------------------

def test_static_files_are_served_without_auth(broker):
    api = api_for(broker)
    for path, kind in (("/", "text/html"), ("/index.html", "text/html"), ("/app.js", "text/javascript"),
                       ("/style.css", "text/css")):
        r = api.get(path, auth=None)
        assert r.status == 200 and r.header("Content-Type").startswith(kind), (path, r)
    page = api.get("/", auth=None)
    assert b'src="app.js"' in page.body and b'href="style.css"' in page.body
    assert "default-src 'self'" in page.header("Content-Security-Policy")
    assert b"http://" not in page.body and b"https://" not in page.body   # nothing from a CDN
    assert api.get("/missing.js", auth=None).status == 404
    assert api.post("/", auth=None).status == 405


def test_queue_and_its_count_show_in_chromium(broker, tmp_path):
    name = unique("dash")
    conn = fill_queue(broker, name, 17)
    row_js = "!!document.querySelector('tr[data-queue=%s]')" % json.dumps(name)
    try:
        with browser(tmp_path, height=800) as b:
            b.open(url(broker, "/queues"))
            b.wait(row_js, what="queue %s in the table" % name)
            dom = b.dom()
            b.screenshot("dashboard-queues.png")
            row = queue_row(dom, name)
            assert row["name"] == name
            assert row["messages_ready"] == "17" and row["messages"] == "17" and row["messages_unacknowledged"] == "0"
            assert 'hidden=""' in section(dom, "login") and 'hidden' not in section(dom, "main")
            assert "guest" not in b.js("location.href")  # no credentials in the URL

            # The same session moves between views (credentials in sessionStorage).
            b.call("Page.navigate", url=url(broker, "/overview"))
            b.wait(row_js + " && document.getElementById('total-queues').textContent !== ''")
            dom = b.dom()
            b.screenshot("dashboard.png")
            assert queue_row(dom, name)["messages"] == "17"          # busiest queues
            assert re.search(r'id="total-queues"><span class="value">\d+', dom)
            assert 'id="chart-rates"' in dom and "Publish:" in dom
            assert 'hidden=""' in section(dom, "nodes-panel")   # not clustered: no Nodes panel

            b.call("Page.navigate", url=url(broker, "/queues/%s/%s" % (q("/"), q(name))))
            b.wait("/\\d/.test(document.getElementById('queue-ready')?.textContent || '')")
            dom = b.dom()
            b.screenshot("dashboard-queue.png")
            m = re.search(r'id="queue-ready"><span class="value">([\d,]+)<', dom)
            assert m and m.group(1) == "17", "queue view shows %s" % (m and m.group(1))
            assert "(default exchange)" in dom

            b.call("Page.navigate", url=url(broker, "/connections"))
            b.wait("document.body.textContent.includes('dashboard-test')")
            dom = b.dom()
            b.screenshot("dashboard-connections.png")
            assert "dashboard-test" in dom and "Pika Python Client Library" in dom
    finally:
        conn.close()


@pytest.mark.deadline(90)
def test_rate_chart_draws_a_load(tmp_path):
    """Under a publish load the overview's rate chart is not a flat line: the
    publish series' pixels span rows of the canvas, and the legend shows a
    publish rate near the load's."""
    b = ExtraBroker("--collect-statistics-interval", "1000")
    try:
        c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = c.channel()
        name = unique("chart")
        ch.queue_declare(name)
        with browser(tmp_path) as br:
            br.open("http://127.0.0.1:%d/#/overview" % b.http_port)
            br.wait("!!document.getElementById('chart-rates') && !document.getElementById('main').hidden")
            br.js("""(() => { const s = document.getElementById('refresh-interval');
                              s.value = '2000'; s.dispatchEvent(new Event('change')); })()""")
            # Publish 300 msg/s until the chart's legend shows a rate.
            start = time.monotonic()
            n = 0
            deadline = start + 40
            legend = "document.getElementById('legend-rates').textContent"
            while time.monotonic() < deadline:
                due = int((time.monotonic() - start) * 300)
                while n < due:
                    ch.basic_publish("", name, b"x")
                    n += 1
                c.process_data_events(time_limit=0.01)
                if n % 50 == 0:
                    text = br.js(legend)
                    m = re.search(r"Publish:\s*([\d.,]+)", text)
                    if m and float(m.group(1).replace(",", "")) >= 200:
                        break
            text = br.js(legend)
            m = re.search(r"Publish:\s*([\d.,]+)", text)
            assert m and 200 <= float(m.group(1).replace(",", "")) <= 400, text
            # Rows of the canvas that hold the publish series' colour (#2563eb).
            rows = br.js("""(() => {
                const c = document.getElementById('chart-rates');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                const rows = new Set();
                for (let i = 0; i < d.length; i += 4)
                  if (Math.abs(d[i] - 0x25) < 24 && Math.abs(d[i + 1] - 0x63) < 24 && Math.abs(d[i + 2] - 0xeb) < 24)
                    rows.add(Math.floor(i / 4 / c.width));
                return [...rows].sort((a, b) => a - b);
            })()""")
            br.screenshot("dashboard-chart-load.png")
            assert rows and rows[-1] - rows[0] >= 20, "publish line spans rows %r" % (rows[:3] + rows[-3:])
        c.close()
    finally:
        assert b.stop() == 0


@pytest.mark.deadline(90)
def test_queue_capacity_and_its_trend(tmp_path):
    """A queue drained by a consumer the test paces at 50 msg/s: the queue
    page shows an expected wait near depth / 50 s, the capacity chart draws
    its trend, and the queue list has the figures as columns."""
    b = ExtraBroker("--collect-statistics-interval", "1000")
    rate = 50.0
    try:
        c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
        ch = c.channel()
        name = unique("capacity")
        ch.queue_declare(name)
        for _ in range(2000):   # 40 s of work: the wait shows in seconds throughout
            ch.basic_publish("", name, b"x")
        with browser(tmp_path) as br:
            br.open("http://127.0.0.1:%d/#/queues/%s/%s" % (b.http_port, q("/"), q(name)))
            br.wait("!!document.getElementById('queue-ready') && !document.getElementById('main').hidden")
            br.js("""(() => { const s = document.getElementById('refresh-interval');
                              s.value = '2000'; s.dispatchEvent(new Event('change')); })()""")
            legend = "document.getElementById('legend-capacity').textContent"
            ready = "document.getElementById('queue-ready')?.textContent || ''"
            start = time.monotonic()
            n = 0
            seen = []   # (legend wait, page depth) of refreshes whose wait matched
            # Pixel columns holding the wait series' colour (#d97706): a trend
            # spans the chart, a single point is a dot.
            wait_columns = """(() => {
                const c = document.getElementById('chart-capacity');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                const cols = new Set();
                for (let i = 0; i < d.length; i += 4)
                  if (Math.abs(d[i] - 0xd9) < 24 && Math.abs(d[i + 1] - 0x77) < 24 && Math.abs(d[i + 2] - 0x06) < 24)
                    cols.add((i / 4) % c.width);
                return cols.size;
            })()"""
            cols = 0
            deadline = start + 40
            while time.monotonic() < deadline and (len(seen) < 3 or cols < 50):
                due = int((time.monotonic() - start) * rate)   # pacing the consumer, not waiting
                while n < due:
                    ch.basic_get(name, auto_ack=True)
                    n += 1
                time.sleep(0.005)
                if n % 25 == 0:
                    m = re.search(r"Expected wait:\s*([\d.]+) s", br.js(legend))
                    depth = int(re.sub(r"\D", "", br.js(ready)) or 0)
                    if m and depth and abs(float(m.group(1)) - depth / rate) <= 0.2 * depth / rate:
                        if not seen or seen[-1][1] != depth:
                            seen.append((float(m.group(1)), depth))
                    cols = br.js(wait_columns)
            assert len(seen) >= 3, "expected wait never near depth / %.0f s: %r (legend %r)" % (
                rate, seen, br.js(legend))
            assert "Drain time:" in br.js(legend)
            br.screenshot("dashboard-capacity.png")
            assert cols >= 50, "the expected-wait line covers %d columns" % cols

            br.call("Page.navigate", url="http://127.0.0.1:%d/#/queues" % b.http_port)
            br.wait("!!document.querySelector('tr[data-queue=%s]')" % json.dumps(name))
            row = queue_row(br.dom(), name)
            # The consumer has stopped: "never", or the last window's figures.
            figure = r"([\d.]+ (s|min)|never)$"
            assert re.match(figure, row["wait"]) and re.match(figure, row["drain"]), row
        c.close()
    finally:
        assert b.stop() == 0


def test_login_form_without_or_with_wrong_credentials(broker, tmp_path):
    with browser(tmp_path, height=700) as b:
        b.open(url(broker, "/queues"), login=None)
        b.wait("!document.getElementById('login').hidden")
        dom = b.dom()
        assert "hidden" not in section(dom, "login") and 'hidden=""' in section(dom, "main")
        b.open(url(broker, "/queues"), login=("guest", "wrong"))
        b.wait("document.getElementById('login-error').textContent.startsWith('Login failed')")
        b.screenshot("dashboard-login.png")
        dom = b.dom()
        assert "hidden" not in section(dom, "login")
        assert re.search(r'id="login-error"[^>]*>Login failed', dom)
    # Credentials in the URL are not taken (they would stay in history and logs).
    with browser(tmp_path, height=700) as b:
        b.open("http://127.0.0.1:%d/?user=guest&pass=guest#/queues" % broker.http_port, login=None)
        b.wait("!document.getElementById('login').hidden")
        assert 'hidden=""' in section(b.dom(), "main")


def test_alarm_is_shown(tmp_path):
    chromium()
    b = ExtraBroker("--disk-free-limit", str(1 << 60))   # alarm at once
    try:
        with browser(tmp_path, height=700) as br:
            br.open(url(b, "/overview"))
            br.wait("!document.getElementById('alarms').hidden && !document.getElementById('main').hidden")
            dom = br.dom()
            br.screenshot("dashboard-alarm.png")
        banner = re.search(r'<div id="alarms"[^>]*>(.*?)</div>', dom, re.S)
        assert banner and "hidden" not in section(dom, "alarms")
        assert "Resource alarm" in banner.group(1) and "disk" in banner.group(1)
    finally:
        assert b.stop() == 0


@pytest.fixture
def long_lease_cluster(monkeypatch, request):
    """test_cluster's cluster with a 10 s lease, so a stopped follower is
    still listed (out of the ISR) while the page refreshes."""
    monkeypatch.setattr(test_cluster, "LEASE_TTL", 10)
    return request.getfixturevalue("cluster")


@pytest.mark.deadline(150)
def test_nodes_panel_shows_a_cluster_and_a_stuck_follower(long_lease_cluster, tmp_path):
    cluster = long_lease_cluster
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    rows_js = "document.querySelectorAll('#nodes-table tr[data-node]').length === 3"
    with browser(tmp_path, height=1100) as b:
        b.open(url(follower, "/overview"))   # through a follower: its HTTP goes to the leader
        b.wait("!document.getElementById('nodes-panel').hidden && " + rows_js, what="the Nodes panel")
        dom = b.dom()
        b.screenshot("dashboard-nodes.png")
        rows = node_rows(dom)
        assert sorted(rows) == ["n1", "n2", "n3"], rows
        assert [r["role"] for r in rows.values()].count("leader") == 1, rows
        assert rows[leader.node_id]["role"] == "leader"
        for n in cluster.nodes:
            r = rows[n.node_id]
            assert r["in_sync"] == "yes" and r["address"] == "127.0.0.1:%d" % n.port, r
        assert rows[leader.node_id]["lag_batches"] == "0" and rows[follower.node_id]["state"] == "streaming", rows

        b.open(url(leader, "/overview"))   # another port: another origin, another login
        b.wait(rows_js)
        b.js("""(() => { const s = document.getElementById('refresh-interval');
                          s.value = '2000'; s.dispatchEvent(new Event('change')); })()""")
        os.kill(follower.proc.pid, signal.SIGSTOP)
        try:
            publish_confirmed(leader, unique("dash-stuck"), [b"%d" % i for i in range(20)])
            cell = "document.querySelector('#nodes-table tr[data-node=%s] td[data-col=in_sync]')?.textContent"
            b.wait("%s === 'no'" % (cell % json.dumps(follower.node_id)), timeout=10,
                   what="the stuck follower shown out of sync")
            b.screenshot("dashboard-nodes-stuck.png")
            assert node_rows(b.dom())[leader.node_id]["in_sync"] == "yes"
        finally:
            os.kill(follower.proc.pid, signal.SIGCONT)
