"""Connections that never finish, and a process out of descriptors (issue
13, item 8): half-open sockets count against their own cap, and the accept
loop backs off on EMFILE instead of spinning a core."""

import os
import resource
import socket
import subprocess
import tempfile
import time

import pika
import pytest

from conftest import _sluiced_path, amqp_answers, free_port, wait_for
from mgmt_http import ExtraBroker
from proc_stats import sanitized_build

pytestmark = pytest.mark.deadline(60)


def closed_by_peer(sock, timeout=3.0):
    """True if the broker closes this socket (EOF or reset) within timeout."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_half_open_connections_have_their_own_cap():
    b = ExtraBroker("--max-handshaking-connections", "5", "--handshake-timeout", "30000")
    held = []
    try:
        # Five sockets that never send a byte fill the cap ...
        for _ in range(5):
            held.append(socket.create_connection(("127.0.0.1", b.port)))
        # (the broker has accepted them once it answers on a sixth)
        extra = socket.create_connection(("127.0.0.1", b.port))
        assert closed_by_peer(extra), "a sixth half-open connection was kept"
        extra.close()
        # ... and those already open are not affected; once the half-open
        # ones go, new clients get in again.
        for s in held:
            s.close()
        held.clear()
        c = wait_for(lambda: _try_pika(b.port), timeout=5, what="a connection once the half-open ones left")
        c.close()
        # Connections past connection.open do not count: more than five open.
        conns = [pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port)) for _ in range(8)]
        for c in conns:
            c.close()
    finally:
        for s in held:
            s.close()
        assert b.stop() == 0


def _try_pika(port):
    try:
        return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1,
                                                                 socket_timeout=2))
    except pika.exceptions.AMQPError:
        return None


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_accept_backs_off_when_out_of_descriptors():
    """With RLIMIT_NOFILE low, connections past it wait in the backlog:
    accept() fails with EMFILE. The broker must not retry in a tight loop."""
    if sanitized_build():
        # UBSan's vptr check probes memory through a pipe; with no free
        # descriptor it reports "invalid vptr / memory cannot be printed"
        # for a sound object and halts. The release build runs this test.
        pytest.skip("UBSan cannot check types while the process has no free descriptor")
    limit = 96
    workdir = tempfile.mkdtemp(prefix="sluice-emfile-")
    port, http_port = free_port(), free_port()

    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    log = open(os.path.join(workdir, "sluiced.log"), "wb")
    proc = subprocess.Popen([_sluiced_path(), "--amqp-port", str(port), "--http-port", str(http_port),
                             "--data-dir", os.path.join(workdir, "data"), "--handshake-timeout", "60000",
                             "--prometheus-port", "0"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=low_fd_limit)
    log.close()
    socks = []
    try:
        wait_for(lambda: amqp_answers("127.0.0.1", port) or proc.poll() is not None, 15, what="sluiced")
        assert proc.poll() is None
        for _ in range(limit + 20):  # past the limit: the kernel queues them, accept fails
            socks.append(socket.create_connection(("127.0.0.1", port)))
        wait_for(lambda: len(os.listdir("/proc/%d/fd" % proc.pid)) >= limit - 1,
                 timeout=10, what="sluiced to run out of descriptors")
        before, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(2.0)  # not a synchronisation: the window the CPU use is measured over
        used = (cpu_seconds(proc.pid) - before) / (time.monotonic() - t0)
        assert used < 0.25, "sluiced used %.0f%% of a core while out of descriptors" % (100 * used)
        # Descriptors come back: the waiting connections are served.
        for s in socks:
            s.close()
        socks.clear()
        c = wait_for(lambda: _try_pika(port), timeout=10, what="a new connection after descriptors freed")
        c.close()
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
