#!/usr/bin/python3
"""Stream replay (issue 15, item 1): Sluice, RabbitMQ and LavinMQ in one run.

For each broker, freshly started (so its peak RSS is this run's alone):
1 producer publishes N messages with confirms into a stream
(`x-queue-type: stream`), then 10 consumers each replay the whole stream
from `x-stream-offset: first` (prefetch 1000, an ack with multiple=true
every 100). Printed per broker: the publish rate (confirmed msg/s), the
aggregate read rate (deliveries/s over all readers), the broker's peak RSS
during the run and its CPU per delivery. The load tool is sluice-perf
(`--stream --backlog N`), the same against every broker.

  tests/bench/stream_replay.py [--messages 10000000] [--consumers 10] [--size 64]
                               [--brokers sluice,rabbitmq,lavinmq] [--sluiced PATH] [--perf PATH]
                               [--lavinmq PATH] [--timeout 3600]

A broker without streams is reported as such: one that refuses the declare
fails, and LavinMQ 1.1.5 (which ignores x-queue-type and makes a classic
queue, whose 10 consumers share the messages) shows deliveries missing and
"(no stream)". Not a test: it prints numbers.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import side_by_side as sbs  # noqa: E402  (the brokers: start, stop, version)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluiced", default=os.path.join(sbs.ROOT, "build/release/cli/sluiced"))
    ap.add_argument("--perf", default=os.path.join(sbs.ROOT, "build/release/cli/sluice-perf"))
    ap.add_argument("--lavinmq", default=sbs.LAVINMQ_BIN)
    ap.add_argument("--brokers", default="sluice,rabbitmq,lavinmq")
    ap.add_argument("--messages", type=int, default=10_000_000, help="messages in the stream")
    ap.add_argument("--consumers", type=int, default=10, help="readers, each from `first`")
    ap.add_argument("--size", type=int, default=64, help="body bytes")
    ap.add_argument("--timeout", type=int, default=3600, help="per broker, seconds")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="sluice-stream-bench-")
    brokers = sbs.pick_brokers(args.brokers, args.sluiced, args.lavinmq, work, ap.error)
    extra = ["--stream", "--backlog", str(args.messages), "--producers", "1", "--consumers", str(args.consumers),
             "--prefetch", "1000", "--multi-ack-every", "100", "--confirm", "1000", "--size", str(args.size)]
    results = {}
    try:
        print("machine: %d cores, %s, %s; %d messages of %d B, %d readers from first"
              % (os.cpu_count(), os.uname().release, time.strftime("%Y-%m-%d %H:%M %Z"), args.messages,
                 args.size, args.consumers), flush=True)
        for b in brokers:
            b.start()
            print("%s (%s) ..." % (b.name, b.version()), flush=True)
            res = sbs.perf(args, b, extra)
            results[b.name] = res
            if res is not None and res["missing"]:
                # Every reader must read every message; a broker without
                # streams treats the queue as a classic one whose consumers
                # share the messages (LavinMQ 1.1.5 ignores x-queue-type).
                print("  NOT A STREAM: %d of %d deliveries missing (the readers shared the messages)"
                      % (res["missing"], args.messages * args.consumers), flush=True)
            if res is not None:
                print("  publish %s msg/s, read %s msg/s (all readers), peak RSS %s MiB, %s µs CPU/delivery, "
                      "missing %d" % (sbs.fmt(res["fill_rate"]), sbs.fmt(res["drain_rate"]),
                                      sbs.fmt((res["broker_peak_rss_kib"] or 0) / 1024),
                                      res["broker_cpu_us_per_msg"], res["missing"]), flush=True)
            b.stop()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        for b in brokers:
            try:
                b.stop()
            except Exception as e:
                print("stopping %s: %s" % (b.name, e))
        shutil.rmtree(work, ignore_errors=True)

    names = [b.name for b in brokers]
    rows = [("publish msg/s (confirmed)", lambda r: r["fill_rate"]),
            ("aggregate read msg/s", lambda r: r["drain_rate"]),
            ("peak RSS MiB", lambda r: (r["broker_peak_rss_kib"] or 0) / 1024),
            ("broker CPU µs/delivery", lambda r: r["broker_cpu_us_per_msg"]),
            ("deliveries missing", lambda r: r["missing"])]
    print()
    print("%-28s" % "stream replay" + "".join("%16s" % n for n in names))
    for label, get in rows:
        line = "%-28s" % label
        for n in names:
            r = results.get(n)
            if not r:
                cell = "refused/failed"
            elif r["missing"] and label != "deliveries missing":
                cell = "(no stream)"
            else:
                v = get(r)
                cell = "{:,}".format(v) if isinstance(v, int) else sbs.fmt(v)
            line += "%16s" % cell
        print(line)
    print(json.dumps({"messages": args.messages, "size": args.size, "consumers": args.consumers,
                      "results": results}))


if __name__ == "__main__":
    main()
