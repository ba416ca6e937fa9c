"""The dashboard in a real browser: headless Chromium (Debian's `chromium`)
loads the page from a running sluiced, and the test reads the DOM the page
built from the management API: a queue a pika client filled, with its message
count; the login form; the alarm banner. Screenshots go to
$SLUICE_TEST_OUTPUT (default: build/test-output/) for a person to look at.

Chromium is driven by its command line (--dump-dom, --screenshot) with a
virtual time budget: no WebDriver, no DevTools client needed. The page takes
?user=&pass= from its URL for this (and removes them from the address bar).
"""

import os
import re
import shutil
import subprocess

import pika
import pytest

from conftest import REPO, unique
from mgmt_http import ExtraBroker, api_for, q

pytestmark = pytest.mark.deadline(120)

OUTPUT = os.environ.get("SLUICE_TEST_OUTPUT") or os.path.join(REPO, "build", "test-output")


def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (deploy/install-deps.sh --test installs it)")
        pytest.skip("chromium is not installed (deploy/install-deps.sh --test installs it)")
    return exe


def run_chromium(tmp_path, url, screenshot=None, height=1000):
    """--dump-dom of `url` after the page's scripts ran; also a screenshot
    into OUTPUT if asked. Returns the DOM as text."""
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1440,%d" % height,
            "--virtual-time-budget=8000"]

    def run(args, profile):
        r = subprocess.run(base + ["--user-data-dir=%s" % (tmp_path / profile)] + args + [url],
                           capture_output=True, timeout=90)
        assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
        return r

    dom = run(["--dump-dom"], "profile-dom").stdout.decode("utf-8", "replace")
    if screenshot:
        os.makedirs(OUTPUT, exist_ok=True)
        path = os.path.join(OUTPUT, screenshot)
        if os.path.exists(path):
            os.remove(path)
        run(["--screenshot=%s" % path], "profile-shot")
        with open(path, "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 10000, path
    return dom


def url(broker, fragment, user="guest", password="guest"):
    query = "?user=%s&pass=%s" % (user, password) if user is not None else ""
    return "http://127.0.0.1:%d/%s#%s" % (broker.http_port, query, fragment)


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
    try:
        dom = run_chromium(tmp_path, url(broker, "/queues"), screenshot="dashboard-queues.png", height=800)
        row = queue_row(dom, name)
        assert row["name"] == name
        assert row["messages_ready"] == "17" and row["messages"] == "17" and row["messages_unacknowledged"] == "0"
        assert 'hidden=""' in section(dom, "login") and 'hidden' not in section(dom, "main")

        dom = run_chromium(tmp_path, url(broker, "/overview"), screenshot="dashboard.png", height=1000)
        assert queue_row(dom, name)["messages"] == "17"          # busiest queues
        assert re.search(r'id="total-queues"><span class="value">\d+', dom)
        assert 'id="chart-rates"' in dom and "Publish:" in dom

        dom = run_chromium(tmp_path, url(broker, "/queues/%s/%s" % (q("/"), q(name))),
                           screenshot="dashboard-queue.png", height=1100)
        m = re.search(r'id="queue-ready"><span class="value">([\d,]+)<', dom)
        assert m and m.group(1) == "17", "queue view shows %s" % (m and m.group(1))
        assert "(default exchange)" in dom

        dom = run_chromium(tmp_path, url(broker, "/connections"), screenshot="dashboard-connections.png",
                           height=600)
        assert "dashboard-test" in dom and "Pika Python Client Library" in dom
    finally:
        conn.close()


def test_login_form_without_or_with_wrong_credentials(broker, tmp_path):
    dom = run_chromium(tmp_path, url(broker, "/queues", user=None))
    assert "hidden" not in section(dom, "login") and 'hidden=""' in section(dom, "main")
    dom = run_chromium(tmp_path, url(broker, "/queues", password="wrong"), screenshot="dashboard-login.png",
                       height=700)
    assert "hidden" not in section(dom, "login")
    assert re.search(r'id="login-error"[^>]*>Login failed', dom)


def test_alarm_is_shown(tmp_path):
    chromium()
    b = ExtraBroker("--disk-free-limit", str(1 << 60))   # alarm at once
    try:
        dom = run_chromium(tmp_path, url(b, "/overview"), screenshot="dashboard-alarm.png", height=700)
        banner = re.search(r'<div id="alarms"[^>]*>(.*?)</div>', dom, re.S)
        assert banner and "hidden" not in section(dom, "alarms")
        assert "Resource alarm" in banner.group(1) and "disk" in banner.group(1)
    finally:
        assert b.stop() == 0
