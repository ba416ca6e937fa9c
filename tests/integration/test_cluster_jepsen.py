"""Jepsen-style fault tests of cluster mode, short form for CI (issue 14).

Each test runs 3 etcd members and 3 sluiced nodes, one of each per network
namespace (cluster_net.py), with publishers (confirms) and consumers (manual
acks) from jepsen_check.py running through the whole fault, spread over all
three nodes (followers forward to the leader).  After the fault heals the
clients stop, the queue is drained, and check() must find no confirmed
message lost and no duplicate that is not flagged redelivered.  The faults:

1. kill -9 the leader, then restart it: it rejoins as a follower and is in
   sync again (/api/nodes);
2. SIGSTOP the leader for longer than its lease, then SIGCONT: it logs
   "stops leading" and a new leader serves;
3. partition the leader from the majority (nftables; the test process still
   reaches every node, so clients stay connected to the old leader) for
   longer than its lease, then heal: it steps down and rejoins;
4. fill the leader's disk (every data dir is its own small loop-mounted
   ext4) below --disk-free-limit: the disk alarm blocks publishers, consumers
   go on, and once the space is back the same leader serves on (a disk
   alarm is not a reason to step down: sluiced promises to block and resume,
   as a single node does); and without the alarm (--disk-free-limit 0) a
   write that hits ENOSPC makes the leader exit 75 (EX_TEMPFAIL) rather than
   serve on from memory: the cluster fails over, and the node, restarted
   once space is back, rejoins as a follower in sync;
5. heavy load with the default lease (LavinMQ #1486, leaders flapping under
   load): sluice-perf plus the checked clients for ~20 s, and the leader's
   epoch never changes, no node logs "stops leading".

Tests 1-4 use --cluster-lease-ttl 2 to keep them short.  Failover times are
not asserted (that is a benchmark); deadlines leave room for etcd extending
every lease by its TTL when its own leader changes (~2 x TTL + election).

Needs root, iproute2, etcd-server, nftables, e2fsprogs (mkfs.ext4) and loop
devices; skips without them, except under CI (then it fails).
"""

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from cluster_net import (EtcdCluster, NetnsCluster, SluicedNode, require_netns,
                         wait_until)
from jepsen_check import Workload

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

LEASE_TTL = 2            # tests 1-4 (the default, 5, in test 5)
ISR_MAX_LAG_MS = 1000
SETTLE_TIMEOUT = 40      # one leader, followers streaming and in sync
FAILOVER_TIMEOUT = 40    # ~2 x TTL + etcd election, with plenty of slack on 2 cores
PROGRESS = 100           # confirmed publishes (and deliveries) that show the cluster serves


# --------------------------------------------------------------------------
# the cluster

