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
   ext4) below --disk-free-limit: the disk alarm blocks publishers (nothing
   is confirmed meanwhile), and once the space is back the same leader serves on (a disk
   alarm is not a reason to step down: sluiced promises to block and resume,
   as a single node does); and without the alarm (--disk-free-limit 0) a
   write that hits ENOSPC makes the leader exit 75 (EX_TEMPFAIL) rather than
   serve on from memory: the cluster fails over, and the node, restarted
   once space is back, rejoins as a follower in sync;
5. heavy load with the default lease (LavinMQ #1486, leaders flapping under
   load): sluice-perf plus the checked clients for ~20 s, and the leader's
   epoch never changes, no node logs "stops leading".

The faults are functions (fault_kill9 ... fault_load) that
tests/soak/cluster_soak.py also runs, many on one cluster, so each looks only
at log lines written after it began.  The whole file takes ~80 s on 2 cores.

Tests 1-4 use --cluster-lease-ttl 2 to keep them short.  Failover times are
not asserted (that is a benchmark); deadlines leave room for etcd extending
every lease by its TTL when its own leader changes (~2 x TTL + election).

Needs root, iproute2, etcd-server, nftables, e2fsprogs (mkfs.ext4) and loop
devices; skips without them, except under CI (then it fails).
"""

import collections
import contextlib
import os
import re
import shutil
import subprocess
import tempfile

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


def log_has(node, text, since=None):
    """True if node's log has text (after position since[node.node_id] if
    given: see log_marks())."""
    log = read_log(node)
    return text in (log[since[node.node_id]:] if since else log)


def log_marks(c):
    """Where each node's log ends now: faults look only at what follows
    (a soak runs many faults on one cluster)."""
    return {n.node_id: len(read_log(n)) for n in c.nodes}


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
# the faults: each runs with a Workload `w` going, from a settled cluster
# `c`, and returns once the cluster serves again with all three in sync
# (AssertionError if not).  Shared with tests/soak/cluster_soak.py.

def others(c, node):
    return [n for n in c.nodes if n is not node]


def wait_new_leader(c, old, what):
    new = wait_until(lambda: c.leader(others(c, old)), FAILOVER_TIMEOUT,
                     "a new leader among %s %s" % ([n.node_id for n in others(c, old)], what))
    assert new is not old
    return new


def wait_rejoined(c, old, new):
    """old is back as a follower in the ISR of new; returns the view."""
    v = wait_until(c.settled, SETTLE_TIMEOUT, "%s back as a follower in sync" % old.node_id)
    me = next(e for e in v if e["node_id"] == old.node_id)
    assert me["role"] == "follower" and me["in_sync"], v
    assert c.leader() is new, v
    return v


def fault_kill9(c, w, mounts=None):
    """kill -9 the leader; a new one serves; the old one, restarted,
    rejoins as a follower and is in sync again."""
    old = c.leader()
    epoch = c.leader_entry()["epoch"]
    mark = log_marks(c)
    old.kill9()
    new = wait_new_leader(c, old, "after kill -9 of %s" % old.node_id)
    wait_progress(w, FAILOVER_TIMEOUT, "with the new leader")
    old.start()
    wait_rejoined(c, old, new)
    assert c.leader_entry()["epoch"] > epoch
    assert log_has(old, "following " + new.node_id, mark)
    return "%s killed, %s leads" % (old.node_id, new.node_id)


def fault_sigstop(c, w, mounts=None):
    """SIGSTOP the leader until another leads and serves (longer than the
    lease), then SIGCONT: it steps down ("stops leading") and follows."""
    old = c.leader()
    epoch = c.leader_entry()["epoch"]
    mark = log_marks(c)
    old.sigstop()
    try:
        new = wait_new_leader(c, old, "while %s is stopped" % old.node_id)
        wait_progress(w, FAILOVER_TIMEOUT, "while the old leader is stopped")
    finally:
        old.sigcont()
    wait_until(lambda: log_has(old, "stops leading", mark), 20,
               "%s to log that it stops leading" % old.node_id)
    wait_rejoined(c, old, new)
    assert c.leader_entry()["epoch"] > epoch
    return "%s stopped, %s leads" % (old.node_id, new.node_id)


def fault_partition(c, w, mounts=None):
    """Cut the leader off from both other nodes (the test process still
    reaches it, so its clients stay connected) until it has stepped down and
    a new leader serves, then heal: it rejoins as a follower."""
    old = c.leader()
    epoch = c.leader_entry()["epoch"]
    mark = log_marks(c)
    c.net.partition([[n.i for n in others(c, old)], [old.i]])
    try:
        wait_until(lambda: log_has(old, "stops leading", mark), FAILOVER_TIMEOUT,
                   "%s, cut off from the majority, to step down" % old.node_id)
        new = wait_new_leader(c, old, "in the majority")
        wait_progress(w, FAILOVER_TIMEOUT, "during the partition")
    finally:
        c.net.heal_partition()
    wait_rejoined(c, old, new)
    assert c.leader_entry()["epoch"] > epoch
    return "%s partitioned, %s leads" % (old.node_id, new.node_id)


def fault_disk_alarm(c, w, mounts):
    """Fill the leader's disk below --disk-free-limit (DISK_FREE_LIMIT):
    publishers are blocked (connection.blocked, nothing confirmed), the
    leader keeps leading; once space is back publishing resumes on the same
    leader and epoch."""
    leader = c.leader()
    epoch = c.leader_entry()["epoch"]
    mark = log_marks(c)
    mnt = mounts[leader.i]
    filler = os.path.join(mnt, "filler")
    try:
        fill(filler, mnt, ALARM_FREE)
        wait_until(lambda: log_has(leader, "disk alarm set", mark), 20, "the leader's disk alarm")
        at_alarm, blocked0 = w.confirmed(), blocked_timeouts(w)
        # Every publisher goes to the leader (followers forward): each is
        # blocked long enough for pika's blocked-connection timeout.
        wait_until(lambda: blocked_timeouts(w) >= blocked0 + len(w.publishers), 30,
                   "every publisher to be held by connection.blocked")
        assert w.confirmed() <= at_alarm + 2 * len(w.publishers), \
            "publishes confirmed during the disk alarm: %d -> %d" % (at_alarm, w.confirmed())
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(filler)
    wait_until(lambda: log_has(leader, "disk alarm cleared", mark), 20,
               "the leader's disk alarm to clear")
    wait_progress(w, 40, "once space is back")
    v = wait_until(c.settled, SETTLE_TIMEOUT, "all three in sync again")
    assert c.leader() is leader, v
    assert c.leader_entry()["epoch"] == epoch, v
    for n in c.nodes:
        assert not log_has(n, "stops leading", mark), key_lines(n)
    return "%s's disk below the limit: publishers blocked, still leads epoch %d" % (leader.node_id, epoch)


def fault_enospc(c, w, mounts):
    """With --disk-free-limit 0: fill the leader's disk to the last block
    and publish ballast that needs new space, until a write fails (ENOSPC).
    sluiced reopens its store after a failed write; the leader then either
    (a) exits 75 (EX_TEMPFAIL) because the reopen failed too -- it will not
    serve from memory -- or steps down: a new leader serves, and once space
    is back the old one (restarted as a supervisor would) rejoins as a
    follower in sync; or (b) keeps leading, not confirming what it could not
    write, and serves on normally once space is back.  Either way nothing
    confirmed is lost (the workload's check)."""
    import threading
    old = c.leader()
    epoch = c.leader_entry()["epoch"]
    mark = log_marks(c)
    mnt = mounts[old.i]
    filler = os.path.join(mnt, "filler")
    stop = threading.Event()
    counts = collections.Counter()
    ballast = threading.Thread(target=publish_ballast, args=(c, stop, counts), daemon=True)
    stepped_down = lambda: log_has(old, "stops leading", mark)
    try:
        fill(filler, mnt, 0)
        ballast.start()
        wait_until(lambda: not old.alive() or stepped_down() or not ballast.is_alive(),
                   FAILOVER_TIMEOUT, "%s, its disk full, to exit or step down, or the ballast "
                   "to be confirmed or nacked" % old.node_id)
        assert log_has(old, "No space left on device", mark), \
            "the ballast (%s) never hit ENOSPC on %s:\n%s" % (dict(counts), old.node_id,
                                                             key_lines(old))
        if not old.alive() or stepped_down():
            new = wait_new_leader(c, old, "after %s's disk filled" % old.node_id)
            wait_progress(w, FAILOVER_TIMEOUT, "with the new leader")
    finally:
        stop.set()
        with contextlib.suppress(FileNotFoundError):
            os.remove(filler)
        if ballast.is_alive():
            ballast.join(30)
    if old.alive() and not stepped_down():
        # (b), unless it is on its way out: then (a) below
        wait_until(lambda: not old.alive() or stepped_down() or c.settled(), SETTLE_TIMEOUT,
                       "%s, its disk free again, to serve on in sync (or exit)" % old.node_id)
        if old.alive() and not stepped_down():
            wait_progress(w, 30, "once space is back")
            e = c.leader_entry()
            purge(c, "jepsen.ballast")
            return "%s's disk full: writes failed, ballast %d confirmed / %d nacked; " \
                   "%s leads epoch %s" % (old.node_id, counts["confirmed"], counts["nacked"],
                                          e and e["node_id"], e and e["epoch"])
        new = wait_new_leader(c, old, "after %s's disk filled" % old.node_id)
    exited = not old.alive()
    if exited:
        assert old.proc.returncode == 75, (old.proc.returncode, key_lines(old))
        assert log_has(old, "fatal: ", mark), key_lines(old)
        old.start()                 # what a supervisor does with EX_TEMPFAIL
    wait_rejoined(c, old, new)
    assert c.leader_entry()["epoch"] > epoch
    purge(c, "jepsen.ballast")
    return "%s's disk full: %s, %s leads" % (old.node_id, "exit 75" if exited else "stepped down",
                                             new.node_id)


def fault_load(c, w, mounts=None, seconds=None):
    """sluice-perf with confirms through the leader and through a follower
    (forwarded) for `seconds`: the leader and its epoch stay, nobody logs
    "stops leading" or wins an election."""
    seconds = seconds or LOAD_SECONDS
    exe = sluice_perf_path()
    leader = c.leader()
    epoch = c.leader_entry()["epoch"]
    mark = log_marks(c)
    follower = others(c, leader)[0]
    perfs = []
    try:
        for n, tag in ((leader, "l"), (follower, "f")):
            argv = [exe, "--host", n.host, "--port", str(n.AMQP_PORT), "-x", "3", "-y", "2",
                    "-c", "100", "--persistent", "-s", "512", "--queues", "2",
                    "--queue-pattern", "jepsen-perf-%s-%%d" % tag,
                    "-e", "jepsen-perf-" + tag,     # each run deletes its exchange first
                    "-z", str(seconds)]
            perfs.append(subprocess.Popen(argv, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
        seen = set()

        def perf_done():
            e = c.leader_entry()
            if e is not None:
                seen.add((e["node_id"], e["epoch"]))
            return all(p.poll() is not None for p in perfs)
        wait_until(perf_done, seconds + 30, "sluice-perf to finish", interval=0.5)
        outs = [p.communicate()[0] for p in perfs]
        rates = []
        for p, out in zip(perfs, outs):
            assert p.returncode == 0, "sluice-perf failed (%d):\n%s" % (p.returncode, out)
            m = re.search(r"confirmed\s+([\d,]+) msgs", out)
            rates.append(int(m.group(1).replace(",", "")) if m else 0)
        assert seen == {(leader.node_id, epoch)}, \
            "the leadership changed under load: %s" % sorted(seen)
        e = c.leader_entry()
        assert e and (e["node_id"], e["epoch"]) == (leader.node_id, epoch), e
        assert leader.leader_epoch() == epoch
        for n in c.nodes:
            assert not log_has(n, "stops leading", mark), key_lines(n)
            if n is not leader:
                assert not log_has(n, "%s is the leader" % n.node_id, mark), key_lines(n)
        wait_progress(w, 30, "after the load")
        return "%s led epoch %d throughout; sluice-perf confirmed %d" % (
            leader.node_id, epoch, sum(rates))
    finally:
        for p in perfs:
            if p.poll() is None:
                p.kill()
                p.wait()


FAULTS = {"kill9": fault_kill9, "sigstop": fault_sigstop, "partition": fault_partition,
          "disk-alarm": fault_disk_alarm, "enospc": fault_enospc, "load": fault_load}


def run_fault(c, queue, fault, mounts=None, publishers=3, consumers=2):
    """A Workload on `queue` through the fault, then the check; returns
    (what the fault did, Report)."""
    w = workload(c, queue, publishers, consumers)
    try:
        wait_progress(w, 30, "before the fault")
        what = fault(c, w, mounts)
        wait_progress(w, 30, "after the fault")
    finally:
        r = finish(c, w)
    return what, r


def purge(c, queue):
    """Delete queue through any node (best effort)."""
    import pika
    for n in c.nodes:
        try:
            with contextlib.closing(pika.BlockingConnection(n.pika_params())) as conn:
                conn.channel().queue_delete(queue)
                return True
        except Exception:           # noqa: BLE001 - try the next node
            continue
    return False


# --------------------------------------------------------------------------
# disks

DISK_MIB = 96                 # each node's ext4 image
DISK_FREE_LIMIT = 24 << 20    # --disk-free-limit: the alarm's threshold
ALARM_FREE = 8 << 20          # what the filler leaves: under the limit, room for acks
BALLAST_BYTES = 16 << 20      # fits on a follower's disk, not on the full leader's


def _run(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                   (p.stderr or p.stdout).strip()))
    return p.stdout


def need_disk_tools():
    for tool in ("mkfs.ext4", "losetup", "mount", "umount"):
        if shutil.which(tool) is None:
            if os.environ.get("CI"):
                pytest.fail("%s is missing (e2fsprogs, util-linux, mount)" % tool, pytrace=False)
            pytest.skip("%s is missing" % tool)


@contextlib.contextmanager
def loop_disks(nodes=(1, 2, 3), mib=DISK_MIB):
    """A fresh ext4 of `mib` MiB, loop-mounted, per node, with an empty
    data/ in it: {node: mount point}.  Unmounted, loop devices detached and
    images removed on exit, also when the test fails (exit the cluster
    first: its processes keep the mounts busy)."""
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
            os.mkdir(os.path.join(mnt, "data"))
        yield mounts
    finally:
        for i, mnt in mounts.items():
            if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mnt], capture_output=True)
        for dev in devices.values():
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def data_dirs(mounts):
    return {i: os.path.join(m, "data") for i, m in mounts.items()}


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
    """Publishers' connections pika closed after connection.blocked held
    them for blocked_connection_timeout."""
    return sum(1 for who, e in w.history.errors
               if who.startswith("p") and "ConnectionBlockedTimeout" in e)


