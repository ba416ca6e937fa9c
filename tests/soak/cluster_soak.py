#!/usr/bin/python3
"""Cluster soak: random Jepsen-style faults on one 3-node cluster for N
minutes, every round checked for lost confirms and unflagged duplicates.

    sudo tests/soak/cluster_soak.py --minutes 5
    sudo tests/soak/cluster_soak.py --minutes 30 --seed 7 --disk enospc \\
        --sluiced build/release/cli/sluiced --sluice-perf build/release/cli/sluice-perf

Needs what tests/integration/test_cluster_jepsen.py needs (root, iproute2,
etcd-server, nftables, e2fsprogs, loop devices).  It starts 3 etcd members
and 3 sluiced (--cluster-lease-ttl, default 3) in 3 network namespaces, each
data dir on its own loop-mounted ext4, and then, round after round until the
time is up: a fresh Workload (3 publishers with confirms, 2 consumers with
manual acks, over all three nodes) on its own queue, one fault picked at
random, the same fault functions and assertions as the tests:

  kill9       kill -9 the leader; restart it; it rejoins in sync
  sigstop     SIGSTOP the leader past its lease; SIGCONT; it steps down
  partition   the leader cut off from the majority; heal; it rejoins
  disk-alarm  (--disk alarm) the leader's disk under --disk-free-limit:
              publishers blocked, same leader once space is back
  enospc      (--disk enospc: --disk-free-limit 0) the leader's disk full to
              the last block: it exits 75, a new leader serves, it rejoins
  load        sluice-perf through the leader and a follower: no election

then stop, drain, check().  One line per round; at the end a JSON summary.
Exit status 0 if every round's check held and every fault recovered as
promised; otherwise the nodes' logs are copied to a directory it names.
"""

