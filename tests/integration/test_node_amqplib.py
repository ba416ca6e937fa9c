"""Runs node/amqplib.test.js (Node's built-in test runner, amqplib client)
against the broker.  node_modules must have been installed beforehand
(`npm ci --prefix tests/integration/node`); a missing install fails."""

import os
import shutil
import subprocess

import pytest

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


@pytest.mark.deadline(90)
def test_amqplib(broker):
    node = shutil.which("node")
    assert node, "node is not installed"
    assert os.path.isdir(os.path.join(NODE_DIR, "node_modules", "amqplib")), (
        "amqplib is not installed: run `npm ci --prefix %s` first" % NODE_DIR)
    env = dict(os.environ, SLUICE_AMQP_PORT=str(broker.port),
               SLUICE_AMQP_HOST=broker.host)
    try:
        p = subprocess.run([node, "--test", "--test-timeout=20000",
                            "--test-reporter=tap"],
                           cwd=NODE_DIR, env=env, capture_output=True, text=True,
                           timeout=80)
    except subprocess.TimeoutExpired as e:
        pytest.fail("node --test did not finish in 80 s\n%s" % (e.stdout or ""))
    print(p.stdout)
    assert p.returncode == 0, "node --test failed (rc %d)\n%s\n%s" % (
        p.returncode, p.stdout[-8000:], p.stderr[-4000:])
    # the runner ran tests and all passed
    assert "# fail 0" in p.stdout and "# pass 0" not in p.stdout, p.stdout[-2000:]
