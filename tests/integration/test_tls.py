"""AMQPS and HTTPS: pika over TLS with a CA and certificates this module
generates with the openssl CLI, TLS 1.2+ only, client-certificate
verification, and EXTERNAL login with a client certificate.  Needs sluiceds
of its own: skipped against an external broker."""

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
import warnings

import pika
import pytest

import amqp_raw
from conftest import REPO, free_port, started_broker, temp_queue, wait_for

pytestmark = pytest.mark.skipif(bool(os.environ.get("SLUICE_TEST_AMQP_PORT")),
                                reason="TLS settings need a sluiced started by the test")

ORG = "Sluice Test"


# --------------------------------------------------------------------------
# certificates

def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, "openssl %s: %s" % (" ".join(args), r.stderr)


def new_key_and_csr(d, name, subject):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", subject, cwd=d)


def sign(d, name, extensions):
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(extensions)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", name + ".pem", "-extfile", name + ".ext", cwd=d)


class Pki:
    """A CA, a server certificate for localhost/127.0.0.1, client
    certificates with subject O=Sluice Test, CN=<name>, and one client
    certificate from a CA the broker does not trust."""

    def __init__(self, d):
        self.dir = d
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Sluice Test CA",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        new_key_and_csr(d, "server", "/CN=localhost")
        sign(d, "server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        for user in ("guest", "mallory", "alice"):
            new_key_and_csr(d, user, "/O=%s/CN=%s" % (ORG, user))
            sign(d, user, "extendedKeyUsage=clientAuth\n")
        # A self-signed "client" certificate: no chain to our CA.
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2", "-subj", "/O=%s/CN=guest" % ORG, cwd=d)

    def path(self, name):
        return os.path.join(self.dir, name)

    def server_args(self):
        return ["--tls-cert", self.path("server.pem"), "--tls-key", self.path("server.key"),
                "--tls-ca", self.path("ca.pem")]

    def client_context(self, cert=None, version=None):
        ctx = ssl.create_default_context(cafile=self.path("ca.pem"))
        if cert:
            ctx.load_cert_chain(self.path(cert + ".pem"), self.path(cert + ".key"))
        if version:
            ctx.minimum_version = ctx.maximum_version = version
        return ctx


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="sluice-pki-")
    try:
        yield Pki(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


class TlsBroker:
    def __init__(self, b, amqps_port, https_port):
        self.b, self.amqps_port, self.https_port = b, amqps_port, https_port

    def params(self, pki, cert=None, credentials=None, **kw):
        opts = dict(host="localhost", port=self.amqps_port, virtual_host="/",
                    credentials=credentials or pika.PlainCredentials("guest", "guest"),
                    ssl_options=pika.SSLOptions(pki.client_context(cert), server_hostname="localhost"),
                    socket_timeout=5, stack_timeout=10, connection_attempts=1, heartbeat=30)
        opts.update(kw)
        return pika.ConnectionParameters(**opts)

    def pika(self, pki, cert=None, credentials=None):
        return pika.BlockingConnection(self.params(pki, cert, credentials))


def tls_broker(pki, *args):
    """A sluiced with AMQPS and HTTPS on ports of its own (plain AMQP and HTTP
    stay on), with these extra options."""
    amqps, https = free_port(), free_port()
    with started_broker(["--amqps-port", str(amqps), "--https-port", str(https)] + pki.server_args() +
                        list(args)) as b:
        wait_for(lambda: tls_answers(pki, amqps), 10, what="AMQPS to answer")
        yield TlsBroker(b, amqps, https)


def tls_answers(pki, port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            with pki.client_context("guest").wrap_socket(s, server_hostname="localhost"):
                return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def tls(pki):
    """Client certificates verified when sent, not required; EXTERNAL takes
    the certificate's CN."""
    yield from tls_broker(pki, "--tls-verify-peer", "true", "--tls-cert-login-from", "common_name")


def raw_tls(pki, port, cert=None):
    """An amqp_raw connection over TLS."""
    raw = amqp_raw.RawConnection("127.0.0.1", port)
    raw.sock = pki.client_context(cert).wrap_socket(raw.sock, server_hostname="localhost")
    return raw


def mechanisms(raw):
    raw.send(amqp_raw.PROTOCOL_HEADER)
    r = raw.expect_method(amqp_raw.CONNECTION_START).args()
    r.octet(), r.octet()
    r.table()
    return r.longstr().decode().split()


def roundtrip(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    q = temp_queue(ch)
    for i in range(100):
        ch.basic_publish(exchange="", routing_key=q, body=b"secret %d" % i + b"x" * (i * 300))
    got = []
    for method, _, body in ch.consume(q, inactivity_timeout=5):
        assert method is not None, "deliveries stopped after %d" % len(got)
        ch.basic_ack(method.delivery_tag)
        got.append(body)
        if len(got) == 100:
            break
    ch.cancel()
    assert got == [b"secret %d" % i + b"x" * (i * 300) for i in range(100)]


def https_get(pki, port, path, user="guest", password="guest"):
    req = urllib.request.Request("https://localhost:%d%s" % (port, path))
    req.add_header("Authorization", "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode())
    with urllib.request.urlopen(req, timeout=5, context=pki.client_context()) as r:
        return r.status, r.read()


# --------------------------------------------------------------------------
# AMQPS

def test_pika_publishes_and_consumes_over_amqps(pki, tls):
    conn = tls.pika(pki)
    try:
        roundtrip(conn)
    finally:
        conn.close()


def test_plain_amqp_port_still_works(pki, tls):
    conn = tls.b.pika()
    try:
        roundtrip(conn)
    finally:
        conn.close()


def test_only_tls_1_2_and_1_3(pki, tls):
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        with socket.create_connection(("127.0.0.1", tls.amqps_port), timeout=5) as s:
            with pki.client_context(version=version).wrap_socket(s, server_hostname="localhost") as t:
                assert t.version() == version.name.replace("_", ".")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=0")   # let this client offer TLS 1.1 at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)    # that is the point
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", tls.amqps_port), timeout=5) as s:
        with pytest.raises(ssl.SSLError) as e:
            ctx.wrap_socket(s, server_hostname="localhost")
    # The server refused it (its alert), not this client.
    assert "TLSV1_ALERT_PROTOCOL_VERSION" in str(e.value), e.value


def test_plain_amqp_on_the_tls_port_is_dropped(pki, tls):
    with amqp_raw.RawConnection("127.0.0.1", tls.amqps_port) as raw:
        raw.send(amqp_raw.PROTOCOL_HEADER)
        raw.expect_eof(timeout=5)
    conn = tls.pika(pki)     # and the listener goes on
    conn.close()


def test_external_offered_only_with_a_verified_client_certificate(pki, tls):
    with raw_tls(pki, tls.amqps_port, cert="guest") as raw:
        assert "EXTERNAL" in mechanisms(raw)
    with raw_tls(pki, tls.amqps_port) as raw:
        assert mechanisms(raw) == ["PLAIN", "AMQPLAIN"]
    with amqp_raw.RawConnection("127.0.0.1", tls.b.port) as raw:
        assert mechanisms(raw) == ["PLAIN", "AMQPLAIN"]


def test_external_login_as_the_certificate_cn(pki, tls):
    conn = tls.pika(pki, cert="guest", credentials=pika.credentials.ExternalCredentials())
    try:
        roundtrip(conn)
        status, body = https_get(pki, tls.https_port, "/api/connections")
        conns = [c for c in json.loads(body) if c.get("ssl")]
        assert conns and all(c["user"] == "guest" for c in conns), conns
        assert {c["ssl_protocol"] for c in conns} <= {"TLSv1.2", "TLSv1.3"}
    finally:
        conn.close()


def test_external_login_for_an_unknown_cn_is_refused_403(pki, tls):
    with raw_tls(pki, tls.amqps_port, cert="mallory") as raw:
        assert "EXTERNAL" in mechanisms(raw)
        caps = amqp_raw.table({"capabilities": {"authentication_failure_close": True}})
        raw.send(amqp_raw.method_frame(0, amqp_raw.CONNECTION_START_OK,
                                       caps + amqp_raw.shortstr("EXTERNAL") + amqp_raw.longstr("") +
                                       amqp_raw.shortstr("en_US")))
        close = raw.expect_connection_close()
        assert close.code == 403
        assert close.text.startswith("ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL")
    with pytest.raises((pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError,
                        pika.exceptions.ProbableAccessDeniedError)):
        tls.pika(pki, cert="mallory", credentials=pika.credentials.ExternalCredentials())


def test_external_without_a_client_certificate_is_refused(pki, tls):
    with raw_tls(pki, tls.amqps_port) as raw:
        mechanisms(raw)
        caps = amqp_raw.table({"capabilities": {"authentication_failure_close": True}})
        raw.send(amqp_raw.method_frame(0, amqp_raw.CONNECTION_START_OK,
                                       caps + amqp_raw.shortstr("EXTERNAL") + amqp_raw.longstr("") +
                                       amqp_raw.shortstr("en_US")))
        close = raw.expect_connection_close()
        assert close.code == 403 and "EXTERNAL" in close.text, close


def test_certificate_from_an_unknown_ca_fails_the_handshake(pki, tls):
    with socket.create_connection(("127.0.0.1", tls.amqps_port), timeout=5) as s:
        with pytest.raises(ssl.SSLError) as e:
            # TLS 1.3 finishes the client's side of the handshake before the
            # server checks: the refusal arrives with the first read.
            with pki.client_context("rogue").wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(amqp_raw.PROTOCOL_HEADER)
                t.recv(1)
    assert "ALERT_UNKNOWN_CA" in str(e.value), e.value


# --------------------------------------------------------------------------
# HTTPS

def test_https_serves_the_api_and_http_still_works(pki, tls):
    status, body = https_get(pki, tls.https_port, "/api/overview")
    assert status == 200
    assert json.loads(body)["product_name"] == "Sluice"
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % tls.b.http_port, timeout=5) as r:
        assert r.status == 200
    r = subprocess.run(["curl", "-sS", "--fail", "--cacert", pki.path("ca.pem"), "-u", "guest:guest",
                        "https://localhost:%d/api/overview" % tls.https_port],
                       capture_output=True, text=True, timeout=30) if shutil.which("curl") else None
    if r is not None:
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["product_name"] == "Sluice"


# --------------------------------------------------------------------------
# a client certificate required; EXTERNAL with the subject DN (the default)

@pytest.fixture(scope="module")
def strict(pki):
    """A certificate required, and the default user named by alice's DN."""
    yield from tls_broker(pki, "--tls-verify-peer", "true", "--tls-fail-if-no-peer-cert", "true",
                          "--default-user", "CN=alice,O=%s" % ORG)


def test_no_client_certificate_fails_the_handshake(pki, strict):
    for version, alert in ((ssl.TLSVersion.TLSv1_3, "TLSV13_ALERT_CERTIFICATE_REQUIRED"),
                           (ssl.TLSVersion.TLSv1_2, "SSLV3_ALERT_HANDSHAKE_FAILURE")):
        with socket.create_connection(("127.0.0.1", strict.amqps_port), timeout=5) as s:
            with pytest.raises(ssl.SSLError) as e:
                with pki.client_context(version=version).wrap_socket(s, server_hostname="localhost") as t:
                    t.sendall(amqp_raw.PROTOCOL_HEADER)
                    t.recv(1)
        assert alert in str(e.value), e.value
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        strict.pika(pki)


def test_external_login_as_the_certificate_subject_dn(pki, strict):
    conn = strict.pika(pki, cert="alice", credentials=pika.credentials.ExternalCredentials())
    try:
        roundtrip(conn)
    finally:
        conn.close()
    # guest's certificate names "CN=guest,O=Sluice Test": no such user here.
    with pytest.raises((pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError,
                        pika.exceptions.ProbableAccessDeniedError)):
        strict.pika(pki, cert="guest", credentials=pika.credentials.ExternalCredentials())


# --------------------------------------------------------------------------
# shutdown over TLS (the connection lingers without a TCP half-close)

def test_sigterm_closes_amqps_clients_with_320(pki):
    gen = tls_broker(pki)
    t = next(gen)
    try:
        conn = t.pika(pki)
        conn.channel()
        t.b.proc.send_signal(signal.SIGTERM)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.1)
        assert (e.value.reply_code, e.value.reply_text) == (320, "CONNECTION_FORCED - broker shutdown")
        # pika answered close-ok and closed: no waiting for the 5 s bound.
        assert t.b.proc.wait(timeout=4) == 0, t.b.log_tail()
        t.b.start()     # for the fixture's own clean stop
    finally:
        gen.close()


# --------------------------------------------------------------------------
# issue 13, item 8: the cipher list is configurable; renegotiation is off

@pytest.fixture(scope="module")
def narrow(pki):
    """Only one TLS 1.2 cipher and one TLS 1.3 suite."""
    yield from tls_broker(pki, "--tls-ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256",
                          "--tls-ciphersuites", "TLS_AES_128_GCM_SHA256")


def tls_cipher(pki, port, version, ciphers=None):
    ctx = pki.client_context("guest", version=version)
    if ciphers:
        ctx.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return t.cipher()[0]


def test_cipher_list_is_configurable(pki, narrow):
    v12, v13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    assert tls_cipher(pki, narrow.amqps_port, v12) == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert tls_cipher(pki, narrow.amqps_port, v13) == "TLS_AES_128_GCM_SHA256"
    with pytest.raises(ssl.SSLError):
        tls_cipher(pki, narrow.amqps_port, v12, "ECDHE-ECDSA-AES256-GCM-SHA384")
    assert tls_cipher(pki, narrow.https_port, v12) == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_bad_cipher_list_stops_the_start(pki, tmp_path):
    exe = os.environ.get("SLUICED") or os.path.join(REPO, "build", "release", "cli", "sluiced")
    r = subprocess.run([exe, "--amqp-port", str(free_port()), "--http-port", str(free_port()),
                        "--amqps-port", str(free_port()), "--data-dir", str(tmp_path / "d"),
                        "--prometheus-port", "0", "--tls-ciphers", "NO-SUCH-CIPHER"] + pki.server_args(),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "NO-SUCH-CIPHER" in r.stderr, r.stderr


def test_client_renegotiation_is_refused(pki, narrow):
    """openssl s_client's "R" asks for a TLS 1.2 renegotiation: the broker
    refuses it (no_renegotiation alert, or the connection ends) instead of
    doing a second full handshake on the client's say-so."""
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % narrow.amqps_port, "-tls1_2",
                        "-CAfile", pki.path("ca.pem"), "-cert", pki.path("guest.pem"),
                        "-key", pki.path("guest.key"), "-no_ign_eof"],
                       input="R\n", capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert "RENEGOTIATING" in out, out[-2000:]
    assert "no renegotiation" in out.lower() or "alert" in out.lower(), out[-2000:]
