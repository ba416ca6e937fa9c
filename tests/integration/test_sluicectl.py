"""sluicectl, the admin CLI, against a running sluiced: status, lists with
--json and --columns and aligned tables, declare/delete of queues, exchanges
and bindings, publish (body from an argument, --body or stdin; properties)
and get with each ack mode, purge.

Help, errors, settings, connections, definitions, users and vhosts:
test_sluicectl_admin.py.
"""

import base64
import re

from conftest import unique
from sluicectl_run import column_cells, ctl, fails, ok, queue_info


# --------------------------------------------------------------------------
# status, lists, tables

def test_status_and_overview(broker):
    name = unique("ctl-st")
    ok(broker, "declare", "queue", name)
    ok(broker, "publish", "--routing-key", name, "x")
    for cmd in ("status", "overview"):
        r = ok(broker, cmd)
        pairs = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in r.out.splitlines())
        assert pairs["node"].startswith("sluice@")
        assert pairs["version"].startswith("Sluice ")
        assert int(pairs["queues"]) >= 1 and int(pairs["exchanges"]) >= 6
        assert re.fullmatch(r"\d+ \(ready \d+, unacknowledged \d+\)", pairs["messages"])
        assert int(pairs["messages"].split()[0]) >= 1
        assert re.fullmatch(r"\d+ \(\d+\.\d/s\)", pairs["published"])
        assert pairs["alarms"] == "none"
        assert re.fullmatch(r"\d+ of \d+", pairs["file descriptors"])
        j = ok(broker, cmd, "--json").json
        assert j["object_totals"]["queues"] == int(pairs["queues"])
    ok(broker, "delete", "queue", name)


def test_declare_list_delete_queue(broker):
    name = unique("ctl-q")
    r = ok(broker, "declare", "queue", name)
    assert r.out == "declared queue '%s' in vhost '/'\n" % name
    r = ok(broker, "declare", "queue", name)
    assert r.out == "queue '%s' already exists in vhost '/'\n" % name
    # a different setting for the same name is the broker's 406-like refusal
    fails(ctl(broker, "declare", "queue", name, "--no-durable"), 1, r"400 Bad Request: .*inequivalent arg 'durable'")
    other = unique("ctl-q")
    ok(broker, "declare", "queue", other, "--no-durable", "--auto-delete",
       "--arguments", '{"x-max-length": 5}')
    q = queue_info(broker, other)
    assert q["durable"] is False and q["auto_delete"] is True and q["arguments"] == {"x-max-length": 5}
    assert queue_info(broker, name)["durable"] is True

    header, rows = column_cells(ok(broker, "list", "queues").out)
    assert header == ["vhost", "name", "durable", "auto_delete", "messages", "messages_ready",
                      "messages_unacknowledged", "consumers"]
    mine = {row[1]: row for row in rows}
    assert mine[name][:5] == ["/", name, "true", "false", "0"]
    assert mine[other][2:4] == ["false", "true"]

    assert ok(broker, "delete", "queue", name).out == "deleted queue '%s' in vhost '/'\n" % name
    ok(broker, "delete", "queue", other)
    assert queue_info(broker, name) is None and queue_info(broker, other) is None


def test_table_columns_align_with_long_and_unicode_names(broker):
    names = [unique("ctl-a"), unique("ctl-much-longer-name-here"), unique("ctl-ünïcødé-ñame")]
    for i, n in enumerate(names):
        ok(broker, "declare", "queue", n)
        for _ in range(i * 11):
            ok(broker, "publish", "--routing-key", n, "m")
    r = ok(broker, "list", "queues", "--columns", "name,messages,durable")
    header, rows = column_cells(r.out)
    assert header == ["name", "messages", "durable"]
    got = {row[0]: row for row in rows}
    for i, n in enumerate(names):
        assert got[n] == [n, str(i * 11), "true"], got[n]
    # --no-headers leaves out the header line (the columns fit the cells alone)
    r2 = ok(broker, "list", "queues", "--columns", "name,messages,durable", "--no-headers")
    cells = lambda out: [re.split(r" {2,}", line) for line in out.splitlines()]
    assert cells(r2.out) == cells(r.out)[1:]
    for n in names:
        ok(broker, "delete", "queue", n)


