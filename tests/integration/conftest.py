"""Fixtures for Sluice's integration tests: real clients over real sockets.

The `broker` fixture starts `sluiced` (path in env SLUICED) on free ephemeral
ports with a fresh data directory, once per test module.  If env
SLUICE_TEST_AMQP_PORT is set, the tests use that already-running broker instead
(that is how the suite is checked against RabbitMQ); tests that need to kill or
restart the broker skip there.

Every test runs under a wall-clock deadline (default 30 s, override with
`@pytest.mark.deadline(seconds)`): a broker that stops answering makes the test
fail with a traceback instead of hanging the run.
"""

import collections
import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

START_TIMEOUT = 15.0      # seconds for sluiced to accept AMQP
STOP_TIMEOUT = 10.0       # seconds between SIGTERM and SIGKILL
DEFAULT_DEADLINE = 30.0   # seconds per test
CLIENT_TIMEOUT = 5.0      # seconds for a client socket operation


# --------------------------------------------------------------------------
# waiting on conditions

def wait_for(cond, timeout=5.0, interval=0.01, what=None):
    """Poll cond() until it returns a truthy value; return that value.

    Raises AssertionError naming `what` (or the condition) after `timeout`
    seconds.  Exceptions raised by cond() propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                "timed out after %.1fs waiting for %s"
                % (timeout, what or getattr(cond, "__name__", repr(cond))))
        time.sleep(interval)


def unique(prefix="t"):
    """A name no other test (or earlier run against a shared broker) uses."""
    return "%s.%s" % (prefix, uuid.uuid4().hex[:12])


def temp_queue(ch, prefix="tmp"):
    """Declare an exclusive queue with a client-chosen unique name on a pika
    channel (tests not about server-named queues should not depend on them)."""
    name = unique(prefix)
    ch.queue_declare(queue=name, exclusive=True)
    return name


# --------------------------------------------------------------------------
# ports

# Ports this process handed out lately: the kernel may give the same free
# port to two bind(0) calls in a row, and a broker given one port twice (say
# HTTP and Prometheus) fails to start with "Address already in use".
_handed_out = collections.deque(maxlen=4096)


def free_port():
    """A TCP port free on both 127.0.0.1 and :: right now, and not handed
    out by an earlier call of this process."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s4:
            s4.bind(("127.0.0.1", 0))
            port = s4.getsockname()[1]
            if port in _handed_out:
                continue
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s6.bind(("::", port))
            except OSError as e:
                if e.errno not in (97, 99):  # 97/99: no IPv6 on this machine, so it is free
                    continue
            _handed_out.append(port)
            return port
    raise RuntimeError("no free port found")


