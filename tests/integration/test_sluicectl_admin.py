"""sluicectl, the admin CLI: --help for every command, usage errors (exit 2),
HTTP errors as one line (404, 401, 403), unreachable and silent servers,
where settings come from (option > environment > config file > default),
connections and close, export/import of definitions.

User and vhost management goes to RabbitMQ's /api/users, /api/permissions and
/api/vhosts: a recording HTTP server checks the exact requests sluicectl
sends (and how it reports a server's refusal), and a test against sluiced
checks their effect.
"""

import base64
import http.server
import json
import re
import socket
import threading
import time

import pika.exceptions
import pytest

from conftest import free_port, unique, wait_for
from sluicectl_run import column_cells, ctl, fails, ok, queue_info, run, url_of


# --------------------------------------------------------------------------
# help

def command_names():
    r = run("--help")
    assert r.code == 0, r
    section = r.out.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    names = []
    for line in section.splitlines():
        words = []
        for w in line.split():
            if not re.fullmatch(r"[a-z]+", w):
                break
            words.append(w)
        names.append(words)
    return names


def test_help_for_every_command():
    names = command_names()
    assert ["status"] in names and ["list", "queues"] in names and ["set", "permissions"] in names
    assert len(names) >= 27
    for words in names:
        for form in (words + ["--help"], ["help"] + words, words + ["-h"]):
            r = run(*form)
            assert r.code == 0 and r.err == "", (form, r)
            assert r.out.startswith("Usage: sluicectl " + " ".join(words)), (form, r.out)
            assert "--url URL" in r.out and "--password PASSWORD" in r.out
    # a group's help names its commands
    r = run("list", "--help")
    assert r.code == 0
    for kind in ("queues", "exchanges", "bindings", "connections", "channels", "consumers", "users", "vhosts"):
        assert "list " + kind in r.out
    # per-command options are described
    assert "--ackmode MODE" in run("get", "--help").out
    assert "--columns A,B.C" in run("list", "queues", "--help").out


def test_usage_errors_exit_2_with_one_line():
    fails(run(), 2, r"no command given")
    fails(run("frobnicate"), 2, r"unknown command 'frobnicate'")
    fails(run("list"), 2, r"'list' what\? One of: queues, exchanges")
    fails(run("list", "sheep"), 2, r"no command 'list sheep'")
    fails(run("list", "queues", "--count", "3"), 2, r"'list queues' has no option --count")
    fails(run("list", "queues", "--bogus"), 2, r"unknown option '--bogus'")
    fails(run("declare", "queue"), 2, r"'declare queue' takes NAME")
    fails(run("declare", "queue", "a", "b"), 2, r"'declare queue' takes NAME, not 'b'")
    fails(run("get", "q", "--count", "zero"), 2, r"--count takes a whole number")
    fails(run("get", "q", "--ackmode", "maybe"), 2, r"--ackmode is requeue, ack, reject")
    fails(run("declare", "queue", "q", "--arguments", "[1]"), 2, r"--arguments takes a JSON object")
    fails(run("declare", "queue", "q", "--durable=perhaps"), 2, r"option '--durable' takes true or false")
    fails(run("declare", "binding", "--destination", "q"), 2, r"--source EXCHANGE is required")
    fails(run("status", "--url"), 2, r"option '--url' needs a value")
    fails(run("status", "--url", "https://localhost:1"), 2, r"https is not supported")
    fails(run("status", "--url", "http://localhost:port"), 2, r"URL .* bad port")
    fails(run("status", "--timeout", "0"), 2, r"timeout must be a whole number")


# --------------------------------------------------------------------------
# connections, channels, consumers

