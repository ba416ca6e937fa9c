"""Access gaps a security review found in the management API and logins
(issue 13, items 2, 3, 4, 7, 13): each tried as a user would, with RabbitMQ's
behaviour as the reference."""

import urllib.parse

import pika
import pika.exceptions
import pytest

from conftest import unique, wait_for
from mgmt_http import Api, api_for, q


@pytest.fixture
def api(broker):
    return api_for(broker)


def make_user(api, tags="management", password="pw", perms=(".*", ".*", ".*"), vhost="/"):
    name = unique("u")
    assert api.put("/api/users/" + q(name), {"password": password, "tags": tags}).status in (201, 204)
    if perms:
        c, w, r = perms
        assert api.put("/api/permissions/%s/%s" % (q(vhost), q(name)),
                       {"configure": c, "write": w, "read": r}).status in (201, 204)
    return name


# --------------------------------------------------------------------------
# item 2: another connection's exclusive queue is locked to the API

def test_exclusive_queue_is_locked_over_http(broker, api):
    c = broker.pika()
    ch = c.channel()
    name = unique("excl")
    ch.queue_declare(name, exclusive=True)
    for i in range(3):
        ch.basic_publish("", name, b"secret %d" % i)
    path = "/api/queues/%2F/" + q(name)
    wait_for(lambda: api.get(path).json["messages"] == 3)

    attempts = [
        ("POST", path + "/get", {"count": 3, "ackmode": "ack_requeue_false"}),
        ("DELETE", path + "/contents", None),
        ("DELETE", path, None),
        ("POST", "/api/bindings/%2F/e/amq.direct/q/" + q(name), {"routing_key": "k"}),
    ]
    for method, p, body in attempts:
        r = api.request(method, p, body=body)
        assert r.status == 400, (method, p, r)
        assert r.json["error"] == "resource_locked" and "RESOURCE_LOCKED" in r.json["reason"], r
    # Nothing happened to it; its owner still has it whole.
    info = api.get(path).json
    assert info["messages"] == 3 and info["exclusive"] is True
    assert [b["source"] for b in api.get(path + "/bindings").json] == [""]
    ok = ch.queue_declare(name, passive=True)
    assert ok.method.message_count == 3
    c.close()
    # Once its owner has gone, so has the queue.
    wait_for(lambda: api.get(path).status == 404)


# --------------------------------------------------------------------------
# item 3: dead-letter and alternate exchanges need the same rights as over AMQP

def test_http_declares_check_dlx_and_ae_permissions(broker, api):
    # May configure and read anything, but write only to exchanges named u.*
    user = make_user(api, perms=(".*", "^u\\.", ".*"))
    as_user = Api(broker.http_port, user=user, password="pw")
    allowed = "u." + unique("dlx")
    assert api.put("/api/exchanges/%2F/" + q(allowed), {"type": "fanout", "durable": False}).status == 201

    qname = unique("dlq")
    r = as_user.put("/api/queues/%2F/" + q(qname),
                    {"durable": False, "arguments": {"x-dead-letter-exchange": "amq.fanout"}})
    assert r.status == 403 and "amq.fanout" in r.json["reason"], r
    assert api.get("/api/queues/%2F/" + q(qname)).status == 404
    r = as_user.put("/api/queues/%2F/" + q(qname),
                    {"durable": False, "arguments": {"x-dead-letter-exchange": allowed}})
    assert r.status == 201, r

    ename = unique("ae")
    r = as_user.put("/api/exchanges/%2F/" + q(ename),
                    {"type": "direct", "durable": False, "arguments": {"alternate-exchange": "amq.fanout"}})
    assert r.status == 403 and "amq.fanout" in r.json["reason"], r
    assert api.get("/api/exchanges/%2F/" + q(ename)).status == 404
    r = as_user.put("/api/exchanges/%2F/" + q(ename),
                    {"type": "direct", "durable": False, "arguments": {"alternate-exchange": allowed}})
    assert r.status == 201, r

    # AMQP refuses the same declare with the same rights.
    c = pika.BlockingConnection(broker.pika_params(credentials=pika.PlainCredentials(user, "pw")))
    ch = c.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(unique("amqp-dlq"), arguments={"x-dead-letter-exchange": "amq.fanout"})
    assert e.value.reply_code == 403
    c.close()
    for p in ("/api/queues/%2F/" + q(qname), "/api/exchanges/%2F/" + q(ename),
              "/api/exchanges/%2F/" + q(allowed), "/api/users/" + q(user)):
        api.delete(p)


# --------------------------------------------------------------------------
# item 4: only administrators close other users' connections