class JepsenCluster:
    """NetnsCluster(3) + EtcdCluster + a SluicedNode on each node."""

    def __init__(self, lease_ttl=LEASE_TTL, extra_args=(), data_dirs=None,
                 isr_max_lag_ms=ISR_MAX_LAG_MS):
        self.lease_ttl = lease_ttl
        self.isr_max_lag_ms = isr_max_lag_ms
        self.extra_args = list(extra_args)
        self.data_dirs = data_dirs or {}
        self.stack = contextlib.ExitStack()

    def __enter__(self):
        try:
            self.net = self.stack.enter_context(NetnsCluster(3))
            self.etcd = self.stack.enter_context(EtcdCluster(self.net))
            self.etcd.wait_healthy(20)
            args = (["--isr-max-lag-ms", str(self.isr_max_lag_ms)] if self.isr_max_lag_ms
                    else []) + self.extra_args
            self.nodes = []
            for i in (1, 2, 3):
                n = SluicedNode(self.net, i, self.etcd.endpoints(), lease_ttl=self.lease_ttl,
                                extra_args=args)
                if i in self.data_dirs:
                    n.data_dir = self.data_dirs[i]
                self.nodes.append(n)
            for n in self.nodes:
                n.start()
            wait_until(self.settled, SETTLE_TIMEOUT, "a leader and two followers in sync")
        except BaseException:
            self.stack.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and getattr(self, "net", None) is not None:
            self.net.print_failure_report()
        return self.stack.__exit__(exc_type, exc, tb)

    def by_id(self, node_id):
        return next(n for n in self.nodes if n.node_id == node_id)

    def view(self, via=None):
        """/api/nodes through the first given (default: live) node that
        answers (a follower forwards it to the leader), or None."""
        for n in via or [n for n in self.nodes if n.alive()]:
            try:
                v = n.api("/api/nodes", timeout=2.0)
                if isinstance(v, list):
                    return v
            except (OSError, RuntimeError, ValueError):
                continue
        return None

    def leader_entry(self, via=None):
        v = self.view(via)
        leaders = [e for e in v or [] if e.get("role") == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    def leader(self, via=None):
        e = self.leader_entry(via)
        return self.by_id(e["node_id"]) if e else None

    def settled(self, via=None):
        """The view if every node runs, one leads and both others stream
        in sync with nothing to catch up; else None."""
        v = self.view(via)
        if not v or len(v) != 3 or not all(e.get("running", True) for e in v):
            return None
        leaders = [e for e in v if e.get("role") == "leader"]
        followers = [e for e in v if e.get("role") == "follower"]
        if len(leaders) != 1 or len(followers) != 2:
            return None
        if not all(f.get("in_sync") and f.get("replication_state") == "streaming"
                   and f.get("lag_batches") == 0 for f in followers):
            return None
        return v

    def logs(self):
        return {n.node_id: read_log(n) for n in self.nodes}


def read_log(node):
    with open(node.log_path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def log_has(node, text):
    return text in read_log(node)


def key_lines(node, pattern=r"cluster: |stops leading|disk alarm|fatal|replication: "):
    return "\n".join(l for l in read_log(node).splitlines() if re.search(pattern, l))


@pytest.fixture
def need_cluster():
    require_netns(need_etcd=True, need_nft=True)


def workload(c, queue, publishers=3, consumers=2):
    return Workload([n.pika_params() for n in c.nodes], queue, publishers=publishers,
                    consumers=consumers, reconnect_timeout=60).start()


def wait_progress(w, timeout, what, confirms=PROGRESS, deliveries=PROGRESS):
    """Wait until the workload confirms `confirms` more publishes and its
    consumers get `deliveries` more messages than now."""
    c0, d0 = w.confirmed(), len(w.history.deliveries)
    wait_until(lambda: w.confirmed() >= c0 + confirms
               and len(w.history.deliveries) >= d0 + deliveries,
               timeout, "%d more confirms and %d more deliveries %s" % (confirms, deliveries, what),
               interval=0.1)


def finish(c, w):
    """Stop the clients, drain the queue, check the history."""
    try:
        w.stop(timeout=40)
    finally:
        w.drain(timeout=40)
    r = w.check()
    print("%s\n%s" % (r, "\n".join("---- %s ----\n%s" % (n.node_id, key_lines(n))
                                   for n in c.nodes)))
    assert r.ok, r
    return r


# --------------------------------------------------------------------------
# 1. kill -9

@pytest.mark.deadline(120)
def test_kill9_the_leader_then_it_rejoins_as_a_follower(need_cluster):
    with JepsenCluster() as c:
        old = c.leader()
        w = workload(c, "jepsen.kill9")
        try:
            wait_progress(w, 30, "before the fault")
            old.kill9()
            survivors = [n for n in c.nodes if n is not old]
            new = wait_until(lambda: c.leader(survivors), FAILOVER_TIMEOUT,
                             "a new leader among %s" % [n.node_id for n in survivors])
            assert new is not old
            wait_progress(w, FAILOVER_TIMEOUT, "with the new leader")
            old.start()
            v = wait_until(c.settled, SETTLE_TIMEOUT, "%s back and in sync" % old.node_id)
            me = next(e for e in v if e["node_id"] == old.node_id)
            assert me["role"] == "follower" and me["in_sync"], v
            assert c.leader() is new
            assert log_has(old, "following " + new.node_id)
            wait_progress(w, 30, "after the old leader rejoined")
        finally:
            finish(c, w)


# --------------------------------------------------------------------------
# 2. SIGSTOP past the lease

@pytest.mark.deadline(120)
def test_sigstop_the_leader_past_its_lease_then_it_steps_down(need_cluster):
    with JepsenCluster() as c:
        old = c.leader()
        epoch = c.leader_entry()["epoch"]
        w = workload(c, "jepsen.sigstop")
        try:
            wait_progress(w, 30, "before the fault")
            old.sigstop()
            try:
                survivors = [n for n in c.nodes if n is not old]
                new = wait_until(lambda: c.leader(survivors), FAILOVER_TIMEOUT,
                                 "a new leader while %s is stopped" % old.node_id)
                assert new is not old
                wait_progress(w, FAILOVER_TIMEOUT, "while the old leader is stopped")
            finally:
                old.sigcont()
            wait_until(lambda: log_has(old, "stops leading"), 20,
                       "%s to log that it stops leading" % old.node_id)
            v = wait_until(c.settled, SETTLE_TIMEOUT, "%s back as a follower in sync" % old.node_id)
            assert c.leader() is new
            assert c.leader_entry()["epoch"] > epoch, v
            wait_progress(w, 30, "after the old leader rejoined")
        finally:
            finish(c, w)


# --------------------------------------------------------------------------
# 3. partition the leader from the majority

@pytest.mark.deadline(120)
def test_partition_the_leader_from_the_majority_then_heal(need_cluster):
    with JepsenCluster() as c:
        old = c.leader()
        epoch = c.leader_entry()["epoch"]
        others = [n.i for n in c.nodes if n is not old]
        w = workload(c, "jepsen.partition")
        try:
            wait_progress(w, 30, "before the fault")
            c.net.partition([others, [old.i]])
            try:
                wait_until(lambda: log_has(old, "stops leading"), FAILOVER_TIMEOUT,
                           "%s, cut off from the majority, to step down" % old.node_id)
                survivors = [n for n in c.nodes if n is not old]
                new = wait_until(lambda: c.leader(survivors), FAILOVER_TIMEOUT,
                                 "a new leader in the majority")
                assert new is not old
                wait_progress(w, FAILOVER_TIMEOUT, "during the partition")
            finally:
                c.net.heal_partition()
            v = wait_until(c.settled, SETTLE_TIMEOUT, "%s back as a follower in sync" % old.node_id)
            assert c.leader() is new
            assert c.leader_entry()["epoch"] > epoch, v
            wait_progress(w, 30, "after healing")
        finally:
            finish(c, w)


# --------------------------------------------------------------------------
# 4. the leader's disk fills up

DISK_MIB = 96                 # each node's ext4 image
DISK_FREE_LIMIT = 24 << 20    # --disk-free-limit: the alarm's threshold
ALARM_FREE = 8 << 20          # what the filler leaves: under the limit, room for acks


def _run(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                   (p.stderr or p.stdout).strip()))
    return p.stdout


@contextlib.contextmanager
def loop_disks(nodes=(1, 2, 3), mib=DISK_MIB):
    """A fresh ext4 of `mib` MiB, loop-mounted, per node: {node: mount
    point}.  Unmounted, loop devices detached and images removed on exit,
    also when the test fails (exit the cluster first: its processes keep
    the mounts busy)."""
    for tool in ("mkfs.ext4", "losetup", "mount", "umount"):
        if shutil.which(tool) is None:
            if os.environ.get("CI"):
                pytest.fail("%s is missing (e2fsprogs, util-linux, mount)" % tool, pytrace=False)
            pytest.skip("%s is missing" % tool)
    base = tempfile.mkdtemp(prefix="sluice-jepsen-disk-")
    mounts, devices = {}, {}
    try:
        for i in nodes:
            img = os.path.join(base, "n%d.img" % i)
            mnt = os.path.join(base, "n%d" % i)
            os.mkdir(mnt)
            with open(img, "wb") as f:
                f.truncate(mib << 20)
            _run(["mkfs.ext4", "-q", "-F", "-m", "0", img])
            devices[i] = _run(["losetup", "--find", "--show", img]).strip()
            _run(["mount", "-t", "ext4", devices[i], mnt])
            mounts[i] = mnt
        yield mounts
    finally:
        for i, mnt in mounts.items():
            if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mnt], capture_output=True)
        for dev in devices.values():
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path, mnt, leave):
    """Write `path` until `leave` bytes are free on mnt (0: to the last
    block); returns the bytes written."""
    written = 0
    chunk = b"\0" * (1 << 20)
    with open(path, "wb") as f:
        while True:
            room = free_bytes(mnt) - leave
            if room <= 0:
                break
            try:
                f.write(chunk[:min(len(chunk), room)])
                f.flush()
                os.fsync(f.fileno())
            except OSError:          # ENOSPC: full
                break
            written += min(len(chunk), room)
    return written