def test_connections_channels_consumers_and_close(broker, connect):
    tag_name = unique("ctl-conn")
    c = connect(client_properties={"connection_name": tag_name})
    ch = c.channel()
    q = unique("ctl-cq")
    ch.queue_declare(q, exclusive=True)
    ch.basic_qos(prefetch_count=7)
    ctag = ch.basic_consume(q, lambda *a: None)
    conns = wait_for(lambda: [x for x in ok(broker, "list", "connections", "--json").json
                              if x.get("user_provided_name") == tag_name], what="the connection listed")
    name = conns[0]["name"]
    rows = column_cells(ok(broker, "list", "connections").out)[1]
    assert [name, "guest", "/", "running", "1"] == [r for r in rows if r[0] == name][0][:5]
    chans = column_cells(ok(broker, "list", "channels", "--columns", "name,user,consumer_count").out)[1]
    assert ["%s (1)" % name, "guest", "1"] in chans
    consumers = column_cells(ok(broker, "list", "consumers").out)[1]
    assert ["/", q, ctag, "%s (1)" % name, "true", "7"] in consumers

    r = ok(broker, "close", "connection", name, "--reason", "maintenance window")
    assert r.out == "closed connection '%s'\n" % name
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            c.process_data_events(0.1)
    assert info.value.reply_code == 320 and "maintenance window" in info.value.reply_text
    fails(ctl(broker, "close", "connection", name), 1, r"404 Not Found: no connection")


# --------------------------------------------------------------------------
# definitions

def test_export_import_round_trip(broker, tmp_path):
    q, ex = unique("ctl-dq"), unique("ctl-dx")
    ok(broker, "declare", "queue", q, "--arguments", '{"x-max-length": 9}')
    ok(broker, "declare", "exchange", ex, "--type", "fanout")
    ok(broker, "declare", "binding", "--source", ex, "--destination", q, "--routing-key", "k")
    path = tmp_path / "defs.json"
    assert ok(broker, "export", path).out == "exported definitions to %s\n" % path
    defs = json.loads(path.read_text())
    assert {"name": q, "vhost": "/", "durable": True, "auto_delete": False, "arguments": {"x-max-length": 9}} \
        in defs["queues"]
    assert any(e["name"] == ex and e["type"] == "fanout" for e in defs["exchanges"])
    assert any(b["source"] == ex and b["destination"] == q for b in defs["bindings"])
    assert ok(broker, "export").json["queues"] == defs["queues"]          # stdout
    assert "vhosts" not in ok(broker, "export", "--vhost", "/").json      # one vhost's

    ok(broker, "delete", "exchange", ex)
    ok(broker, "delete", "queue", q)
    assert queue_info(broker, q) is None
    assert ok(broker, "import", path).out == "imported definitions from %s\n" % path
    assert queue_info(broker, q)["arguments"] == {"x-max-length": 9}
    assert ok(broker, "publish", "--exchange", ex, "x", "--json").json == {"routed": True}

    # from stdin, into one vhost
    ok(broker, "delete", "exchange", ex)
    one = {"exchanges": [{"name": ex, "type": "direct", "durable": False, "auto_delete": False,
                          "internal": False, "arguments": {}}]}
    ok(broker, "import", "-", "--vhost", "/", input=json.dumps(one).encode())
    ex_rows = ok(broker, "list", "exchanges", "--json").json
    assert [e["type"] for e in ex_rows if e["name"] == ex] == ["direct"]

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    fails(ctl(broker, "import", bad), 1, r".*bad\.json: not a JSON object of definitions")
    fails(ctl(broker, "import", tmp_path / "missing.json"), 1, r"cannot read")
    fails(ctl(broker, "import", "-", input=b'{"queues": 5}'), 1, r"400 Bad Request: 'queues' must be an array")
    ok(broker, "delete", "exchange", ex)
    ok(broker, "delete", "queue", q)


# --------------------------------------------------------------------------
# errors and settings

def test_http_errors_are_one_line(broker):
    q = unique("ctl-missing")
    line = fails(ctl(broker, "delete", "queue", q), 1, r"404 Not Found: ")
    assert line == "sluicectl: 404 Not Found: no queue '%s' in vhost '/'" % q
    line = fails(ctl(broker, "--password", "wrong", "list", "queues"), 1, r"401 Unauthorized")
    assert line == "sluicectl: 401 Unauthorized: Login failed"
    fails(ctl(broker, "--user", "nobody", "status"), 1, r"401 Unauthorized")
    fails(ctl(broker, "declare", "queue", "amq.reserved"), 1, r"403 Forbidden: .*reserved prefix")
    fails(ctl(broker, "declare", "exchange", unique("ctl-bad"), "--type", "sideways"), 1,
          r"400 Bad Request: unknown exchange type 'sideways'")


