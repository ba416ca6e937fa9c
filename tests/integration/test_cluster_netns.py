"""Tests of the multi-node test harness itself (cluster_net.py,
jepsen_check.py), none of which needs sluiced's cluster mode: namespaces on a
bridge talk to each other, links can be cut and partitioned and healed, three
etcd members elect a leader and the majority keeps writing while one is cut
off, nothing is left behind -- also when the test process is killed -- and
the checker tells lost and duplicated messages from redeliveries.

The netns tests need root, iproute2, etcd-server and nftables; they skip
without them, except when env CI is set (then they fail).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import cluster_net
from cluster_net import EtcdCluster, NetnsCluster, NetnsError, require_netns, wait_until
from jepsen_check import History, Workload, check

HERE = os.path.dirname(os.path.abspath(__file__))


def netns_names():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {l.split()[0] for l in out.splitlines() if l.strip()}


def link_names():
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {l.split(":")[1].strip().split("@")[0] for l in out.splitlines() if ":" in l}


def gone(pid):
    """True once pid has exited (a zombie of ours counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def net():
    require_netns()
    with NetnsCluster(3) as n:
        yield n


@pytest.fixture
def etcd(net):
    require_netns(need_etcd=True)
    with EtcdCluster(net) as e:
        yield e


# --------------------------------------------------------------------------
# the network

def test_nodes_reach_each_other_over_tcp(net):
    for src in (None, 1, 2, 3):
        for dst in (1, 2, 3):
            if src != dst:
                assert net.tcp_reachable(src, dst), "node %s -> node %d" % (src, dst)


def test_run_starts_the_process_inside_the_namespace(net):
    p = net.run(2, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
                stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=10)
    assert p.returncode == 0
    assert " %s/24 " % net.addr(2) in out
    lo = net.run(2, ["ip", "-o", "link", "show", "dev", "lo"], stdout=subprocess.PIPE, text=True)
    assert "UP" in lo.communicate(timeout=10)[0]


def test_cut_isolates_a_node_until_healed(net):
    net.cut(3)
    assert not net.tcp_reachable(1, 3, timeout=0.5)
    assert not net.tcp_reachable(3, 2, timeout=0.5)
    assert not net.tcp_reachable(None, 3, timeout=0.5)
    assert net.tcp_reachable(1, 2)
    net.heal(3)
    wait_until(lambda: net.tcp_reachable(1, 3, timeout=0.5), 10, "node 3 back")
    assert net.tcp_reachable(3, 2)


def test_partition_drops_traffic_between_groups_only(net):
    require_netns(need_nft=True)
    net.partition([[1, 2], [3]])
    assert net.tcp_reachable(1, 2) and net.tcp_reachable(2, 1)
    for a, b in ((1, 3), (3, 1), (2, 3), (3, 2)):
        assert not net.tcp_reachable(a, b, timeout=0.5), "node %d -> node %d" % (a, b)
    assert net.tcp_reachable(None, 3), "the host stays reachable"
    net.partition([[1], [2, 3]])          # replaces the first partition
    assert net.tcp_reachable(2, 3) and not net.tcp_reachable(1, 2, timeout=0.5)
    net.heal_partition()
    for a, b in ((1, 2), (1, 3), (3, 2)):
        assert net.tcp_reachable(a, b), "node %d -> node %d after healing" % (a, b)


def test_blocked_forwarding_is_reported_with_the_reason(net):
    """What a Docker host's FORWARD DROP looks like to the harness: a clear
    NetnsError, not a test that times out somewhere later.  (Simulated with
    an nftables bridge-family drop on this cluster's ports only.)"""
    require_netns(need_nft=True)
    table = "sltest" + net.tag
    rule = ("table bridge %s {\n chain block { type filter hook forward priority 0; "
            "iifname \"sl%sh*\" drop; }\n}\n" % (table, net.tag))
    subprocess.run(["nft", "-f", "-"], input=rule, text=True, check=True)
    try:
        with pytest.raises(NetnsError, match=r"(?s)no TCP traffic from node 1 .*filters "
                                             r"bridged traffic.*bridge-nf-call-iptables"):
            net._check_connectivity()
    finally:
        subprocess.run(["nft", "delete", "table", "bridge", table], check=True)


def test_cleanup_removes_namespaces_links_and_processes():
    require_netns()
    with NetnsCluster(2) as n:
        names = {n.ns(1), n.ns(2)}
        links = {n.bridge, n.veth(1), n.veth(2)}
        assert names <= netns_names() and links <= link_names()
        # a process group of two, one of them stopped
        p = n.run(1, ["sh", "-c", "sleep 600 & echo $!; exec sleep 600"],
                  stdout=subprocess.PIPE, text=True)
        child = int(p.stdout.readline())
        n.signal_group(p, signal.SIGSTOP)
    assert not names & netns_names()
    assert not links & link_names()
    assert p.poll() is not None
    wait_until(lambda: gone(child), 5, "the background sleep to die")


def test_cleanup_also_happens_when_the_test_fails():
    require_netns()
    with pytest.raises(ZeroDivisionError):
        with NetnsCluster(2) as n:
            names = {n.ns(1), n.ns(2)}
            p = n.run(2, ["sleep", "600"])
            1 / 0
    assert not names & netns_names()
    assert not {n.bridge, n.veth(1)} & link_names()
    assert p.poll() is not None


CHILD = textwrap.dedent("""
    import sys, subprocess
    sys.path.insert(0, %r)
    from cluster_net import NetnsCluster
    with NetnsCluster(2) as n:
        p = n.run(1, ["sleep", "600"])
        print(n.ns(1), n.bridge, p.pid, flush=True)
        sys.stdin.read()        # until the parent kills us
""" % HERE)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_nothing_outlives_a_killed_test_process(sig):
    """SIGTERM: the cluster cleans up on its way out.  SIGKILL: its processes
    die with it (parent-death signal) and the next cluster removes the
    namespaces and links it left."""
    require_netns()
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        ns, bridge, pid = child.stdout.readline().split()
        pid = int(pid)
        assert ns in netns_names() and not gone(pid)
        child.send_signal(getattr(signal, sig))
        child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    wait_until(lambda: gone(pid), 5, "the namespace's process to die with its test")
    if sig == "SIGKILL":
        assert ns in netns_names(), "a SIGKILLed run cannot clean up itself"
        removed = cluster_net.cleanup_leftovers()
        assert ns in removed and bridge in removed
    assert ns not in netns_names()
    assert bridge not in link_names()


# --------------------------------------------------------------------------
# etcd

@pytest.mark.deadline(60)
def test_etcd_members_elect_a_leader(etcd, net):
    t0 = time.monotonic()
    leader = etcd.wait_healthy(15)
    assert leader in (1, 2, 3)
    assert etcd.endpoints() == ",".join("%s:2379" % net.addr(i) for i in (1, 2, 3))
    assert etcd.put(1, "k", "v")
    assert etcd.get(3, "k") == "v"
    print("etcd leader after %.1fs" % (time.monotonic() - t0))


@pytest.mark.deadline(90)
def test_etcd_majority_keeps_writing_while_one_member_is_cut_off(etcd, net):
    etcd.wait_healthy(15)
    net.cut(3)
    # the majority (re-electing if 3 led) accepts writes through either member
    wait_until(lambda: etcd.put(1, "during-cut", "1", timeout=2), 15,
               "a write through member 1 with member 3 cut off")
    assert etcd.put(2, "during-cut-2", "2")
    assert etcd.get(2, "during-cut") == "1"
    # the cut-off member: unreachable from the host, and on its own it
    # cannot commit a write or serve a linearizable read
    assert not etcd.put(3, "from-host", "x", timeout=1)
    assert not etcd.put(3, "from-inside", "x", timeout=3, local=True)
    with pytest.raises((OSError, RuntimeError)):
        etcd.get(3, "during-cut", timeout=3, local=True)
    net.heal(3)
    wait_until(lambda: etcd.put(3, "after-heal", "3", timeout=2, local=True), 20,
               "a write through member 3 after healing")
    assert etcd.get(3, "during-cut-2", local=True) == "2"
    assert etcd.get(1, "after-heal") == "3"
    assert etcd.wait_healthy(15)


@pytest.mark.deadline(60)
def test_etcd_stop_cont_and_kill(etcd, net):
    etcd.wait_healthy(15)
    etcd.stop(2)
    assert not etcd.healthy(2, timeout=0.5)
    wait_until(lambda: etcd.put(1, "k", "stopped-2", timeout=2), 15, "a write with 2 stopped")
    etcd.cont(2)
    wait_until(lambda: etcd.healthy(2), 15, "member 2 healthy after SIGCONT")
    etcd.kill(1)
    assert not etcd.alive(1)
    wait_until(lambda: etcd.put(2, "k", "killed-1", timeout=2), 15, "a write with 1 killed")
    etcd.start(1)              # same data dir: rejoins
    etcd.wait_healthy(15)
    assert etcd.get(1, "k") == "killed-1"


# --------------------------------------------------------------------------
# the checker, on made-up histories

def history(confirmed=(), attempted=(), deliveries=(), drained=()):
    h = History()
    for m in set(attempted) | set(confirmed):
        h.attempt(m)
    for m in confirmed:
        h.confirm(m)
    for d in deliveries:
        h.deliver(d[0], d[1], d[2] if len(d) > 2 else "c0")
    for m, r in drained:
        h.drain(m, r)
    return h


def test_check_everything_delivered_once_is_ok():
    r = check(history(confirmed=["p0-0", "p0-1"],
                      deliveries=[("p0-0", False), ("p0-1", False)]))
    assert r.ok, r
    assert (r.confirmed, r.delivered, r.deliveries, r.redeliveries) == (2, 2, 2, 0)
    assert str(r).startswith("OK")


def test_check_finds_a_confirmed_message_that_never_arrived():
    r = check(history(confirmed=["p0-0", "p0-1", "p0-10", "p0-9"],
                      deliveries=[("p0-0", False)], drained=[("p0-10", False)]))
    assert not r.ok
    assert r.lost == ["p0-1", "p0-9"]
    assert "lost (confirmed, never delivered): 2" in str(r)


def test_check_counts_drained_messages_as_delivered():
    r = check(history(confirmed=["p0-0", "p0-1"], deliveries=[("p0-0", False)],
                      drained=[("p0-1", False)]))
    assert r.ok, r


def test_check_unconfirmed_messages_may_arrive_or_not():
    r = check(history(confirmed=["p0-0"], attempted=["p0-1", "p0-2"],
                      deliveries=[("p0-0", False), ("p0-1", False)]))
    assert r.ok, r
    assert r.unconfirmed_seen == 1


def test_check_accepts_flagged_redeliveries():
    r = check(history(confirmed=["p0-0", "p1-0"],
                      deliveries=[("p0-0", False, "c0"), ("p0-0", True, "c1"),
                                  ("p1-0", True, "c1"),      # first delivery lost in transit
                                  ("p0-0", True, "c0")],
                      drained=[("p1-0", True)]))
    assert r.ok, r
    assert r.redeliveries == 4


def test_check_accepts_a_redelivery_recorded_before_the_first_delivery():
    # two consumers' records can race; only the count of unflagged ones counts
    r = check(history(confirmed=["p0-0"], deliveries=[("p0-0", True, "c1"),
                                                      ("p0-0", False, "c0")]))
    assert r.ok, r


def test_check_finds_an_unflagged_duplicate():
    r = check(history(confirmed=["p0-0", "p0-1"], attempted=["p0-2"],
                      deliveries=[("p0-0", False, "c0"), ("p0-0", False, "c1"),
                                  ("p0-1", False, "c0"), ("p0-2", False, "c0")],
                      drained=[("p0-2", False)]))
    assert not r.ok
    assert r.duplicates == {"p0-0": [(False, "c0"), (False, "c1")],
                            "p0-2": [(False, "c0"), (False, "drain")]}
    assert r.lost == []
    assert "without redelivered: 2" in str(r)


def test_check_finds_messages_nobody_published():
    r = check(history(confirmed=["p0-0"], deliveries=[("p0-0", False), ("zz-1", False),
                                                      (None, False)]))
    assert not r.ok
    assert set(r.unknown) == {None, "zz-1"}


def test_check_of_an_empty_history_is_ok():
    assert check(History()).ok


# --------------------------------------------------------------------------
# the workload's clients, against one ordinary broker (no faults)

@pytest.mark.deadline(60)
def test_workload_against_a_single_broker(broker):
    nodes = [broker.pika_params()]
    queue = "jepsen.%d" % os.getpid()
    w = Workload(nodes, queue, publishers=2, consumers=2).start()
    try:
        wait_until(lambda: w.confirmed() >= 300, 30, "300 confirmed publishes")
    finally:
        w.stop()
    w.drain(timeout=20)
    r = w.check()
    assert r.ok, r
    assert r.confirmed >= 300 and r.delivered >= r.confirmed
    with broker.pika() as c:
        c.channel().queue_delete(queue)


# --------------------------------------------------------------------------
# SluicedNode, standalone (cluster mode is not there yet)

@pytest.mark.deadline(90)
def test_sluiced_node_in_a_namespace(net):
    """start, api, pika_params, sigstop/sigcont, kill9 and restart on the data
    dir, as the cluster tests will use them -- without the cluster flags."""
    import pika
    from cluster_net import SluicedNode
    from conftest import amqp_answers
    n = SluicedNode(net, 2, None).start()
    assert isinstance(n.api("/api/overview"), dict)
    wait_until(lambda: amqp_answers(n.host, n.AMQP_PORT), 10, "AMQP on node 2")
    with pika.BlockingConnection(n.pika_params()) as c:
        ch = c.channel()
        ch.confirm_delivery()
        ch.queue_declare("kept", durable=True)
        ch.basic_publish("", "kept", b"m", pika.BasicProperties(delivery_mode=2))
    n.sigstop()
    with pytest.raises(OSError):
        n.api("/api/overview", timeout=0.5)
    n.sigcont()
    wait_until(lambda: n.api("/api/overview"), 10, "sluiced to answer after SIGCONT")
    n.kill9()
    assert not n.alive()
    n.restart()
    wait_until(lambda: amqp_answers(n.host, n.AMQP_PORT), 10, "AMQP on node 2 after restart")
    with pika.BlockingConnection(n.pika_params()) as c:
        method, _, body = c.channel().basic_get("kept", auto_ack=True)
        assert body == b"m", "the data dir survives restart()"
    assert n.stop() == 0
    assert "==== start" in n.log_tail()


@pytest.mark.deadline(90)
def test_workload_clients_move_on_to_the_next_node(net):
    """Publishers and consumers skip a node that refuses connections and
    come back after the broker is killed and restarted; the checker finds
    nothing lost and no unflagged duplicate (one standalone sluiced: its store
    must keep confirmed messages and mark what it redelivers)."""
    from cluster_net import SluicedNode, pika_params
    from conftest import amqp_answers
    n = SluicedNode(net, 2, None).start()
    wait_until(lambda: amqp_answers(n.host, n.AMQP_PORT), 10, "AMQP on node 2")
    nodes = [pika_params(net.addr(1)), n.pika_params()]    # nothing listens on node 1
    w = Workload(nodes, "jepsen.failover", publishers=2, consumers=2,
                 reconnect_timeout=20).start()
    delivered = lambda: len(w.history.deliveries)
    try:
        wait_until(lambda: w.confirmed() >= 300 and delivered() >= 100, 20,
                   "300 confirmed publishes and 100 deliveries")
        n.kill9()
        confirmed, deliveries = w.confirmed(), delivered()
        n.restart()
        wait_until(lambda: w.confirmed() >= confirmed + 300 and delivered() >= deliveries + 100,
                   30, "300 more confirmed publishes and 100 more deliveries after the restart")
    finally:
        w.stop()
    w.drain(timeout=20)
    r = w.check()
    assert r.ok, r
    clients = w.publishers + w.consumers
    assert all(c.connects >= 2 for c in clients), [(c.name, c.connects) for c in clients]
    assert any("connect %s:5672" % net.addr(1) in e for _, e in w.history.errors)