def blocked_timeouts(w):
    return sum(1 for who, e in w.history.errors
               if who.startswith("p") and "ConnectionBlockedTimeout" in e)


@pytest.mark.deadline(120)
def test_a_full_disk_on_the_leader_blocks_publishers_until_space_returns(need_cluster):
    with loop_disks() as mounts:
        data = {i: os.path.join(m, "data") for i, m in mounts.items()}
        for d in data.values():
            os.mkdir(d)
        with JepsenCluster(extra_args=["--disk-free-limit", str(DISK_FREE_LIMIT)],
                           data_dirs=data) as c:
            leader = c.leader()
            epoch = c.leader_entry()["epoch"]
            mnt = mounts[leader.i]
            filler = os.path.join(mnt, "filler")
            w = workload(c, "jepsen.disk")
            try:
                wait_progress(w, 30, "before the fault")
                fill(filler, mnt, ALARM_FREE)
                wait_until(lambda: log_has(leader, "disk alarm set"), 20,
                           "the leader's disk alarm")
                at_alarm, blocked0 = w.confirmed(), blocked_timeouts(w)
                # Every publisher goes to the leader (followers forward): each
                # is blocked long enough for pika's blocked-connection timeout.
                wait_until(lambda: blocked_timeouts(w) >= blocked0 + len(w.publishers), 30,
                           "every publisher to be held by connection.blocked")
                assert w.confirmed() <= at_alarm + 2 * len(w.publishers), \
                    "publishes confirmed during the disk alarm: %d -> %d" % (at_alarm, w.confirmed())
                os.remove(filler)
                wait_until(lambda: log_has(leader, "disk alarm cleared"), 20,
                           "the leader's disk alarm to clear")
                wait_progress(w, 40, "once space is back")
                v = wait_until(c.settled, SETTLE_TIMEOUT, "all three in sync again")
                assert c.leader() is leader, v
                assert c.leader_entry()["epoch"] == epoch, v
                for n in c.nodes:
                    assert not log_has(n, "stops leading"), key_lines(n)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(filler)
                finish(c, w)


