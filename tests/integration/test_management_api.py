"""The management HTTP API (/api/), modelled on RabbitMQ's: auth, JSON shapes
and values against what real AMQP clients did, declares through the API seen
by AMQP clients, get/publish/purge, force-closing a connection, definitions
export → import on a fresh broker, and hostile requests that must not hurt
the server."""

import base64
import json
import socket
import time

import pika
import pika.exceptions
import pytest

from conftest import unique, wait_for
from mgmt_http import Api, ExtraBroker, api_for, q


@pytest.fixture
def api(broker):
    return api_for(broker)


def publish_n(broker, queue, n, persistent=True, declare=True, **declare_kw):
    c = broker.pika()
    ch = c.channel()
    if declare:
        ch.queue_declare(queue, **({"durable": True} | declare_kw))
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", queue, b"message %d" % i,
                         pika.BasicProperties(delivery_mode=2 if persistent else 1))
    c.close()


# --------------------------------------------------------------------------
# auth

def test_missing_and_wrong_credentials_get_401(api):
    for auth in (None, ("guest", "wrong"), ("nobody", "guest")):
        r = api.get("/api/overview", auth=auth)
        assert r.status == 401, r
        assert r.header("WWW-Authenticate").startswith("Basic ")
        assert r.json["error"] == "not_authorised"
    r = api.get("/api/overview", auth=False, headers={"Authorization": "Basic !!!not-base64"})
    assert r.status == 401
    r = api.get("/api/overview", auth=False, headers={"Authorization": "Bearer abc"})
    assert r.status == 401
    # The dashboard's requests get a scheme browsers do not prompt for.
    r = api.get("/api/overview", auth=None, headers={"X-Requested-With": "XMLHttpRequest"})
    assert r.status == 401 and not r.header("WWW-Authenticate").startswith("Basic ")
    assert api.get("/api/whoami").json == {"name": "guest", "tags": ["administrator"]}


# --------------------------------------------------------------------------
# read-only resources

def test_overview_shape_and_totals(broker, api):
    name = unique("ov")
    before = api.ok("GET", "/api/overview")
    publish_n(broker, name, 3)
    o = api.ok("GET", "/api/overview")
    assert o["product_name"] == "Sluice" and o["product_version"]
    assert o["node"].startswith("sluice@")
    for k in ("connections", "channels", "consumers", "queues", "exchanges"):
        assert isinstance(o["object_totals"][k], int)
    assert o["object_totals"]["queues"] >= 1 and o["object_totals"]["exchanges"] >= 6
    qt = o["queue_totals"]
    assert qt["messages"] == qt["messages_ready"] + qt["messages_unacknowledged"]
    assert qt["messages_ready"] >= 3
    # Values, not shapes: exactly what publish_n did (rates under a known
    # load: test_true_numbers.py).
    assert qt["messages_ready"] - before["queue_totals"]["messages_ready"] == 3
    assert o["object_totals"]["queues"] - before["object_totals"]["queues"] == 1
    assert o["message_stats"]["publish"] - before["message_stats"]["publish"] == 3
    assert o["alarms"] == []


def test_queue_counts_match_what_amqp_did(broker, api):
    name = unique("counts")
    publish_n(broker, name, 25)
    r = api.get("/api/queues/%2F/" + q(name))
    assert r.status == 200, r
    info = r.json
    assert info["name"] == name and info["vhost"] == "/"
    assert info["durable"] is True and info["auto_delete"] is False and info["exclusive"] is False
    assert info["messages"] == 25 and info["messages_ready"] == 25 and info["messages_unacknowledged"] == 0
    assert info["consumers"] == 0 and info["state"] == "running"
    assert info["message_stats"]["publish"] == 25
    assert isinstance(info["memory"], int)

    # A consumer holding 10 unacked deliveries.
    c = broker.pika()
    ch = c.channel()
    ch.basic_qos(prefetch_count=10)
    got = []
    ch.basic_consume(name, lambda ch_, m, p, b: got.append(m.delivery_tag))
    wait_for(lambda: (c.process_data_events(0.05), len(got) >= 10)[1], what="10 deliveries")
    info = api.get("/api/queues/%2F/" + q(name)).json
    assert (info["messages_ready"], info["messages_unacknowledged"], info["messages"]) == (15, 10, 25)
    assert info["consumers"] == 1
    assert info["message_stats"]["deliver_get"] == 10
    ch.basic_ack(got[-1], multiple=True)
    c.process_data_events(0.1)
    wait_for(lambda: api.get("/api/queues/%2F/" + q(name)).json["message_stats"]["ack"] >= 10, what="acks counted")
    c.close()

    listed = [x for x in api.get("/api/queues").json if x["name"] == name]
    assert len(listed) == 1
    assert [x["name"] for x in api.get("/api/queues/%2F").json].count(name) == 1