def amqp_answers(host, port, timeout=1.0):
    """True if host:port takes an AMQP 0-9-1 header and sends a method frame
    back (connection.start), i.e. the broker is really serving, not just
    bound."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            head = b""
            while len(head) < 7:
                chunk = s.recv(7 - len(head))
                if not chunk:
                    return False
                head += chunk
            return head[0] == 1 and head[1:3] == b"\x00\x00"
    except OSError:
        return False


# --------------------------------------------------------------------------
# the broker

class Broker:
    """A broker under test: either a `sluiced` child process or an external
    broker (RabbitMQ) named by SLUICE_TEST_AMQP_PORT."""

    def __init__(self, host, port, http_port=None, data_dir=None, exe=None,
                 workdir=None, extra_args=(), prometheus_port=None):
        self.host = host
        self.port = port
        self.http_port = http_port
        self.prometheus_port = prometheus_port    # /metrics, /metrics/per-object
        self.data_dir = data_dir
        self.exe = exe
        self.workdir = workdir
        self.extra_args = list(extra_args)    # more sluiced options
        self.proc = None
        self.killed_on_purpose = False
        self.log_path = os.path.join(workdir, "sluiced.log") if workdir else None
        self._log = None

    @property
    def external(self):
        return self.exe is None

    @property
    def url(self):
        return "amqp://guest:guest@%s:%d/%%2F" % (self.host, self.port)

    def __repr__(self):
        return "<Broker %s:%d%s>" % (self.host, self.port,
                                     " external" if self.external else "")

    # -- process control ---------------------------------------------------

    def start(self):
        assert not self.external
        assert self.proc is None or self.proc.poll() is not None
        self.killed_on_purpose = False
        self._log = open(self.log_path, "ab")
        self._log.write(b"\n==== start %s ====\n" % time.ctime().encode())
        self._log.flush()
        cmd = [self.exe, "--amqp-port", str(self.port),
               "--http-port", str(self.http_port),
               "--prometheus-port", str(self.prometheus_port or 0),
               "--data-dir", self.data_dir] + self.extra_args
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir)
        self._log.close()         # the child has its own descriptor
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("sluiced exited with %s before serving AMQP on %d\n%s"
                                   % (self.proc.returncode, self.port, self.log_tail()))
            if amqp_answers(self.host, self.port):
                return
            if time.monotonic() >= deadline:
                self._hard_stop()
                raise RuntimeError("sluiced did not serve AMQP on port %d within %.0fs\n%s"
                                   % (self.port, START_TIMEOUT, self.log_tail()))
            time.sleep(0.02)

    def _wait_exit(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _hard_stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        """SIGTERM, then SIGKILL if it has not exited after STOP_TIMEOUT.
        Returns the exit code of a clean stop, or None if it had to be
        killed."""
        if self.external:
            return None
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        if self._wait_exit(STOP_TIMEOUT):
            return self.proc.returncode
        self._hard_stop()
        return None

    def kill9(self):
        """kill -9 the broker and wait until it is gone."""
        if self.external:
            pytest.skip("kill9 needs a sluiced started by the test (SLUICED)")
        assert self.proc is not None and self.proc.poll() is None, "broker not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.killed_on_purpose = True

    def shutdown_problem(self):
        """Stop the broker at the end of its fixture; describe what went
        wrong (died during the tests, SIGTERM not honoured, non-zero exit --
        e.g. a sanitizer report), or None."""
        if self.external or self.proc is None:
            return None
        if self.proc.poll() is not None:
            if self.killed_on_purpose and self.proc.returncode == -signal.SIGKILL:
                return None
            return "sluiced died during the tests (exit %s)" % self.proc.returncode
        code = self.stop()
        if code is None:
            return "sluiced ignored SIGTERM for %.0fs and was SIGKILLed" % STOP_TIMEOUT
        if code != 0:
            return "sluiced exited with %s on SIGTERM" % code
        return None

    def restart(self):
        """Stop (SIGTERM; no-op if already dead, e.g. after kill9) and start
        again on the same ports and data directory."""
        if self.external:
            pytest.skip("restart needs a sluiced started by the test (SLUICED)")
        self.stop()
        self.start()

    def alive(self):
        return self.external or (self.proc is not None and self.proc.poll() is None)

    def log_tail(self, lines=60):
        if not self.log_path or not os.path.exists(self.log_path):
            return "(no log)"
        with open(self.log_path, "rb") as f:
            data = f.read()[-64 * 1024:]
        text = data.decode("utf-8", "replace").splitlines()
        return "\n".join(text[-lines:])

    # -- clients -----------------------------------------------------------

    def pika_params(self, **kw):
        import pika
        opts = dict(host=self.host, port=self.port, virtual_host="/",
                    credentials=pika.PlainCredentials("guest", "guest"),
                    socket_timeout=CLIENT_TIMEOUT, stack_timeout=CLIENT_TIMEOUT * 2,
                    blocked_connection_timeout=CLIENT_TIMEOUT,
                    connection_attempts=1, heartbeat=30)
        opts.update(kw)
        return pika.ConnectionParameters(**opts)

    def pika(self, **kw):
        import pika
        return pika.BlockingConnection(self.pika_params(**kw))


def _external_broker():
    port = int(os.environ["SLUICE_TEST_AMQP_PORT"])
    host = os.environ.get("SLUICE_TEST_AMQP_HOST", "127.0.0.1")
    http = os.environ.get("SLUICE_TEST_HTTP_PORT")
    prom = os.environ.get("SLUICE_TEST_PROMETHEUS_PORT")
    b = Broker(host, port, http_port=int(http) if http else None, prometheus_port=int(prom) if prom else None)
    if not amqp_answers(host, port, timeout=3.0):
        pytest.fail("SLUICE_TEST_AMQP_PORT=%d: no AMQP broker answers there" % port)
    return b


def _sluiced_path():
    exe = os.environ.get("SLUICED")
    if not exe:
        guess = os.path.join(REPO, "build", "release", "cli", "sluiced")
        if os.path.exists(guess):
            exe = guess
    if not exe:
        pytest.fail("set SLUICED to the sluiced binary (or SLUICE_TEST_AMQP_PORT "
                    "to the port of a running broker)")
    if not os.access(exe, os.X_OK):
        pytest.fail("SLUICED=%s is not an executable file" % exe)
    return exe


@contextlib.contextmanager
def started_broker(extra_args=()):
    """Start a fresh sluiced (or hand out the external broker), with
    extra_args added to its command line."""
    if os.environ.get("SLUICE_TEST_AMQP_PORT"):
        yield _external_broker()
        return
    exe = _sluiced_path()
    workdir = tempfile.mkdtemp(prefix="sluice-it-")
    data_dir = os.path.join(workdir, "data")
    os.makedirs(data_dir)
    b = None
    last_error = None
    for _ in range(3):      # a port picked free can be taken before we bind it
        b = Broker("127.0.0.1", free_port(), http_port=free_port(),
                   data_dir=data_dir, exe=exe, workdir=workdir, extra_args=extra_args,
                   prometheus_port=free_port())
        try:
            b.start()
            break
        except RuntimeError as e:
            last_error = e
            # only a lost race for the port is worth another try
            if not re.search(r"in use|EADDRINUSE|bind", b.log_tail(20), re.I):
                b = None
                break
            b = None
    if b is None:
        pytest.fail(str(last_error))
    try:
        yield b
    finally:
        problem = b.shutdown_problem()
        import shutil
        if problem:
            # keep the data dir and log for a post-mortem
            pytest.fail("%s (log and data kept in %s); log tail:\n%s"
                        % (problem, workdir, b.log_tail()), pytrace=False)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def broker():
    """One broker per test module (fast); tests use unique queue names."""
    with started_broker() as b:
        yield b


@pytest.fixture
def fresh_broker():
    """A broker of the test's own, for tests that kill or restart it."""
    with started_broker() as b:
        if b.external:
            pytest.skip("needs a sluiced started by the test (SLUICED)")
        yield b


