"""A small client for Sluice's management HTTP API (stdlib only), shared by
test_management_api.py and test_dashboard.py."""

import base64
import http.client
import json
import os
import signal
import subprocess
import tempfile
import urllib.parse

from conftest import _sluiced_path, amqp_answers, free_port, wait_for

TIMEOUT = 10.0


def q(s):
    """Percent-encode one path segment ("/" → "%2F")."""
    return urllib.parse.quote(s, safe="")


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body) if self.body else None

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:300])


class Api:
    def __init__(self, port, host="127.0.0.1", user="guest", password="guest"):
        self.host = host
        self.port = port
        self.user = user
        self.password = password

    def request(self, method, path, body=None, auth=True, headers=None, raw_body=None):
        h = dict(headers or {})
        if auth is True:
            auth = (self.user, self.password)
        if auth:
            token = base64.b64encode(("%s:%s" % auth).encode()).decode()
            h["Authorization"] = "Basic " + token
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body=body, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def ok(self, method, path, body=None, expect=(200, 201, 204)):
        r = self.request(method, path, body=body)
        assert r.status in expect, "%s %s -> %r" % (method, path, r)
        return r.json


def api_for(broker):
    if broker.http_port is None:
        import pytest
        pytest.skip("no HTTP port for this broker (set SLUICE_TEST_HTTP_PORT)")
    return Api(broker.http_port)


class ExtraBroker:
    """A sluiced with extra command-line options (e.g. --disk-free-limit)."""

    def __init__(self, *extra):
        self.workdir = tempfile.mkdtemp(prefix="sluice-mgmt-")
        self.port = free_port()
        self.http_port = free_port()
        self.prometheus_port = free_port()
        self.log_path = os.path.join(self.workdir, "sluiced.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [_sluiced_path(), "--amqp-port", str(self.port), "--http-port", str(self.http_port),
             "--prometheus-port", str(self.prometheus_port),
             "--data-dir", os.path.join(self.workdir, "data")] + list(extra),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        wait_for(lambda: amqp_answers("127.0.0.1", self.port) or self.proc.poll() is not None, 15,
                 what="sluiced to listen")
        assert self.proc.poll() is None, open(self.log_path).read()
        self.api = Api(self.http_port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