def test_json_and_columns(broker):
    name = unique("ctl-j")
    ok(broker, "declare", "queue", name)
    ok(broker, "publish", "--routing-key", name, "one")
    rows = ok(broker, "list", "queues", "--json").json
    assert isinstance(rows, list)
    q = [x for x in rows if x["name"] == name][0]
    assert q["messages"] == 1 and q["vhost"] == "/" and "message_stats" in q
    # --columns with --json: only those fields, nesting kept (RabbitMQ's ?columns=)
    rows = ok(broker, "list", "queues", "--json", "--columns", "name,message_stats.publish").json
    q = [x for x in rows if x["name"] == name][0]
    assert q == {"name": name, "message_stats": {"publish": 1}}
    # a dotted column in a table
    header, rows = column_cells(ok(broker, "list", "queues", "--columns", "name,message_stats.publish").out)
    assert header == ["name", "message_stats.publish"]
    assert [name, "1"] in rows
    # --vhost narrows a list to that vhost; an unknown one is a 404
    assert any(x["name"] == name for x in ok(broker, "list", "queues", "--json", "--vhost", "/").json)
    fails(ctl(broker, "list", "queues", "--vhost", "no-such-vhost"), 1, r"404 Not Found: no vhost 'no-such-vhost'")
    for kind in ("exchanges", "bindings", "connections", "channels", "consumers", "users", "vhosts", "permissions"):
        assert isinstance(ok(broker, "list", kind, "--json").json, list), kind
    assert ["guest", "administrator"] in column_cells(ok(broker, "list", "users").out)[1]
    assert "/" in [row[0] for row in column_cells(ok(broker, "list", "vhosts").out)[1]]
    ok(broker, "delete", "queue", name)


# --------------------------------------------------------------------------
# exchanges, bindings, publish, get

def test_exchange_binding_publish_round_trip(broker):
    ex, q = unique("ctl-x"), unique("ctl-bq")
    assert ok(broker, "declare", "exchange", ex, "--type", "topic").out == \
        "declared exchange '%s' in vhost '/'\n" % ex
    ok(broker, "declare", "queue", q)
    r = ok(broker, "declare", "binding", "--source", ex, "--destination", q, "--routing-key", "order.*")
    assert r.out == "bound queue '%s' to exchange '%s' with routing key 'order.*' in vhost '/'\n" % (q, ex)
    exchanges = {row[1]: row for row in column_cells(ok(broker, "list", "exchanges").out)[1]}
    assert exchanges[ex][2:4] == ["topic", "true"]
    bindings = column_cells(ok(broker, "list", "bindings", "--vhost", "/").out)[1]
    assert ["/", ex, q, "queue", "order.*"] in bindings

    assert ok(broker, "publish", "--exchange", ex, "--routing-key", "order.new", "hello").out == \
        "published 5 bytes, routed\n"
    r = ok(broker, "publish", "--exchange", ex, "--routing-key", "invoice.new", "x", "--json")
    assert r.json == {"routed": False}
    fails(ctl(broker, "publish", "--exchange", ex, "--routing-key", "invoice.new", "--mandatory", "x"), 1,
          r"the message was not routed")
    header, rows = column_cells(ok(broker, "get", q).out)
    assert header == ["exchange", "routing_key", "redelivered", "message_count", "payload_bytes", "payload"]
    assert rows == [[ex, "order.new", "false", "0", "5", "hello"]]

    r = ok(broker, "delete", "binding", "--source", ex, "--destination", q, "--routing-key", "order.*")
    assert r.out.startswith("unbound queue '%s'" % q)
    assert ["/", ex, q, "queue", "order.*"] not in column_cells(ok(broker, "list", "bindings").out)[1]
    assert ok(broker, "publish", "--exchange", ex, "--routing-key", "order.new", "x", "--json").json == \
        {"routed": False}
    fails(ctl(broker, "delete", "binding", "--source", ex, "--destination", q, "--routing-key", "order.*"), 1,
          r"no binding of queue '%s' to exchange '%s'" % (re.escape(q), re.escape(ex)))
    ok(broker, "delete", "exchange", ex)
    fails(ctl(broker, "delete", "exchange", ex), 1, r"404 Not Found: no exchange '%s' in vhost '/'" % re.escape(ex))
    ok(broker, "delete", "queue", q)


def test_binding_with_arguments_and_exchange_to_exchange(broker):
    hx, fx, q = unique("ctl-h"), unique("ctl-f"), unique("ctl-hq")
    ok(broker, "declare", "exchange", hx, "--type", "headers")
    ok(broker, "declare", "exchange", fx, "--type", "fanout", "--no-durable")
    ok(broker, "declare", "queue", q)
    args = '{"x-match": "all", "kind": "a"}'
    ok(broker, "declare", "binding", "--source", hx, "--destination", q, "--arguments", args)
    ok(broker, "declare", "binding", "--source", fx, "--destination", hx, "--destination-type", "exchange")
    # fanout → headers → queue, matched on the header
    assert ok(broker, "publish", "--exchange", fx, "--header", "kind=a", "m1", "--json").json == {"routed": True}
    assert ok(broker, "publish", "--exchange", fx, "--header", "kind=b", "m2", "--json").json == {"routed": False}
    # the same key with other arguments is another binding
    fails(ctl(broker, "delete", "binding", "--source", hx, "--destination", q, "--arguments", '{"x-match": "any"}'),
          1, r"no binding of queue")
    ok(broker, "delete", "binding", "--source", hx, "--destination", q, "--arguments", args)
    # or name it by the properties_key the API lists
    props = [b["properties_key"] for b in ok(broker, "list", "bindings", "--json").json
             if b["source"] == fx and b["destination"] == hx]
    assert len(props) == 1
    r = ok(broker, "delete", "binding", "--source", fx, "--destination", hx, "--destination-type", "exchange",
           "--properties-key", props[0])
    assert r.out == "unbound exchange '%s' from exchange '%s' (properties key '%s') in vhost '/'\n" % (hx, fx, props[0])
    assert ok(broker, "publish", "--exchange", fx, "--header", "kind=a", "m3", "--json").json == {"routed": False}
    for cmd in (("exchange", fx), ("exchange", hx), ("queue", q)):
        ok(broker, "delete", *cmd)