def test_list_paging_sorting_filtering_and_columns(broker, api):
    prefix = unique("page")
    for i in range(5):
        publish_n(broker, "%s.%d" % (prefix, i), i)
    r = api.get("/api/queues?page=1&page_size=2&name=%s&sort=messages&sort_reverse=true" % prefix).json
    assert r["filtered_count"] == 5 and r["page_count"] == 3 and r["page"] == 1 and r["page_size"] == 2
    assert [x["name"] for x in r["items"]] == ["%s.4" % prefix, "%s.3" % prefix]
    assert r["total_count"] >= 5
    r = api.get("/api/queues?page=3&page_size=2&name=%s&sort=name" % prefix).json
    assert [x["name"] for x in r["items"]] == ["%s.4" % prefix]
    cols = api.get("/api/queues?columns=name,messages,message_stats.publish&name=%s.1" % prefix).json
    assert cols == [{"name": "%s.1" % prefix, "messages": 1, "message_stats": {"publish": 1}}]
    assert api.get("/api/queues?page=9&name=%s" % prefix).status == 400
    assert api.get("/api/queues?page=0").status == 400
    assert api.get("/api/queues?page=1&page_size=100000").status == 400


def test_nodes_vhosts_users_permissions(api):
    nodes = api.ok("GET", "/api/nodes")
    assert len(nodes) == 1 and nodes[0]["running"] is True
    assert nodes[0]["mem_used"] > 0 and nodes[0]["fd_used"] > 0 and nodes[0]["fd_total"] > 0
    assert api.ok("GET", "/api/nodes/" + q(nodes[0]["name"]))["name"] == nodes[0]["name"]
    assert api.get("/api/nodes/rabbit@elsewhere").status == 404
    vhosts = api.ok("GET", "/api/vhosts")
    assert [v["name"] for v in vhosts] == ["/"]
    assert api.ok("GET", "/api/vhosts/%2F")["name"] == "/"
    assert api.get("/api/vhosts/nope").status == 404
    users = api.ok("GET", "/api/users")
    assert [u["name"] for u in users] == ["guest"] and users[0]["tags"] == ["administrator"]
    perms = api.ok("GET", "/api/permissions")
    assert perms == [{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
    exchanges = {e["name"]: e for e in api.ok("GET", "/api/exchanges")}
    assert exchanges["amq.topic"]["type"] == "topic" and exchanges[""]["type"] == "direct"
    assert api.ok("GET", "/api/exchanges/%2F/amq.default")["name"] == ""


def test_health_check_and_aliveness(api):
    r = api.get("/api/health/checks/alarms")
    assert r.status == 200 and r.json == {"status": "ok"}
    r = api.get("/api/aliveness-test/%2F")
    assert r.status == 200 and r.json == {"status": "ok"}
    assert api.get("/api/aliveness-test/nope").status == 404


def test_health_check_reports_the_disk_alarm():
    b = ExtraBroker("--disk-free-limit", str(1 << 60))   # no disk has that much free: alarm at once
    try:
        r = wait_for(lambda: (lambda r: r if r.status == 503 else None)(b.api.get("/api/health/checks/alarms")),
                     timeout=10, what="the disk alarm")
        assert r.json["status"] == "failed"
        assert [a["resource"] for a in r.json["alarms"]] == ["disk"]
        assert b.api.get("/api/overview").json["alarms"][0]["resource"] == "disk"
        assert b.api.get("/api/nodes").json[0]["disk_free_alarm"] is True
    finally:
        assert b.stop() == 0


# --------------------------------------------------------------------------
# declares, deletes, bindings

def test_put_and_delete_queue_as_amqp_sees_it(broker, api):
    name = unique("put")
    path = "/api/queues/%2F/" + q(name)
    r = api.put(path, {"durable": True, "auto_delete": False, "arguments": {"x-max-length": 5}})
    assert r.status == 201, r
    assert api.put(path, {"durable": True, "arguments": {"x-max-length": 5}}).status == 204
    # Inequivalent re-declare: RabbitMQ's 406 PRECONDITION_FAILED → 400.
    r = api.put(path, {"durable": False})
    assert r.status == 400 and "durable" in r.json["reason"]
    info = api.get(path).json
    assert info["arguments"] == {"x-max-length": 5} and info["durable"] is True

    c = broker.pika()
    ch = c.channel()
    ok = ch.queue_declare(name, passive=True)
    assert ok.method.message_count == 0
    for i in range(7):
        ch.basic_publish("", name, b"x")
    c.close()
    # x-max-length 5 (declared through the API) holds the queue at 5.
    wait_for(lambda: api.get(path).json["messages"] == 5, what="the AMQP publishes counted, up to the limit")
    assert api.delete(path).status == 204
    r = api.get(path)
    assert r.status == 404 and r.json["error"] == "Object Not Found"
    assert api.delete(path).status == 404

    assert api.put("/api/queues/%2F/amq.mine", {}).status == 403
    assert api.put("/api/queues/%2F/" + "x" * 256, {}).status == 400
    assert api.put("/api/queues/nope/q1", {}).status == 404


def test_delete_queue_conditions(broker, api):
    name = unique("cond")
    publish_n(broker, name, 1)
    path = "/api/queues/%2F/" + q(name)
    assert api.delete(path + "?if-empty=true").status == 400
    assert api.delete(path + "?if-unused=true").status == 204


def test_exchange_binding_publish_unbind(broker, api):
    ex, qn = unique("ex"), unique("bq")
    epath = "/api/exchanges/%2F/" + q(ex)
    assert api.put(epath, {"type": "topic", "durable": True}).status == 201
    assert api.put(epath, {"type": "topic", "durable": True}).status == 204
    assert api.put(epath, {"type": "fanout", "durable": True}).status == 400
    assert api.put("/api/exchanges/%2F/" + q(unique("x")), {"durable": True}).status == 400   # no type
    assert api.put("/api/exchanges/%2F/" + q(unique("x")), {"type": "nonsense"}).status == 400
    assert api.get(epath).json["type"] == "topic"
    assert api.put("/api/queues/%2F/" + q(qn), {"durable": True}).status == 201

    bpath = "/api/bindings/%%2F/e/%s/q/%s" % (q(ex), q(qn))
    r = api.post(bpath, {"routing_key": "orders.*", "arguments": {}})
    assert r.status == 201, r
    listed = api.get(bpath).json
    assert [(b["source"], b["destination"], b["routing_key"], b["destination_type"]) for b in listed] == \
        [(ex, qn, "orders.*", "queue")]
    props = listed[0]["properties_key"]
    assert r.header("Location") == bpath + "/" + q(props)
    assert api.get(bpath + "/" + q(props)).status == 200
    qb = api.get("/api/queues/%2F/" + q(qn) + "/bindings").json
    assert {b["source"] for b in qb} == {"", ex}
    assert any(b["source"] == ex for b in api.get("/api/bindings").json)
    assert [b["destination"] for b in api.get(epath + "/bindings/source").json] == [qn]

    pub = epath + "/publish"
    r = api.post(pub, {"routing_key": "orders.new", "payload": "hello", "payload_encoding": "string",
                       "properties": {"delivery_mode": 2, "headers": {"a": 1}}})
    assert r.status == 200 and r.json == {"routed": True}
    r = api.post(pub, {"routing_key": "nobody.cares", "payload": "x", "payload_encoding": "string", "properties": {}})
    assert r.json == {"routed": False}
    assert api.get("/api/queues/%2F/" + q(qn)).json["messages"] == 1

    # The message is a real one for AMQP consumers too.
    c = broker.pika()
    ch = c.channel()
    method, props_, body = ch.basic_get(qn, auto_ack=True)
    assert body == b"hello" and props_.delivery_mode == 2 and props_.headers == {"a": 1}
    assert method.routing_key == "orders.new" and method.exchange == ex
    c.close()

    assert api.delete(bpath + "/" + q(props)).status == 204
    assert api.delete(bpath + "/" + q(props)).status == 404
    assert api.post(pub, {"routing_key": "orders.new", "payload": "x"}).json == {"routed": False}
    assert api.post("/api/bindings/%2F/e/nope/q/" + q(qn), {}).status == 404
    assert api.post("/api/bindings/%%2F/e/%s/q/nope" % q(ex), {}).status == 404
    # exchange-to-exchange binding
    ex2 = unique("ex2")
    assert api.put("/api/exchanges/%2F/" + q(ex2), {"type": "fanout"}).status == 201
    assert api.post("/api/bindings/%%2F/e/%s/e/%s" % (q(ex2), q(ex)), {"routing_key": ""}).status == 201
    assert api.post("/api/exchanges/%2F/" + q(ex2) + "/publish",
                    {"routing_key": "orders.x", "payload": "via e2e"}).json == {"routed": False}
    api.post(bpath, {"routing_key": "#"})
    assert api.post("/api/exchanges/%2F/" + q(ex2) + "/publish",
                    {"routing_key": "orders.x", "payload": "via e2e"}).json == {"routed": True}
    assert api.delete(epath).status == 204
    assert api.get(epath).status == 404
    assert api.delete("/api/exchanges/%2F/amq.direct").status == 403


# --------------------------------------------------------------------------
# get, publish, purge

def test_get_with_each_ack_mode(broker, api):
    name = unique("get")
    publish_n(broker, name, 4)
    path = "/api/queues/%2F/" + q(name)
    r = api.post(path + "/get", {"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert r.status == 200, r
    msgs = r.json
    assert [m["payload"] for m in msgs] == ["message 0", "message 1"]
    assert msgs[0]["payload_encoding"] == "string" and msgs[0]["payload_bytes"] == 9
    assert msgs[0]["properties"]["delivery_mode"] == 2 and msgs[0]["redelivered"] is False
    assert msgs[0]["routing_key"] == name and msgs[0]["exchange"] == ""
    assert msgs[1]["message_count"] == 2
    info = api.get(path).json
    assert (info["messages_ready"], info["messages_unacknowledged"]) == (4, 0)

    msgs = api.post(path + "/get", {"count": 1, "ackmode": "reject_requeue_true", "encoding": "base64"}).json
    assert msgs[0]["redelivered"] is True and msgs[0]["payload_encoding"] == "base64"
    assert base64.b64decode(msgs[0]["payload"]) == b"message 0"

    msgs = api.post(path + "/get", {"count": 3, "ackmode": "ack_requeue_false", "encoding": "auto"}).json
    assert [m["payload"] for m in msgs] == ["message 0", "message 1", "message 2"]
    msgs = api.post(path + "/get", {"count": 5, "ackmode": "reject_requeue_false", "encoding": "auto",
                                    "truncate": 3}).json
    assert [m["payload"] for m in msgs] == ["mes"] and msgs[0]["payload_bytes"] == 9
    assert api.post(path + "/get", {"count": 1, "ackmode": "ack_requeue_true"}).json == []
    assert api.get(path).json["messages"] == 0
    assert api.post("/api/queues/%2F/nope/get", {"count": 1, "ackmode": "ack_requeue_true"}).status == 404


def test_binary_payload_and_properties_round_trip(broker, api):
    name = unique("bin")
    assert api.put("/api/queues/%2F/" + q(name), {"durable": False}).status == 201
    payload = bytes(range(256))
    props = {"content_type": "application/octet-stream", "correlation_id": "c-1", "reply_to": "r",
             "message_id": "m-1", "timestamp": 1700000000, "type": "t", "app_id": "tests",
             "priority": 3, "expiration": "60000", "headers": {"s": "v", "n": -5, "f": 1.5, "b": True,
                                                                "l": [1, "two"], "t": {"x": None}}}
    r = api.post("/api/exchanges/%2F/amq.default/publish",
                 {"routing_key": name, "payload": base64.b64encode(payload).decode(),
                  "payload_encoding": "base64", "properties": props})
    assert r.json == {"routed": True}, r
    m = api.post("/api/queues/%2F/" + q(name) + "/get", {"count": 1, "ackmode": "ack_requeue_false"}).json[0]
    assert m["payload_encoding"] == "base64" and base64.b64decode(m["payload"]) == payload
    assert m["properties"] == props
    # user_id must be the authenticated user, as RabbitMQ checks on publish.
    r = api.post("/api/exchanges/%2F/amq.default/publish",
                 {"routing_key": name, "payload": "x", "properties": {"user_id": "mallory"}})
    assert r.status == 400 and "user_id" in r.json["reason"]


def test_http_publish_routes_with_cc_and_bcc_and_strips_bcc(broker, api):
    """The API's publish goes through the same CC/BCC handling as
    basic.publish (issue 16): copies for the CC and BCC keys, BCC not
    delivered; a CC that is not an array is refused."""
    a, b, c = unique("cc.a"), unique("cc.b"), unique("cc.c")
    for n in (a, b, c):
        assert api.put("/api/queues/%2F/" + q(n), {"durable": False}).status == 201
    r = api.post("/api/exchanges/%2F/amq.default/publish",
                 {"routing_key": a, "payload": "hi", "payload_encoding": "string",
                  "properties": {"headers": {"CC": [b], "BCC": [c]}}})
    assert r.json == {"routed": True}, r
    for n in (a, b, c):
        got = api.post("/api/queues/%2F/" + q(n) + "/get", {"count": 5, "ackmode": "ack_requeue_false"}).json
        assert [m["payload"] for m in got] == ["hi"], (n, got)
        assert "BCC" not in got[0]["properties"].get("headers", {})
        assert got[0]["properties"]["headers"]["CC"] == [b]
    r = api.post("/api/exchanges/%2F/amq.default/publish",
                 {"routing_key": a, "payload": "x", "properties": {"headers": {"CC": "not-a-list"}}})
    assert r.status == 400 and "CC" in r.json["reason"], r


def test_purge(broker, api):
    name = unique("purge")
    publish_n(broker, name, 12)
    path = "/api/queues/%2F/" + q(name)
    assert api.delete(path + "/contents").status == 204
    assert api.get(path).json["messages"] == 0
    assert api.delete("/api/queues/%2F/nope/contents").status == 404
    assert api.get(path + "/contents").status == 405


# --------------------------------------------------------------------------
# connections, channels, consumers

def test_connections_channels_consumers(broker, api):
    name = unique("cc")
    c = broker.pika(client_properties={"connection_name": name})
    ch = c.channel()
    ch.queue_declare(name, exclusive=True)
    ch.basic_qos(prefetch_count=7)
    tag = ch.basic_consume(name, lambda *a: None)
    ch2 = c.channel()
    ch2.confirm_delivery()
    try:
        conns = [x for x in api.get("/api/connections").json if x.get("user_provided_name") == name]
        assert len(conns) == 1
        conn = conns[0]
        assert conn["user"] == "guest" and conn["state"] == "running" and conn["channels"] == 2
        assert conn["peer_host"] == "127.0.0.1" and conn["protocol"] == "AMQP 0-9-1"
        assert conn["client_properties"]["product"] == "Pika Python Client Library"
        cpath = "/api/connections/" + q(conn["name"])
        assert api.get(cpath).json["name"] == conn["name"]
        chans = api.get(cpath + "/channels").json
        assert sorted(x["number"] for x in chans) == [1, 2]
        by_number = {x["number"]: x for x in chans}
        assert by_number[1]["prefetch_count"] == 7 and by_number[1]["consumer_count"] == 1
        assert by_number[2]["confirm"] is True
        assert api.get("/api/channels/" + q(by_number[1]["name"])).json["number"] == 1
        assert any(x["name"] == by_number[2]["name"] for x in api.get("/api/channels").json)
        consumers = [x for x in api.get("/api/consumers").json if x["consumer_tag"] == tag]
        assert len(consumers) == 1
        assert consumers[0]["queue"] == {"name": name, "vhost": "/"}
        assert consumers[0]["channel_details"]["connection_name"] == conn["name"]
        assert consumers[0]["ack_required"] is True and consumers[0]["prefetch_count"] == 7
        assert any(x["consumer_tag"] == tag for x in api.get("/api/consumers/%2F").json)
        qinfo = api.get("/api/queues/%2F/" + q(name)).json
        assert qinfo["exclusive"] is True and qinfo["owner_pid_details"]["name"] == conn["name"]
    finally:
        c.close()
    assert api.get("/api/connections/" + q("1.2.3.4:5")).status == 404


def test_force_close_connection_is_320(broker, api):
    name = unique("fc")
    c = broker.pika(client_properties={"connection_name": name})
    ch = c.channel()
    conn = wait_for(lambda: [x for x in api.get("/api/connections").json if x.get("user_provided_name") == name],
                    what="the connection listed")[0]
    r = api.delete("/api/connections/" + q(conn["name"]), headers={"X-Reason": "maintenance"})
    assert r.status == 204, r
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            c.process_data_events(0.1)
            ch.basic_publish("", "nowhere", b"x")
    assert info.value.reply_code == 320
    assert "CONNECTION_FORCED" in info.value.reply_text and "maintenance" in info.value.reply_text
    wait_for(lambda: not [x for x in api.get("/api/connections").json if x.get("user_provided_name") == name],
             what="the connection gone")


# --------------------------------------------------------------------------
# definitions

def test_definitions_export_import_round_trip(broker, fresh_broker, api):
    tag = unique("defs")
    ex, ex2 = tag + ".topic", tag + ".fanout"
    q1, q2 = tag + ".q1", tag + ".q2"
    api.ok("PUT", "/api/exchanges/%2F/" + q(ex), {"type": "topic", "durable": True})
    api.ok("PUT", "/api/exchanges/%2F/" + q(ex2), {"type": "fanout", "durable": True, "auto_delete": False,
                                                    "arguments": {"alternate-exchange": "amq.fanout"}})
    api.ok("PUT", "/api/queues/%2F/" + q(q1), {"durable": True, "arguments": {"x-max-length": 100,
                                                                             "x-message-ttl": 60000}})
    api.ok("PUT", "/api/queues/%2F/" + q(q2), {"durable": True})
    api.ok("POST", "/api/bindings/%%2F/e/%s/q/%s" % (q(ex), q(q1)), {"routing_key": "a.*"})
    api.ok("POST", "/api/bindings/%%2F/e/%s/q/%s" % (q(ex), q(q2)), {"routing_key": "b.#",
                                                                  "arguments": {"k": "v"}})
    api.ok("POST", "/api/bindings/%%2F/e/%s/e/%s" % (q(ex2), q(ex)), {"routing_key": ""})
    exported = api.ok("GET", "/api/definitions")
    for key in ("users", "vhosts", "permissions", "queues", "exchanges", "bindings"):
        assert isinstance(exported[key], list), key
    assert not any(e["name"] == "" or e["name"].startswith("amq.") for e in exported["exchanges"])

    def ours(defs):
        return (
            sorted((x["name"], x["durable"], x["auto_delete"], json.dumps(x["arguments"], sort_keys=True))
                   for x in defs["queues"] if x["name"].startswith(tag)),
            sorted((x["name"], x["type"], x["durable"], json.dumps(x["arguments"], sort_keys=True))
                   for x in defs["exchanges"] if x["name"].startswith(tag)),
            sorted((x["source"], x["destination"], x["destination_type"], x["routing_key"],
                    json.dumps(x["arguments"], sort_keys=True))
                   for x in defs["bindings"] if x["source"].startswith(tag)))

    before = ours(exported)
    assert len(before[0]) == 2 and len(before[1]) == 2 and len(before[2]) == 3

    fresh = api_for(fresh_broker)
    r = fresh.post("/api/definitions", exported)
    assert r.status in (200, 204), r
    assert ours(fresh.ok("GET", "/api/definitions")) == before
    # Importing twice changes nothing.
    assert fresh.post("/api/definitions", exported).status in (200, 204)
    assert ours(fresh.ok("GET", "/api/definitions")) == before
    # Durable: still there after a restart.
    fresh_broker.restart()
    assert ours(fresh.ok("GET", "/api/definitions")) == before
    # And it routes: a.x → q1 through the imported topic binding.
    assert fresh.post("/api/exchanges/%2F/" + q(ex) + "/publish",
                      {"routing_key": "a.x", "payload": "p"}).json == {"routed": True}
    assert fresh.get("/api/queues/%2F/" + q(q1)).json["messages"] == 1

    # Per-vhost export omits the vhost fields; it imports into the path's vhost.
    per_vhost = api.ok("GET", "/api/definitions/%2F")
    assert "users" not in per_vhost and all("vhost" not in x for x in per_vhost["queues"])


def test_definitions_import_rejects_bad_documents(api):
    bad = [
        ({"queues": {"not": "a list"}}, "must be an array"),
        ({"queues": [{"vhost": "/"}]}, "name"),
        ({"queues": [{"name": "x", "vhost": "other"}]}, "vhost"),
        ({"exchanges": [{"name": "e", "vhost": "/", "type": "bogus"}]}, "type"),
        ({"bindings": [{"source": "a", "vhost": "/", "destination": "b", "destination_type": "neither"}]},
         "destination_type"),
        ({"queues": [{"name": "x", "durable": "maybe"}]}, "durable"),
        ({"queues": [1]}, "object"),
    ]
    for doc, word in bad:
        r = api.post("/api/definitions", doc)
        assert r.status == 400 and word in r.json["reason"], (doc, r)
    # Nothing of a rejected document was applied.
    assert api.get("/api/queues/%2F/x").status == 404
    # Unsupported parts are reported, not silently dropped.
    r = api.post("/api/definitions", {"policies": [{"name": "p"}], "users": [{"name": "bob"}]})
    assert r.status == 200 and len(r.json["warnings"]) == 1
    assert api.get("/api/users/bob").json["password_hash"] == ""  # a user without a password


# --------------------------------------------------------------------------
# bad requests

def test_malformed_bodies_are_400_with_the_reason(api):
    path = "/api/queues/%2F/" + q(unique("bad"))
    r = api.request("PUT", path, raw_body=b'{"durable": tru', headers={"Content-Type": "application/json"})
    assert r.status == 400 and "JSON" in r.json["reason"], r
    r = api.request("PUT", path, raw_body=b"[1,2]")
    assert r.status == 400 and "object" in r.json["reason"]
    r = api.request("PUT", path, raw_body=b"\xff\xfe\x00garbage")
    assert r.status == 400
    r = api.request("PUT", path, raw_body=b"[" * 10000 + b"]" * 10000)
    assert r.status == 400
    assert api.put(path, {"durable": "sometimes"}).status == 400
    assert api.put(path, {"arguments": [1, 2]}).status == 400
    assert api.put(path, {"arguments": {"x-big": 2 ** 63}}).status == 400
    pub = "/api/exchanges/%2F/amq.default/publish"
    assert api.post(pub, {"payload": "x"}).status == 400                      # no routing_key
    assert api.post(pub, {"routing_key": "k"}).status == 400                  # no payload
    assert api.post(pub, {"routing_key": "k", "payload": "*", "payload_encoding": "base64"}).status == 400
    assert api.post(pub, {"routing_key": "k", "payload": "x", "payload_encoding": "rot13"}).status == 400
    assert api.post(pub, {"routing_key": "k" * 300, "payload": "x"}).status == 400
    assert api.post(pub, {"routing_key": "k", "payload": "x", "properties": {"delivery_mode": 9}}).status == 400
    assert api.post(pub, {"routing_key": "k", "payload": "x", "properties": {"colour": "red"}}).status == 400
    assert api.post(pub, {"routing_key": "k", "payload": "x", "properties": "none"}).status == 400
    assert api.post("/api/exchanges/%2F/nope/publish", {"routing_key": "k", "payload": "x"}).status == 404
    get = "/api/queues/%2F/aliveness-test/get"
    for body in ({"count": 0, "ackmode": "ack_requeue_true"}, {"count": 1, "ackmode": "maybe"},
                 {"count": "lots", "ackmode": "ack_requeue_true"},
                 {"count": 1, "ackmode": "ack_requeue_true", "encoding": "rot13"}):
        assert api.post(get, body).status == 400, body


def test_unknown_paths_methods_and_objects(api):
    assert api.get("/api/nonsense").status == 404
    r = api.get("/api/queues/%2F/" + q(unique("missing")))
    assert r.status == 404 and r.json == {"error": "Object Not Found",
                                          "reason": r.json["reason"]} and "no queue" in r.json["reason"]
    assert api.get("/api/queues/nope").status == 404
    assert api.get("/api/exchanges/%2F/" + q(unique("missing"))).status == 404
    assert api.get("/api/bindings/%2F/e/amq.direct/q/" + q(unique("missing"))).status == 404
    r = api.post("/api/overview")
    assert r.status == 405 and "GET" in r.header("Allow")
    assert api.request("PATCH", "/api/queues/%2F/x").status == 405
    assert api.get("/api/queues/%zz").status == 400
    assert api.get("/nope").status == 404
    assert api.get("/api/queues/%2F/%00%01weird%2Fname").status == 404


def test_oversized_and_hostile_requests_do_not_hurt_the_server(broker, api):
    big = b'{"payload": "' + b"x" * (2 << 20) + b'"}'
    try:
        r = api.request("POST", "/api/exchanges/%2F/amq.default/publish", raw_body=big)
        assert r.status == 413
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server may close before the client has sent it all
    # Header too large, garbage, a request cut short, pipelining.
    r = api.get("/api/overview", headers={"X-Big": "y" * 20000})
    assert r.status in (400, 431)
    for junk in (b"\x00\x01\x02\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /api/overview HTTP/1.1\r\nHost",
                 b"POST /api/definitions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
                 b"GET /api/overview HTTP/1.1\r\nContent-Length: -1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", broker.http_port), timeout=5) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
    auth = base64.b64encode(b"guest:guest")
    req = b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + auth + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", broker.http_port), timeout=5) as s:
        s.sendall(req * 3)
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"HTTP/1.1 200") < 3 and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.count(b"HTTP/1.1 200") == 3
    # Still serving both protocols.
    assert api.get("/api/aliveness-test/%2F").json == {"status": "ok"}
    c = broker.pika()
    c.close()


def test_head_and_metrics_routes(broker, api):
    r = api.request("HEAD", "/api/overview")
    assert r.status == 200 and r.body == b"" and int(r.header("Content-Length")) > 0
    r = api.get("/metrics", auth=None)
    assert r.status == 200 and b"sluice_" in r.body
    name = unique("m")
    publish_n(broker, name, 2)
    # Object names (and the cost of listing them) only on the Prometheus port.
    assert api.get("/metrics/per-object", auth=None).status == 404
    prom = Api(broker.prometheus_port)
    r = prom.get("/metrics/per-object", auth=None)
    assert r.status == 200 and name.encode() in r.body
    assert prom.get("/metrics", auth=None).status == 200
    assert prom.get("/api/overview").status == 404 and prom.get("/", auth=None).status == 404


def test_api_declares_are_durable(fresh_broker):
    api = api_for(fresh_broker)
    name = unique("dur")
    assert api.put("/api/queues/%2F/" + q(name), {"durable": True}).status == 201
    assert api.post("/api/exchanges/%2F/amq.default/publish",
                    {"routing_key": name, "payload": "kept", "properties": {"delivery_mode": 2}}).json == \
        {"routed": True}
    fresh_broker.kill9()
    fresh_broker.start()
    r = api.get("/api/queues/%2F/" + q(name))
    assert r.status == 200 and r.json["messages"] == 1