@pytest.fixture
def connect(request):
    """Factory for pika BlockingConnections that are closed after the test:
    connect() or connect(broker_obj, **ConnectionParameters overrides)."""
    opened = []

    def make(b=None, **kw):
        b = b or request.getfixturevalue("broker")
        c = b.pika(**kw)
        opened.append(c)
        return c

    yield make
    for c in opened:
        with contextlib.suppress(Exception):
            if c.is_open:
                c.close()


# --------------------------------------------------------------------------
# deadlines and failure reports

def pytest_configure(config):
    # kombu 5.2 on Python 3.11 warns about importlib.metadata on import
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:kombu.utils.compat")
    config.addinivalue_line(
        "markers", "deadline(seconds): fail the test if it runs longer (default %.0f s)"
        % DEFAULT_DEADLINE)
    config.addinivalue_line(
        "markers", "loop_mounts: test_cluster.py's nodes keep their data on loop-mounted file systems of their own")


class DeadlineExceeded(Exception):
    pass


@pytest.fixture(autouse=True)
def _deadline(request):
    """Interrupt the main thread with DeadlineExceeded when the test runs
    past its deadline (SIGALRM interrupts blocking socket reads in clients)."""
    marker = request.node.get_closest_marker("deadline")
    seconds = float(marker.args[0]) if marker else DEFAULT_DEADLINE
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise DeadlineExceeded("test exceeded its %.0fs deadline" % seconds)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name in ("broker", "fresh_broker"):
            b = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(b, Broker) and not b.external:
                state = "running" if b.alive() else "NOT RUNNING (exit %s)" % b.proc.returncode
                report.sections.append(
                    ("sluiced log tail (%s, %s)" % (name, state), b.log_tail()))
        # fixtures yielding e.g. cluster_net.NetnsCluster: their processes'
        # logs (a report that is part of another one, e.g. an EtcdCluster's in
        # its NetnsCluster's, is shown once)
        texts = []
        for name, value in (getattr(item, "funcargs", None) or {}).items():
            failure_report = getattr(value, "failure_report", None)
            if callable(failure_report):
                try:
                    texts.append((name, failure_report()))
                except Exception as e:
                    texts.append((name, "failure_report() failed: %r" % e))
        for k, (name, text) in enumerate(texts):
            if not any(text in other and (len(other) > len(text) or j < k)
                       for j, (_, other) in enumerate(texts) if j != k):
                report.sections.append(("%s: failure report" % name, text))
