"""sluice-perf short runs against a broker: the figures are there and
non-zero, and the --json summary line parses.

The binary comes from env SLUICE_PERF (ctest sets it), else
build/release/cli/sluice-perf.
"""

import json
import os
import subprocess

import pytest

from conftest import REPO


def _perf_path():
    exe = os.environ.get("SLUICE_PERF") or os.path.join(REPO, "build", "release", "cli", "sluice-perf")
    if not os.access(exe, os.X_OK):
        pytest.fail("set SLUICE_PERF to the sluice-perf binary (not found: %s)" % exe)
    return exe


def run_perf(broker, *args, timeout=40):
    cmd = [_perf_path(), "--uri", broker.url, "--json",
           # unique names: a shared (external) broker may be running other tests
           "--queue-pattern", "it-perf-%d-" + os.urandom(4).hex(),
           "--exchange", "it-perf-" + os.urandom(4).hex()]
    if broker.proc is not None:
        cmd += ["--broker-pid", str(broker.proc.pid)]
    cmd += list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, "sluice-perf failed (%d)\nstdout:\n%s\nstderr:\n%s" % (
        p.returncode, p.stdout, p.stderr)
    lines = p.stdout.strip().splitlines()
    assert lines, "no output"
    summary = json.loads(lines[-1])   # the JSON line comes last
    return summary, p.stdout


@pytest.mark.deadline(60)
def test_transient_run_reports_rates_and_latency(broker):
    s, out = run_perf(broker, "--time", "2", "--size", "16", "--autoack", "--rate", "20000")
    assert "sent" in out and "msg/s" in out          # progress lines and summary
    assert "latency" in out and "p99" in out
    assert s["sent"] > 0 and s["received"] > 0
    assert s["publish_rate"] > 0 and s["consume_rate"] > 0
    lat = s["latency_us"]
    for k in ("p50", "p95", "p99", "max"):
        assert lat[k] > 0, (k, lat)
    assert lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"] * 1.02
    assert 1.5 < s["duration_s"] < 10
    assert s["received"] <= s["sent"]
    if not broker.external:
        assert s["broker_cpu_us_per_msg"] is not None and s["broker_cpu_us_per_msg"] >= 0
        assert "broker CPU µs/msg" in out


@pytest.mark.deadline(60)
def test_rpc_run_reports_calls_per_second(broker):
    s, out = run_perf(broker, "--rpc", "--time", "1")
    assert s["rpc_calls"] > 0 and s["rpc_calls_per_s"] > 0
    assert s["latency_us"]["p50"] > 0 and s["latency_us"]["p99"] > 0
    assert "calls/s" in out


@pytest.mark.deadline(60)
def test_counted_confirmed_persistent_run_delivers_everything(broker):
    s, _ = run_perf(broker, "--pmessages", "2000", "--confirm", "100", "--persistent",
                    "--prefetch", "50", "--size", "256")
    assert s["sent"] == 2000
    assert s["confirmed"] == 2000 and s["nacked"] == 0
    assert s["received"] == 2000 and s["missing"] == 0


@pytest.mark.deadline(60)
def test_stream_backlog_is_replayed_by_every_reader(broker):
    # --stream: every consumer reads the whole stream from first; nothing is consumed away
    s, _ = run_perf(broker, "--stream", "--backlog", "3000", "--consumers", "3", "--prefetch", "100",
                    "--multi-ack-every", "10", "--size", "64")
    assert s["confirmed"] == 3000 and s["nacked"] == 0
    assert s["received"] == 9000 and s["missing"] == 0
    assert s["queue_depth"] == 3000


@pytest.mark.deadline(60)
def test_queue_depth_at_the_end_is_what_the_producer_left(broker):
    # no consumer: every message published stays queued, and the broker's count is reported
    s, out = run_perf(broker, "--time", "1", "--rate", "2000", "--consumers", "0")
    assert s["sent"] > 0 and s["received"] == 0
    assert s["queue_depth"] == s["sent"]
    assert "queue depth" in out
    # fanout: one copy per queue
    s, _ = run_perf(broker, "--time", "1", "--rate", "1000", "--consumers", "0", "--fanout-queues", "3")
    assert s["sent"] > 0 and s["queue_depth"] == 3 * s["sent"]


@pytest.mark.deadline(60)
def test_consumer_delay_gives_the_producer_a_head_start(broker):
    # 500 messages go out at once; the consumer starts a second later, so each waited
    # about that long in the queue, and then all of them are consumed
    s, _ = run_perf(broker, "--pmessages", "500", "--consumer-delay", "1", "--size", "32")
    assert s["sent"] == 500 and s["received"] == 500 and s["missing"] == 0
    assert s["queue_depth"] == 0
    assert s["latency_us"]["p50"] > 500_000, s["latency_us"]
    assert s["config"]["consumer_delay_s"] == 1
    # the consume rate counts from the consumers' start, not from the producers'
    assert s["consume_rate"] > 500 / 1.5


@pytest.mark.deadline(60)
def test_consumer_rate_limit_lets_the_queue_grow(broker):
    # the producer publishes 5x faster than the consumer may read: the queue grows
    s, _ = run_perf(broker, "--time", "2", "--rate", "5000", "--consumer-rate", "1000")
    assert s["sent"] > 5000
    assert 500 < s["consume_rate"] < 1600, s["consume_rate"]   # a read may run one buffer ahead
    assert s["received"] < s["sent"] / 2
    assert s["queue_depth"] >= s["sent"] - s["received"] - 1000   # unacked come back at close
    assert s["config"]["consumer_rate"] == 1000


@pytest.mark.deadline(30)
def test_consumer_delay_must_fit_in_the_run(broker):
    for bad in (["--time", "1", "--consumer-delay", "2"], ["--rpc", "--consumer-delay", "1"],
                ["--consumer-delay", "-1"], ["--consumer-rate", "-5"]):
        p = subprocess.run([_perf_path(), "--port", str(broker.port)] + bad,
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 2, (bad, p.stderr)
        assert "--consumer-" in p.stderr


@pytest.mark.deadline(30)
def test_unreachable_broker_is_an_error(broker):
    from conftest import free_port
    p = subprocess.run([_perf_path(), "--port", str(free_port()), "--time", "1"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert "sluice-perf:" in p.stderr