def test_unreachable_and_silent_servers():
    port = free_port()
    line = fails(run("--url", "http://127.0.0.1:%d" % port, "status"), 1, r"cannot connect to ")
    assert "connection refused" in line
    # a server that accepts and never answers: the timeout ends it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        started = time.monotonic()
        r = run("--url", "http://127.0.0.1:%d" % s.getsockname()[1], "--timeout", "1", "status")
        assert time.monotonic() - started < 10
    fails(r, 1, r"no answer from http://127\.0\.0\.1:\d+ within 1 s")


def write_config(path, **settings):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# sluicectl settings\n\n" + "".join("%s = %s\n" % kv for kv in settings.items()))


def test_settings_precedence_option_env_file_default(broker, tmp_path):
    good = url_of(broker)
    refused = "http://127.0.0.1:%d" % free_port()
    home = tmp_path / "home"
    write_config(home / ".config" / "sluice" / "sluicectl.conf", url=good, password="wrong")
    env = {"HOME": str(home)}
    # the default file is read: its URL reaches the broker, its password fails
    fails(run("status", env=env), 1, r"401 Unauthorized")
    # the environment beats the file
    assert run("status", env=dict(env, SLUICECTL_PASSWORD="guest")).code == 0
    fails(run("status", env=dict(env, SLUICECTL_PASSWORD="guest", SLUICECTL_URL=refused)), 1, r"cannot connect")
    # an option beats the environment
    fails(run("status", "--password", "wrong", env=dict(env, SLUICECTL_PASSWORD="guest")), 1, r"401")
    assert run("status", "--url", good, env=dict(env, SLUICECTL_PASSWORD="guest", SLUICECTL_URL=refused)).code == 0
    # XDG_CONFIG_HOME names the directory instead of ~/.config
    xdg = tmp_path / "xdg"
    write_config(xdg / "sluice" / "sluicectl.conf", url=good, user="guest", password="guest")
    assert run("status", env=dict(env, XDG_CONFIG_HOME=str(xdg))).code == 0
    # --config names the file; the defaults apply where nothing is set
    explicit = tmp_path / "explicit.conf"
    write_config(explicit, url=good)
    assert run("status", "--config", explicit).code == 0
    if not _port_open(15672):   # with nothing set, the default URL
        fails(run("status"), 1, r"cannot connect to http://localhost:15672: connection refused")
    # the vhost setting applies to per-vhost commands
    fails(run("declare", "queue", "q", "--config", explicit, env={"SLUICECTL_VHOST": "nosuch"}), 1,
          r"404 Not Found: no vhost 'nosuch'")
    # broken files are usage errors naming the place
    fails(run("status", "--config", tmp_path / "none.conf"), 2, r"cannot read config file")
    write_config(explicit, url=good, colour="blue")
    fails(run("status", "--config", explicit), 2, r".*explicit\.conf:4: unknown key 'colour'")
    explicit.write_text("url\n")
    fails(run("status", "--config", explicit), 2, r".*explicit\.conf:1: expected 'key = value'")


def _port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# users, permissions, vhosts

class RecordingServer:
    """An HTTP server that records each request and answers with the status
    and body queued for it (default 204)."""

    def __init__(self):
        self.requests = []
        self.answers = []
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                rec.requests.append((self.command, self.path, dict(self.headers), body))
                status, payload = rec.answers.pop(0) if rec.answers else (204, b"")
                self.send_response(status)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = handle_one

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    r = RecordingServer()
    yield r
    r.close()


