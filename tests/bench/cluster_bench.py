#!/usr/bin/python3
"""Cluster mode's two figures (issue 14), on this machine's loopback:

1. failover: kill -9 the leader of a 3-node cluster (the default 5 s lease
   unless --lease-ttl), then time until a publish with confirm through a
   surviving node is accepted — the client's view of a failover, reconnect
   included. Repeated --failovers times; prints each and the median.

2. the cost of replication: persistent messages with confirms through
   sluice-perf against a single node, a leader alone (a 1-node cluster: what
   cluster mode costs without any replica), a leader with 1 follower and a
   leader with 2, in one run; prints each rate and its ratio to the single node.

    /usr/bin/python3 tests/bench/cluster_bench.py [--seconds 15] [--rounds 3] [--failovers 5]

Needs etcd (Debian's etcd-server), build/release/cli/sluiced and sluice-perf
(or SLUICED / SLUICE_PERF). Every node, etcd and the load tool share this
machine's cores: on loopback, replication costs CPU that separate machines
would not share.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
os.environ.setdefault("SLUICED", os.path.join(REPO, "build", "release", "cli", "sluiced"))

import test_cluster as tc  # noqa: E402  (Etcd, Node, Cluster: the tests' own helpers)
from conftest import Broker, free_port, wait_for  # noqa: E402


def perf_binary():
    return os.environ.get("SLUICE_PERF") or os.path.join(REPO, "build", "release", "cli", "sluice-perf")


def cpu_seconds(pid):
    """User + system CPU of a process so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy():
    """(busy, total) jiffies of every core so far."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


CONFIRM_WINDOW = 1000


def perf(port, seconds, producers, pids=()):
    """The confirm rate, and each of `pids`' CPU (cores) over the run plus
    the whole machine's ('machine', in cores of the os.cpu_count())."""
    before = {name: cpu_seconds(pid) for name, pid in pids}
    busy0, total0 = machine_busy()
    t0 = time.monotonic()
    out = subprocess.run([perf_binary(), "--port", str(port), "-x", str(producers), "-y", "1", "-s", "512",
                          "--persistent", "-c", str(CONFIRM_WINDOW), "-z", str(seconds)],
                         capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - t0
    busy1, total1 = machine_busy()
    cpu = {name: (cpu_seconds(pid) - before[name]) / wall for name, pid in pids}
    cpu["machine"] = (busy1 - busy0) / max(1, total1 - total0) * os.cpu_count()
    m = re.search(r"confirm rate ([\d,]+) msg/s", out)
    return (int(m.group(1).replace(",", "")) if m else 0), cpu


def cluster_of(size, lease_ttl):
    tc.LEASE_TTL = lease_ttl
    tmp = tempfile.mkdtemp(prefix="sluice-cluster-bench-")
    c = tc.Cluster(tmp, size=size)
    c.start()
    wait_for(lambda: c.settled(size), 30, interval=0.1, what="the cluster to settle")
    return c, tmp


def one_round(seconds, producers):
    """{config: (msg/s, cpu)} for a single node, then a leader alone, with 1
    and with 2 followers."""
    rates = {}
    tmp = tempfile.mkdtemp(prefix="sluice-single-bench-")
    single = Broker("127.0.0.1", free_port(), http_port=free_port(), data_dir=os.path.join(tmp, "data"),
                    exe=os.environ["SLUICED"], workdir=tmp)
    single.start()
    try:
        rates["single node"] = perf(single.port, seconds, producers, [("node", single.proc.pid)])
    finally:
        single.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for size, name in ((1, "leader alone"), (2, "leader + 1 follower"), (3, "leader + 2 followers")):
        c, tmp = cluster_of(size, 5)
        try:
            leader = c.leader()
            followers = [n for n in c.nodes if n is not leader]
            pids = ([("leader", leader.proc.pid)] + [("follower%d" % (i + 1), n.proc.pid) for i, n in enumerate(followers)]
                    + [("etcd", c.etcd.proc.pid)])
            rates[name] = perf(leader.port, seconds, producers, pids)
        finally:
            c.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    return rates


def replication_cost(seconds, producers, rounds):
    """Each round runs the three configurations back to back; a ratio is
    taken within its round (the machine's speed drifts between rounds), and
    the median ratio over the rounds is the figure."""
    print("persistent 512 B, confirms (%d outstanding per producer), %d producer(s), 1 consumer, %d s each"
          " (CPU in cores; the machine has %d):" % (CONFIRM_WINDOW, producers, seconds, os.cpu_count()))
    ratios = {}
    for r in range(rounds):
        rates = one_round(seconds, producers)
        base = rates["single node"][0] or 1
        print(" round %d" % (r + 1))
        for name, (rate, cpu) in rates.items():
            ratios.setdefault(name, []).append(rate / base)
            print("  %-22s %9d msg/s  %.2fx   CPU %s" % (name, rate, rate / base,
                                                      ", ".join("%s %.2f" % kv for kv in cpu.items())))
    if rounds > 1:
        for name, rs in ratios.items():
            if name != "single node":
                print("%-22s median %.2fx of the single node over %d rounds (%s)"
                      % (name, statistics.median(rs), rounds, ", ".join("%.2f" % x for x in rs)))


def failover(count, lease_ttl):
    c, tmp = cluster_of(3, lease_ttl)
    times = []
    try:
        for i in range(count):
            old = c.leader()
            tc.publish_confirmed(old, "failover", [b"x"])
            old.kill9()
            t0 = time.monotonic()
            tc.publish_once_up([n for n in c.nodes if n is not old], "failover", b"y", timeout=60)
            took = time.monotonic() - t0
            times.append(took)
            print("  failover %d: %.2f s (leader %s killed)" % (i + 1, took, old.node_id))
            old.start()
            wait_for(lambda: c.settled(3), 60, interval=0.1, what="the killed node back in sync")
    finally:
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("failover with a %d s lease: median %.2f s, max %.2f s over %d kills"
          % (lease_ttl, statistics.median(times), max(times), len(times)))


def main():
    global CONFIRM_WINDOW
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--producers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--confirm-window", type=int, default=CONFIRM_WINDOW,
                    help="unconfirmed messages each producer may have outstanding")
    ap.add_argument("--failovers", type=int, default=5)
    ap.add_argument("--lease-ttl", type=int, default=5)
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--skip-failover", action="store_true")
    a = ap.parse_args()
    CONFIRM_WINDOW = a.confirm_window
    if not a.skip_cost:
        replication_cost(a.seconds, a.producers, a.rounds)
    if not a.skip_failover:
        failover(a.failovers, a.lease_ttl)


if __name__ == "__main__":
    main()