def publish_ballast(c, stop, counts, size=256 << 10):
    """Persistent 256 KiB messages to queue jepsen.ballast (nobody consumes
    them) through any node, BALLAST_BYTES in all (confirmed or nacked):
    writes that need new disk space, unlike the checked workload whose queue
    stays short.  counts["confirmed"], counts["nacked"]: what it got."""
    import pika
    import pika.exceptions
    attempted = 0
    while attempted < BALLAST_BYTES and not stop.is_set():
        for n in c.nodes:
            try:
                with contextlib.closing(pika.BlockingConnection(n.pika_params())) as conn:
                    ch = conn.channel()
                    ch.confirm_delivery()
                    ch.queue_declare("jepsen.ballast", durable=True)
                    while attempted < BALLAST_BYTES and not stop.is_set():
                        attempted += size
                        try:
                            ch.basic_publish("", "jepsen.ballast", b"b" * size,
                                             pika.BasicProperties(delivery_mode=2))
                            counts["confirmed"] += 1
                        except pika.exceptions.NackError:
                            counts["nacked"] += 1
            except Exception:        # noqa: BLE001 - the fault under test; try the next node
                stop.wait(0.2)
            if attempted >= BALLAST_BYTES or stop.is_set():
                break


LOAD_SECONDS = 20


