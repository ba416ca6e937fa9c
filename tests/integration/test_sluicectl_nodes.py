"""sluicectl nodes: one row per node of /api/nodes.  Outside cluster mode one
"standalone" row; against a loopback cluster (test_cluster.py's etcd and
three sluiced) three rows, one leader, and a stuck follower's in_sync turning
"no" while the leader goes on confirming.
"""

import os
import signal

import pytest

from conftest import unique, wait_for
from sluicectl_run import column_cells, ok, run
import test_cluster
from test_cluster import cluster, publish_confirmed  # noqa: F401 - cluster is a fixture

COLUMNS = ["id", "role", "in_sync", "state", "log_index", "lag_batches", "lag_bytes", "lag_ms", "address"]


def nodes_table(node):
    r = run("--url", "http://127.0.0.1:%d" % node.http_port, "nodes")
    assert r.code == 0 and r.err == "", r
    header, rows = column_cells(r.out)
    assert header == COLUMNS, r.out
    return {row[0]: dict(zip(COLUMNS, row)) for row in rows}


@pytest.fixture
def long_lease_cluster(monkeypatch, request):
    """test_cluster's cluster with a 10 s lease: a stopped follower leaves
    the ISR after the lag bound (1 s) but stays listed (its lease alive) long
    enough to be seen out of sync; once its lease is gone and it is out of
    the ISR, /api/nodes no longer lists it."""
    monkeypatch.setattr(test_cluster, "LEASE_TTL", 10)
    return request.getfixturevalue("cluster")


def out_of_sync_row(node, node_id):
    row = nodes_table(node).get(node_id)
    return row if row and row["in_sync"] == "no" else None


def test_a_single_node_is_one_standalone_row(broker):
    header, rows = column_cells(ok(broker, "nodes").out)
    assert header == COLUMNS
    assert len(rows) == 1, rows
    row = dict(zip(COLUMNS, rows[0]))
    assert row["id"].startswith(("sluice@", "rabbit@")) and row["role"] == "standalone", row
    assert all(row[c] == "-" for c in COLUMNS[2:]), row
    # --no-headers: the row alone; --json: the API's answer as it is
    assert ok(broker, "nodes", "--no-headers").out.count("\n") == 1
    j = ok(broker, "nodes", "--json").json
    assert isinstance(j, list) and len(j) == 1 and "role" not in j[0]


@pytest.mark.deadline(120)
def test_a_cluster_shows_every_node_and_a_stuck_follower_falls_out_of_sync(long_lease_cluster):
    cluster = long_lease_cluster
    leader = cluster.leader()
    table = nodes_table(leader)
    assert sorted(table) == ["n1", "n2", "n3"], table
    assert [r["role"] for r in table.values()].count("leader") == 1, table
    assert table[leader.node_id]["role"] == "leader"
    for n in cluster.nodes:
        row = table[n.node_id]
        assert row["in_sync"] == "yes", table
        assert row["address"] == "127.0.0.1:%d" % n.port, row
        assert int(row["log_index"]) >= 0 and int(row["lag_ms"]) >= 0
        if n is not leader:
            assert row["role"] == "follower" and row["state"] == "streaming", row
    # Through a follower the table is the same (its HTTP goes to the leader).
    follower = next(n for n in cluster.nodes if n is not leader)
    assert sorted(nodes_table(follower)) == ["n1", "n2", "n3"]

    stuck = next(n for n in cluster.nodes if n is not leader)
    q = unique("ctl-stuck")
    os.kill(stuck.proc.pid, signal.SIGSTOP)
    try:
        publish_confirmed(leader, q, [b"%d" % i for i in range(20)])
        row = wait_for(lambda: out_of_sync_row(leader, stuck.node_id), 8, interval=0.1,
                       what="sluicectl nodes to show the stuck follower out of sync")
        assert row["role"] == "follower", row
        table = nodes_table(leader)
        assert table[leader.node_id]["in_sync"] == "yes", table
    finally:
        os.kill(stuck.proc.pid, signal.SIGCONT)
    wait_for(lambda: nodes_table(leader).get(stuck.node_id, {}).get("in_sync") == "yes", 30, interval=0.1,
             what="the follower back in sync")