import argparse
import collections
import functools
import json
import os
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--sluiced", default=os.path.join(REPO, "build", "release", "cli", "sluiced"))
    ap.add_argument("--sluice-perf",
                    default=os.path.join(REPO, "build", "release", "cli", "sluice-perf"))
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    ap.add_argument("--lease-ttl", type=int, default=3)
    ap.add_argument("--disk", choices=("alarm", "enospc"), default="alarm",
                    help="the disk fault: under --disk-free-limit (alarm), or full with no "
                         "alarm (enospc)")
    ap.add_argument("--faults", help="comma-separated subset (default: all that apply)")
    ap.add_argument("--load-seconds", type=int, default=10)
    ap.add_argument("--disk-mib", type=int, default=192)
    args = ap.parse_args()
    for exe in (args.sluiced, args.sluice_perf):
        if not os.access(exe, os.X_OK):
            ap.error("not an executable: %s" % exe)
    os.environ["SLUICED"] = os.path.abspath(args.sluiced)
    os.environ["SLUICE_PERF"] = os.path.abspath(args.sluice_perf)

    import logging
    logging.getLogger("pika").setLevel(logging.CRITICAL)   # every failover is a pika error
    import cluster_net
    import test_cluster_jepsen as tj
    from jepsen_check import check

    ok, why = cluster_net.can_use_netns()
    if not ok:
        sys.exit("cluster_soak: " + why)

    faults = dict(tj.FAULTS)
    faults["load"] = functools.partial(tj.fault_load, seconds=args.load_seconds)
    faults.pop("enospc" if args.disk == "alarm" else "disk-alarm")
    if args.faults:
        wanted = args.faults.split(",")
        unknown = [f for f in wanted if f not in faults]
        if unknown:
            ap.error("unknown faults %s (choose from %s)" % (unknown, sorted(faults)))
        faults = {k: v for k, v in faults.items() if k in wanted}
    names = sorted(faults)
    limit = tj.DISK_FREE_LIMIT if args.disk == "alarm" else 0
    rng = random.Random(args.seed)
    print("cluster_soak: %.1f minutes, seed %d, lease %d s, faults %s, %s"
          % (args.minutes, args.seed, args.lease_ttl, ",".join(names), args.sluiced), flush=True)

    rounds = []
    totals = collections.Counter()
    kept = None
    t_start = time.monotonic()
    with tj.loop_disks(mib=args.disk_mib) as mounts:
        with tj.JepsenCluster(lease_ttl=args.lease_ttl, data_dirs=tj.data_dirs(mounts),
                              extra_args=["--disk-free-limit", str(limit)]) as c:
            end = time.monotonic() + args.minutes * 60
            k = 0
            while time.monotonic() < end:
                k += 1
                name = rng.choice(names)
                t0 = time.monotonic()
                try:
                    repair = restore(c, mounts, tj)
                except AssertionError as e:
                    print("round %3d: the cluster did not settle before it: %s" % (k, e),
                          flush=True)
                    rounds.append({"round": k, "fault": "(settle)", "check_ok": True,
                                   "fault_ok": False, "confirmed": 0, "delivered": 0,
                                   "redeliveries": 0, "lost": 0, "duplicates": 0, "unknown": 0,
                                   "error": "no settled cluster: %s" % e})
                    kept = keep_logs(c, kept)
                    break
                leader = c.leader_entry() or {}
                queue = "soak.r%d" % k
                w = tj.workload(c, queue)
                what, error = "", None
                try:
                    tj.wait_progress(w, 30, "before the fault")
                    what = faults[name](c, w, mounts)
                    tj.wait_progress(w, 30, "after the fault")
                except Exception as e:          # noqa: BLE001 - a failed promise: report it
                    error = "%s: %s" % (type(e).__name__, str(e).splitlines()[0][:300])
                try:
                    w.stop(timeout=40)
                except AssertionError as e:
                    error = error or "clients: %s" % str(e)[:300]
                try:
                    w.drain(timeout=60)
                except AssertionError as e:
                    error = error or "drain: %s" % str(e)[:300]
                r = check(w.history)
                tj.purge(c, queue)
                row = {"round": k, "fault": name, "seconds": round(time.monotonic() - t0, 1),
                       "leader_before": "%s@%s" % (leader.get("node_id"), leader.get("epoch")),
                       "check_ok": r.ok, "fault_ok": error is None,
                       "confirmed": r.confirmed, "delivered": r.delivered,
                       "redeliveries": r.redeliveries, "unconfirmed_seen": r.unconfirmed_seen,
                       "lost": len(r.lost), "duplicates": len(r.duplicates),
                       "unknown": len(r.unknown), "what": what, "error": error,
                       "repair": repair}
                rounds.append(row)
                totals[name] += 1
                print("round %3d %-10s %5.1fs %s confirmed %6d delivered %6d redelivered %4d "
                      "lost %d dup %d | %s%s"
                      % (k, name, row["seconds"],
                         "OK  " if r.ok and error is None else "FAIL",
                         r.confirmed, r.delivered, r.redeliveries, len(r.lost),
                         len(r.duplicates), what or error,
                         (" [repaired: %s]" % repair) if repair else ""), flush=True)
                if not r.ok:
                    print("  check: %s" % str(r).replace("\n", "\n  "), flush=True)
                if not r.ok or error:
                    kept = keep_logs(c, kept)
    failed = [r for r in rounds if not (r["check_ok"] and r["fault_ok"])]
    summary = {
        "minutes": round((time.monotonic() - t_start) / 60, 1),
        "seed": args.seed,
        "lease_ttl": args.lease_ttl,
        "rounds": len(rounds),
        "faults": dict(sorted(totals.items())),
        "rounds_failed": len(failed),
        "check_violations": sum(1 for r in rounds if not r["check_ok"]),
        "faults_not_recovered_as_promised": sum(1 for r in rounds if not r["fault_ok"]),
        "confirmed": sum(r["confirmed"] for r in rounds),
        "delivered_distinct": sum(r["delivered"] for r in rounds),
        "redeliveries": sum(r["redeliveries"] for r in rounds),
        "lost_confirmed": sum(r["lost"] for r in rounds),
        "unflagged_duplicates": sum(r["duplicates"] for r in rounds),
        "phantom": sum(r["unknown"] for r in rounds),
        "ok": not failed,
    }
    print(json.dumps(summary, indent=2), flush=True)
    for r in failed:
        print("cluster_soak: round %d (%s) failed: %s" % (r["round"], r["fault"],
                                                          r["error"] or "check violated"))
    if kept:
        print("cluster_soak: logs kept in %s" % kept)
    return 0 if not failed else 1


def keep_logs(c, kept):
    """Copy every node's and etcd member's log (so far) to `kept` (made if
    None); returns it."""
    kept = kept or tempfile.mkdtemp(prefix="cluster-soak-")
    for n in c.nodes:
        shutil.copy(n.log_path, os.path.join(kept, "%s.log" % n.node_id))
    for i in c.etcd.members:
        shutil.copy(c.etcd.log_path(i), os.path.join(kept, "etcd-m%d.log" % i))
    return kept


def restore(c, mounts, tj):
    """Undo what a failed round may have left (a stopped or dead node, a
    partition, a filler file) and wait for a settled cluster; returns what
    had to be repaired ("" if nothing)."""
    done = []
    c.net.heal_partition()
    for i, mnt in mounts.items():
        filler = os.path.join(mnt, "filler")
        if os.path.exists(filler):
            os.remove(filler)
            done.append("filler n%d" % i)
    for n in c.nodes:
        n.sigcont()
        if not n.alive():
            n.start()
            done.append("restarted " + n.node_id)
    tj.wait_until(c.settled, tj.SETTLE_TIMEOUT * 2, "a settled cluster before the round")
    return ", ".join(done)


if __name__ == "__main__":
    sys.exit(main())