def sluice_perf_path():
    exe = os.environ.get("SLUICE_PERF") or os.path.join(REPO, "build", "release", "cli",
                                                        "sluice-perf")
    if not os.access(exe, os.X_OK):
        pytest.fail("set SLUICE_PERF to the sluice-perf binary (not found: %s)" % exe,
                    pytrace=False)
    return exe


# --------------------------------------------------------------------------
# the tests

@pytest.mark.deadline(120)
def test_kill9_the_leader_then_it_rejoins_as_a_follower(need_cluster):
    with JepsenCluster() as c:
        run_fault(c, "jepsen.kill9", fault_kill9)


@pytest.mark.deadline(120)
def test_sigstop_the_leader_past_its_lease_then_it_steps_down(need_cluster):
    with JepsenCluster() as c:
        run_fault(c, "jepsen.sigstop", fault_sigstop)


@pytest.mark.deadline(120)
def test_partition_the_leader_from_the_majority_then_heal(need_cluster):
    with JepsenCluster() as c:
        run_fault(c, "jepsen.partition", fault_partition)


@pytest.mark.deadline(120)
def test_a_full_disk_on_the_leader_blocks_publishers_until_space_returns(need_cluster):
    need_disk_tools()
    with loop_disks() as mounts:
        with JepsenCluster(extra_args=["--disk-free-limit", str(DISK_FREE_LIMIT)],
                           data_dirs=data_dirs(mounts)) as c:
            run_fault(c, "jepsen.disk", fault_disk_alarm, mounts)