def test_monitoring_user_cannot_close_others_connections(broker, api):
    mon = make_user(api, tags="monitoring", perms=None)
    as_mon = Api(broker.http_port, user=mon, password="pw")
    c = broker.pika(client_properties={"connection_name": "victim"})

    def victim():
        for conn in api.get("/api/connections").json:
            if conn.get("user_provided_name") == "victim":
                return conn["name"]
        return None

    name = wait_for(victim)
    path = "/api/connections/" + q(name)
    assert as_mon.get(path).status == 200  # it may see it …
    r = as_mon.delete(path)                 # … but not close it
    assert r.status == 403 and r.json["error"] == "not_authorised", r
    c.process_data_events(time_limit=0.1)
    assert c.is_open and api.get(path).status == 200
    assert api.delete(path).status == 204   # an administrator may
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
        for _ in range(100):
            c.process_data_events(time_limit=0.05)
    api.delete("/api/users/" + q(mon))


# --------------------------------------------------------------------------
# item 7: blank passwords never log in

def test_blank_password_is_refused(broker, api):
    user = make_user(api, tags="management", password="")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(broker.pika_params(credentials=pika.PlainCredentials(user, "")))
    assert Api(broker.http_port, user=user, password="").get("/api/whoami").status == 401
    # The same user with a real password logs in.
    assert api.put("/api/users/" + q(user), {"password": "real", "tags": "management"}).status == 204
    c = pika.BlockingConnection(broker.pika_params(credentials=pika.PlainCredentials(user, "real")))
    c.close()
    api.delete("/api/users/" + q(user))


def test_server_named_queues_and_tags_are_distinct(broker):
    c = broker.pika()
    ch = c.channel()
    names = {ch.queue_declare("", exclusive=True).method.queue for _ in range(200)}
    assert len(names) == 200 and all(n.startswith("amq.gen-") and len(n) == 30 for n in names)
    c.close()


# --------------------------------------------------------------------------
# item 13: bindings named by RabbitMQ's properties key

@pytest.mark.parametrize("key,props_key", [("a.#", "a.%23"), ("x y~z/w", "x+y%7Ez%2Fw"),
                                           ("plain-key_1.2", "plain-key_1.2")])
def test_binding_deleted_by_rabbitmq_escaped_properties_key(broker, api, key, props_key):
    name = unique("bq")
    assert api.put("/api/queues/%2F/" + q(name), {"durable": False}).status == 201
    base = "/api/bindings/%2F/e/amq.topic/q/" + q(name)
    assert api.post(base, {"routing_key": key}).status == 201
    listed = api.get(base).json
    assert [b["properties_key"] for b in listed] == [props_key]
    # rabbitmqadmin escapes the listed key once more for the path.
    path = base + "/" + urllib.parse.quote(props_key, safe="")
    assert api.get(path).json["routing_key"] == key
    r = api.delete(path)
    assert r.status == 204, r
    assert api.get(base).json == []
    api.delete("/api/queues/%2F/" + q(name))


# --------------------------------------------------------------------------
# item 10: a page on another site cannot drive a browser's credentials

def test_cross_origin_state_changes_are_refused(broker, api):
    name = unique("csrf")
    path = "/api/queues/%2F/" + q(name)
    host = "127.0.0.1:%d" % broker.http_port
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": "http://127.0.0.1:1"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site", "Origin": "http://" + host}):
        r = api.put(path, {"durable": False}, headers=headers)
        assert r.status == 403 and "cross-origin" in r.json["reason"], (headers, r)
        assert api.get(path).status == 404
    # Reading is harmless (the same-origin policy keeps the answer from the page).
    assert api.get("/api/overview", headers={"Origin": "http://evil.example"}).status == 200
    # The dashboard's own requests, and clients that are not browsers, pass.
    r = api.put(path, {"durable": False}, headers={"Origin": "http://" + host, "Sec-Fetch-Site": "same-origin"})
    assert r.status == 201, r
    assert api.delete(path).status == 204


# --------------------------------------------------------------------------
# item 1: the API's publish refuses what basic.publish refuses (one check)

def test_http_publish_refuses_what_amqp_refuses(broker, api):
    name = unique("pubchk")
    assert api.put("/api/queues/%2F/" + q(name), {"durable": False}).status == 201
    for props, words in (({"expiration": "soon"}, "invalid expiration"), ({"user_id": "mallory"}, "user_id")):
        r = api.post("/api/exchanges/%2F/amq.default/publish", {"routing_key": name, "payload": "x",
                                                                "properties": props})
        assert r.status == 400 and words in r.json["reason"], (props, r)
    assert api.get("/api/queues/%2F/" + q(name)).json["messages"] == 0
    api.delete("/api/queues/%2F/" + q(name))