def test_user_and_vhost_commands_send_rabbitmq_requests(recorder):
    base = recorder.url + "/prefix"       # a URL with a path prefix (behind a proxy)
    auth = "Basic " + base64.b64encode(b"admin:s3cret").decode()

    def sent(*args, status=201, input=None):
        recorder.answers.append((status, b""))
        r = run("--url", base, "--user", "admin", "--password", "s3cret", *args, input=input)
        assert r.code == 0 and r.err == "", r
        method, path, headers, body = recorder.requests.pop()
        assert headers["Authorization"] == auth
        return r.out, method, path, json.loads(body) if body else None

    out, m, p, body = sent("add", "user", "bob", "pw1", "--tags", "monitoring,management")
    assert (m, p, body) == ("PUT", "/prefix/api/users/bob", {"password": "pw1", "tags": "monitoring,management"})
    assert out == "added user 'bob'\n"
    out, m, p, body = sent("add", "user", "bob", status=204, input=b"from-stdin\n")
    assert body == {"password": "from-stdin", "tags": ""} and out == "updated user 'bob'\n"
    out, m, p, body = sent("delete", "user", "bob", status=204)
    assert (m, p, body, out) == ("DELETE", "/prefix/api/users/bob", None, "deleted user 'bob'\n")
    out, m, p, body = sent("set", "permissions", "bob", "--vhost", "prod/eu", "--configure", "^bob\\.", status=204)
    assert (m, p) == ("PUT", "/prefix/api/permissions/prod%2Feu/bob")
    assert body == {"configure": "^bob\\.", "write": ".*", "read": ".*"}
    assert out == "set permissions of user 'bob' in vhost 'prod/eu': configure '^bob\\.', write '.*', read '.*'\n"
    out, m, p, body = sent("clear", "permissions", "bob", "--vhost", "prod/eu", status=204)
    assert (m, p, body, out) == ("DELETE", "/prefix/api/permissions/prod%2Feu/bob", None,
                                 "cleared permissions of user 'bob' in vhost 'prod/eu'\n")
    out, m, p, body = sent("add", "vhost", "prod/eu", "--description", "Europe")
    assert (m, p, body, out) == ("PUT", "/prefix/api/vhosts/prod%2Feu", {"description": "Europe"},
                                 "added vhost 'prod/eu'\n")
    out, m, p, body = sent("delete", "vhost", "prod/eu", status=204)
    assert (m, p, out) == ("DELETE", "/prefix/api/vhosts/prod%2Feu", "deleted vhost 'prod/eu'\n")

    # the server's refusal, in its words
    recorder.answers.append((400, b'{"error":"bad_request","reason":"tag \'x\' is not known"}'))
    fails(run("--url", base, "add", "user", "bob", "pw", "--tags", "x"), 1,
          r"400 Bad Request: tag 'x' is not known$")
    recorder.answers.append((502, b"<html>bad gateway\nfrom a proxy</html>"))
    fails(run("--url", base, "delete", "vhost", "v"), 1, r"502 Bad Gateway: <html>bad gateway$")
    fails(run("--url", base, "add", "user", "bob", input=b""), 2, r"the password is empty")


def test_user_and_vhost_commands_against_sluiced(broker):
    user, vhost = unique("ctl-user"), unique("ctl-vh")
    assert ok(broker, "add", "vhost", vhost).out == "added vhost '%s'\n" % vhost
    assert ok(broker, "add", "vhost", vhost).out == "vhost '%s' already exists\n" % vhost
    assert vhost in [row[0] for row in column_cells(ok(broker, "list", "vhosts").out)[1]]
    ok(broker, "add", "user", user, "pw-1", "--tags", "management")
    assert [user, "management"] in column_cells(ok(broker, "list", "users").out)[1]
    ok(broker, "set", "permissions", user, "--vhost", vhost)
    perms = ok(broker, "list", "permissions", "--vhost", vhost, "--json").json
    assert {"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"} in perms
    # the new user works with its own password, in its vhost
    q = unique("ctl-uq")
    assert ctl(broker, "--user", user, "--password", "pw-1", "--vhost", vhost, "declare", "queue", q).code == 0
    assert [q] == [x["name"] for x in ok(broker, "list", "queues", "--vhost", vhost, "--json").json]
    # without --vhost a list shows every vhost's, with the vhost column
    assert [vhost, q] in [row[:2] for row in column_cells(ok(broker, "list", "queues").out)[1]]
    assert any(u["name"] == user for u in ok(broker, "export").json["users"])
    ok(broker, "clear", "permissions", user, "--vhost", vhost)
    perms = ok(broker, "list", "permissions", "--vhost", vhost, "--json").json
    assert user not in [p["user"] for p in perms]
    fails(ctl(broker, "--user", user, "--password", "pw-1", "--vhost", vhost, "declare", "queue", unique("q")), 1,
          r"403 Forbidden: ")
    ok(broker, "delete", "user", user)
    fails(ctl(broker, "--user", user, "--password", "pw-1", "status"), 1, r"401 Unauthorized")
    ok(broker, "delete", "vhost", vhost)
    assert vhost not in [row[0] for row in column_cells(ok(broker, "list", "vhosts").out)[1]]
    fails(ctl(broker, "delete", "vhost", vhost), 1, r"404 Not Found")