BALLAST_BYTES = 16 << 20      # fits on a follower's disk, not on the full leader's


def publish_ballast(c, stop, sizes=256 << 10):
    """Persistent 256 KiB messages to queue jepsen.ballast (nobody consumes
    them) through any node, BALLAST_BYTES in all: writes that need new disk
    space, unlike the checked workload whose queue stays short."""
    import pika
    sent = 0
    while sent < BALLAST_BYTES and not stop.is_set():
        for n in c.nodes:
            try:
                with contextlib.closing(pika.BlockingConnection(n.pika_params())) as conn:
                    ch = conn.channel()
                    ch.confirm_delivery()
                    ch.queue_declare("jepsen.ballast", durable=True)
                    while sent < BALLAST_BYTES and not stop.is_set():
                        ch.basic_publish("", "jepsen.ballast", b"b" * sizes,
                                         pika.BasicProperties(delivery_mode=2))
                        sent += sizes
            except Exception:        # noqa: BLE001 - the fault under test; try the next node
                stop.wait(0.2)
            if sent >= BALLAST_BYTES or stop.is_set():
                break


@pytest.mark.deadline(150)
def test_a_leader_whose_disk_fills_without_the_alarm_fails_over_and_rejoins(need_cluster):
    """--disk-free-limit 0 (no alarm) and writes that need new space: the
    leader's RocksDB write fails with ENOSPC.  sluiced promises to stop
    without another write (exit 75, EX_TEMPFAIL, for a supervisor to restart
    it) rather than serve on from memory; the cluster fails over, and the
    node, restarted once space is back, rejoins as a follower in sync.
    (If it stepped down instead of exiting, that is fine too.)"""
    import threading
    with loop_disks() as mounts:
        data = {i: os.path.join(m, "data") for i, m in mounts.items()}
        for d in data.values():
            os.mkdir(d)
        with JepsenCluster(extra_args=["--disk-free-limit", "0"], data_dirs=data) as c:
            old = c.leader()
            mnt = mounts[old.i]
            filler = os.path.join(mnt, "filler")
            stop_ballast = threading.Event()
            ballast = threading.Thread(target=publish_ballast, args=(c, stop_ballast), daemon=True)
            w = workload(c, "jepsen.enospc")
            try:
                wait_progress(w, 30, "before the fault")
                fill(filler, mnt, 0)
                ballast.start()
                wait_until(lambda: not old.alive() or log_has(old, "stops leading"),
                           FAILOVER_TIMEOUT, "%s, its disk full, to exit or step down" % old.node_id)
                survivors = [n for n in c.nodes if n is not old]
                new = wait_until(lambda: c.leader(survivors), FAILOVER_TIMEOUT,
                                 "a new leader among %s" % [n.node_id for n in survivors])
                wait_progress(w, FAILOVER_TIMEOUT, "with the new leader")
                os.remove(filler)
                if not old.alive():
                    assert old.proc.returncode == 75, (old.proc.returncode, key_lines(old))
                    assert log_has(old, "fatal: "), key_lines(old)
                    old.start()                 # what a supervisor does with EX_TEMPFAIL
                v = wait_until(c.settled, SETTLE_TIMEOUT, "%s back and in sync" % old.node_id)
                me = next(e for e in v if e["node_id"] == old.node_id)
                assert me["role"] == "follower" and me["in_sync"], v
                assert c.leader() is new
                wait_progress(w, 30, "after the old leader rejoined")
            finally:
                stop_ballast.set()
                with contextlib.suppress(FileNotFoundError):
                    os.remove(filler)
                try:
                    finish(c, w)
                finally:
                    ballast.join(30)