def test_publish_body_sources_and_properties(broker):
    q = unique("ctl-pub")
    ok(broker, "declare", "queue", q)
    ok(broker, "publish", "--routing-key", q, input=b"from stdin\nline two\n")
    ok(broker, "publish", "--routing-key", q, "-", input=b"dash reads stdin")
    ok(broker, "publish", "--routing-key", q, "--body", "from --body", "--persistent", "--content-type", "text/plain",
       "--header", "a=1", "--header", "b=two", "--properties", '{"priority": 3, "correlation_id": "c-1"}')
    binary = bytes(range(256))
    ok(broker, "publish", "--routing-key", q, input=binary)
    fails(ctl(broker, "publish", "--routing-key", q, "--body", "x", "y"), 2, r"give the body either")
    fails(ctl(broker, "publish", "--routing-key", q, "--header", "novalue", "x"), 2, r"--header takes KEY=VALUE")

    msgs = ok(broker, "get", q, "--count", "10", "--json").json
    assert [m["payload"] for m in msgs[:3]] == ["from stdin\nline two\n", "dash reads stdin", "from --body"]
    props = msgs[2]["properties"]
    assert props["delivery_mode"] == 2 and props["content_type"] == "text/plain"
    assert props["headers"] == {"a": "1", "b": "two"}
    assert props["priority"] == 3 and props["correlation_id"] == "c-1"
    assert msgs[3]["payload_encoding"] == "base64" and base64.b64decode(msgs[3]["payload"]) == binary
    # the table escapes control characters so a row stays on one line
    rows = column_cells(ok(broker, "get", q, "--count", "1").out)[1]
    assert rows[0][-1] == "from stdin\\nline two\\n"
    # --body-only writes the bodies themselves, binary included
    r = ok(broker, "get", q, "--count", "10", "--body-only", "--ackmode", "ack")
    assert r.raw == b"from stdin\nline two\n\ndash reads stdin\nfrom --body\n" + binary + b"\n"
    assert queue_info(broker, q)["messages"] == 0
    fails(ctl(broker, "publish", "--exchange", unique("nope"), "x"), 1, r"404 Not Found: no exchange")
    ok(broker, "delete", "queue", q)


def test_get_ack_modes(broker):
    q = unique("ctl-get")
    ok(broker, "declare", "queue", q)
    for i in range(4):
        ok(broker, "publish", "--routing-key", q, "m%d" % i)
    # default: look, and leave them queued
    assert [m["payload"] for m in ok(broker, "get", q, "--count", "2", "--json").json] == ["m0", "m1"]
    assert queue_info(broker, q)["messages"] == 4
    # ack: they are gone
    assert [m["payload"] for m in ok(broker, "get", q, "--count", "2", "--ackmode", "ack", "--json").json] == \
        ["m0", "m1"]
    assert queue_info(broker, q)["messages"] == 2
    # reject-requeue: back, and redelivered next time
    assert len(ok(broker, "get", q, "--ackmode", "reject-requeue", "--json").json) == 1
    m = ok(broker, "get", q, "--ackmode", "ack_requeue_false", "--json").json[0]
    assert m["payload"] == "m2" and m["redelivered"] is True
    # reject: dropped
    ok(broker, "get", q, "--ackmode", "reject")
    assert queue_info(broker, q)["messages"] == 0
    # an empty queue: just the header
    assert ok(broker, "get", q).out.splitlines() == \
        ["exchange  routing_key  redelivered  message_count  payload_bytes  payload"]
    fails(ctl(broker, "get", unique("nope")), 1, r"404 Not Found: no queue '.*' in vhost '/'$")
    ok(broker, "delete", "queue", q)


def test_purge_queue(broker):
    q = unique("ctl-purge")
    ok(broker, "declare", "queue", q)
    for _ in range(3):
        ok(broker, "publish", "--routing-key", q, "--persistent", "x")
    assert queue_info(broker, q)["messages"] == 3
    assert ok(broker, "purge", "queue", q).out == "purged queue '%s' in vhost '/'\n" % q
    assert queue_info(broker, q)["messages"] == 0
    fails(ctl(broker, "purge", "queue", unique("nope")), 1, r"404 Not Found: no queue")
    ok(broker, "publish", "--routing-key", q, "x")
    fails(ctl(broker, "delete", "queue", q, "--if-empty"), 1, r"400 Bad Request: queue '.*' is not empty")
    ok(broker, "delete", "queue", q)
