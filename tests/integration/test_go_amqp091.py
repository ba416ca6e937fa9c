"""Builds go/amqp091_features.go (Go's client, github.com/rabbitmq/amqp091-go
from Debian's golang-github-rabbitmq-amqp091-go-dev) and runs it against the
broker: confirms and manual ack, a stream read from an offset, delayed
messages, deduplication, consistent-hash weights.  GOPATH mode with Debian's
sources and no downloads; a missing go or amqp091-go fails (install them with
`deploy/install-deps.sh --test`)."""

import os
import shutil
import subprocess

import pytest

GO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "go")
GOPATH = "/usr/share/gocode"
AMQP091_SRC = os.path.join(GOPATH, "src", "github.com", "rabbitmq", "amqp091-go")
CHECKS = ["basic_confirm_ack", "stream_offset", "delayed_due_order",
          "dedup_exchange", "consistent_hash_weights"]


@pytest.mark.deadline(150)
def test_go_amqp091(broker, tmp_path):
    go = shutil.which("go")
    assert go, "go is not installed (Debian's golang-go)"
    assert os.path.isdir(AMQP091_SRC), (
        "amqp091-go is not installed: %s is missing (Debian's "
        "golang-github-rabbitmq-amqp091-go-dev)" % AMQP091_SRC)
    # GOPATH mode over Debian's sources; GOPROXY=off makes any download an error.
    go_env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="",
                  GOPROXY="off", GOCACHE=str(tmp_path / "gocache"),
                  GOTMPDIR=str(tmp_path))
    exe = str(tmp_path / "amqp091_features")
    try:
        b = subprocess.run([go, "build", "-o", exe, "."], cwd=GO_DIR, env=go_env,
                           capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("go build did not finish in 90 s")
    assert b.returncode == 0, "go build failed (rc %d)\n%s\n%s" % (
        b.returncode, b.stdout[-4000:], b.stderr[-4000:])

    env = dict(os.environ, SLUICE_AMQP_PORT=str(broker.port),
               SLUICE_AMQP_HOST=broker.host)
    try:
        p = subprocess.run([exe], env=env, capture_output=True, text=True,
                           timeout=50)
    except subprocess.TimeoutExpired as e:
        pytest.fail("the Go checks did not finish in 50 s\n%s" % (e.stdout or ""))
    print(p.stdout)
    assert p.returncode == 0, "Go checks failed (rc %d)\n%s\n%s" % (
        p.returncode, p.stdout[-8000:], p.stderr[-4000:])
    # every check ran and passed
    for name in CHECKS:
        assert ("ok %s " % name) in p.stdout, "%s did not pass\n%s" % (name, p.stdout)
    assert "all %d checks passed" % len(CHECKS) in p.stdout, p.stdout