@pytest.mark.deadline(150)
def test_a_leader_whose_disk_fills_without_the_alarm_fails_over_and_rejoins(need_cluster):
    """--disk-free-limit 0 (no alarm) and writes that need new space: the
    leader's RocksDB write fails with ENOSPC.  sluiced promises to stop
    without another write (exit 75, EX_TEMPFAIL, for a supervisor to restart
    it) rather than serve on from memory; the cluster fails over, and the
    node, restarted once space is back, rejoins as a follower in sync.
    (Stepping down instead of exiting would be fine too.)"""
    need_disk_tools()
    with loop_disks() as mounts:
        with JepsenCluster(extra_args=["--disk-free-limit", "0"],
                           data_dirs=data_dirs(mounts)) as c:
            run_fault(c, "jepsen.enospc", fault_enospc, mounts)


@pytest.mark.deadline(120)
def test_the_leader_does_not_flap_under_heavy_load(need_cluster):
    """The default lease (5 s) and ISR lag bound; sluice-perf with confirms
    through the leader and through a follower (forwarded), plus the checked
    clients, for LOAD_SECONDS: the leader's epoch never changes and nobody
    logs "stops leading" -- a busy leader must keep renewing its lease
    (LavinMQ #1486)."""
    sluice_perf_path()
    with JepsenCluster(lease_ttl=None, isr_max_lag_ms=None) as c:
        run_fault(c, "jepsen.load", fault_load, publishers=2, consumers=2)