# --------------------------------------------------------------------------
# 5. no flapping under load (LavinMQ #1486)

LOAD_SECONDS = 20


def sluice_perf_path():
    exe = os.environ.get("SLUICE_PERF") or os.path.join(REPO, "build", "release", "cli",
                                                        "sluice-perf")
    if not os.access(exe, os.X_OK):
        pytest.fail("set SLUICE_PERF to the sluice-perf binary (not found: %s)" % exe,
                    pytrace=False)
    return exe


@pytest.mark.deadline(120)
def test_the_leader_does_not_flap_under_heavy_load(need_cluster):
    """The default lease (5 s) and ISR lag bound; sluice-perf with confirms
    through the leader and through a follower (forwarded), plus the checked
    clients, for LOAD_SECONDS: the leader's epoch never changes and nobody
    logs "stops leading" -- a busy leader must keep renewing its lease."""
    exe = sluice_perf_path()
    with JepsenCluster(lease_ttl=None, isr_max_lag_ms=None) as c:
        leader = c.leader()
        epoch = c.leader_entry()["epoch"]
        follower = next(n for n in c.nodes if n is not leader)
        w = workload(c, "jepsen.load", publishers=2, consumers=2)
        perfs = []
        try:
            for n, tag in ((leader, "l"), (follower, "f")):
                argv = [exe, "--host", n.host, "--port", str(n.AMQP_PORT), "-x", "3", "-y", "2",
                        "-c", "100", "--persistent", "-s", "512", "--queues", "2",
                        "--queue-pattern", "jepsen-perf-%s-%%d" % tag,
                        "-e", "jepsen-perf-" + tag,     # each run deletes its exchange first
                        "-z", str(LOAD_SECONDS)]
                perfs.append(subprocess.Popen(argv, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True))
            seen = set()

            def perf_done():
                e = c.leader_entry()
                if e is not None:
                    seen.add((e["node_id"], e["epoch"]))
                return all(p.poll() is not None for p in perfs)
            wait_until(perf_done, LOAD_SECONDS + 30, "sluice-perf to finish", interval=0.5)
            outs = [p.communicate()[0] for p in perfs]
            for p, out in zip(perfs, outs):
                print(out[-1500:])
                assert p.returncode == 0, "sluice-perf failed (%d):\n%s" % (p.returncode, out)
            assert seen == {(leader.node_id, epoch)}, \
                "the leadership changed under load: %s" % sorted(seen)
            e = c.leader_entry()
            assert (e["node_id"], e["epoch"]) == (leader.node_id, epoch), e
            assert leader.leader_epoch() == epoch
            for n in c.nodes:
                assert not log_has(n, "stops leading"), key_lines(n)
                if n is not leader:
                    assert not log_has(n, "%s is the leader" % n.node_id), key_lines(n)
            wait_progress(w, 30, "after the load")
        finally:
            for p in perfs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            finish(c, w)
