"""Users, vhosts, permissions and vhost limits with real clients (pika and the
management API over HTTP), as RabbitMQ's access-control guide describes them:
a failed login is connection.close 403, a vhost without permissions 530 on
connection.open, an operation without permission channel.close 403 naming
the resource."""

import json
import os
import socket
import tempfile

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from conftest import unique, wait_for
from mgmt_http import Api, ExtraBroker, api_for, q


def add_user(api, name, password="pw", tags=""):
    r = api.put("/api/users/" + q(name), {"password": password, "tags": tags})
    assert r.status == 201, r


def set_perms(api, vhost, user, configure=".*", write=".*", read=".*"):
    r = api.put("/api/permissions/%s/%s" % (q(vhost), q(user)),
                {"configure": configure, "write": write, "read": read})
    assert r.status in (201, 204), r


def add_vhost(api, name):
    r = api.put("/api/vhosts/" + q(name), {"description": "test vhost"})
    assert r.status == 201, r


def login(broker, user, password="pw", vhost="/", host=None):
    params = broker.pika_params(credentials=pika.PlainCredentials(user, password), virtual_host=vhost)
    if host:
        params.host = host
    return pika.BlockingConnection(params)


def expect_channel_close(code, text, fn, *args, **kw):
    with pytest.raises(ChannelClosedByBroker) as ei:
        fn(*args, **kw)
    assert ei.value.reply_code == code, ei.value
    assert ei.value.reply_text == text, ei.value


def refused(kind, name, user, vhost="/"):
    return "ACCESS_REFUSED - access to %s '%s' in vhost '%s' refused for user '%s'" % (kind, name, vhost, user)


def local_non_loopback_address():
    """An address of this host other than loopback (the route to a TEST-NET
    address picks one; no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


@pytest.fixture
def api(broker):
    return api_for(broker)


@pytest.fixture
def user(api):
    """A user with no permissions yet, removed after the test."""
    name = unique("user")
    add_user(api, name)
    yield name
    api.delete("/api/users/" + q(name))


# --------------------------------------------------------------------------
# logins and vhosts


def test_api_created_user_logs_in_and_a_wrong_password_is_403(broker, api, user):
    set_perms(api, "/", user)
    c = login(broker, user)
    try:
        assert c.channel().queue_declare(queue="", exclusive=True).method.queue.startswith("amq.gen-")
    finally:
        c.close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError, match=r"\(403\)"):
        login(broker, user, password="wrong")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError, match=r"\(403\)"):
        login(broker, unique("nobody"))


def test_stored_hash_is_rabbitmqs_format(api, user):
    # base64(4-byte salt ++ SHA-256(salt ++ password)), as RabbitMQ's export shows.
    import base64
    import hashlib
    u = api.ok("GET", "/api/users/" + q(user))
    assert u["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    raw = base64.b64decode(u["password_hash"])
    assert len(raw) == 36 and hashlib.sha256(raw[:4] + b"pw").digest() == raw[4:]


def test_user_with_a_rabbitmq_password_hash_logs_in(broker, api):
    # The password guide's example: "test12", salt 908DC60A.
    name = unique("hashed")
    r = api.put("/api/users/" + q(name), {"password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
                                          "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""})
    assert r.status == 201, r
    set_perms(api, "/", name)
    login(broker, name, "test12").close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        login(broker, name, "test13")
    assert api.put("/api/users/x", {"password_hash": "short"}).status == 400
    assert api.put("/api/users/x", {"password": "a", "password_hash": "b"}).status == 400


def test_vhost_without_permission_is_530(broker, api, user):
    vhost = unique("vh")
    add_vhost(api, vhost)
    try:
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match=r"\(530\)"):
            login(broker, user, vhost=vhost)
        set_perms(api, vhost, user)
        login(broker, user, vhost=vhost).close()
        api.delete("/api/permissions/%s/%s" % (q(vhost), q(user)))
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match="refused for user"):
            login(broker, user, vhost=vhost)
    finally:
        api.delete("/api/vhosts/" + q(vhost))


def test_guest_is_refused_from_a_non_loopback_address(broker):
    addr = local_non_loopback_address()
    if addr is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError, match="can only connect via localhost"):
        login(broker, "guest", "guest", host=addr)
    login(broker, "guest", "guest").close()  # from 127.0.0.1 it is fine


def test_guest_from_afar_when_loopback_only_is_off():
    addr = local_non_loopback_address()
    if addr is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    b = ExtraBroker("--default-user-loopback-only", "false")
    try:
        c = pika.BlockingConnection(pika.ConnectionParameters(
            host=addr, port=b.port, credentials=pika.PlainCredentials("guest", "guest"),
            connection_attempts=1, socket_timeout=5))
        assert c.is_open
        c.close()
    finally:
        assert b.stop() == 0


# --------------------------------------------------------------------------
# permissions per operation


def test_configure_write_read_refusals_name_the_resource(broker, api, user, connect):
    # configure and read: "^mine\.", write: "^mine\." and the default exchange.
    set_perms(api, "/", user, configure=r"^mine\.", write=r"^(mine\..*|amq\.default)$", read=r"^mine\.")
    other = unique("other")
    bystander = connect()
    bch = bystander.channel()
    bch.queue_declare(queue=other, exclusive=True)
    c = login(broker, user)
    try:
        mine = "mine." + unique("q")
        ch = c.channel()
        ch.queue_declare(queue=mine, exclusive=True)
        expect_channel_close(403, refused("queue", other, user), c.channel().queue_declare, queue=other)
        # server-named queues are checked as amq.gen-…
        with pytest.raises(ChannelClosedByBroker, match="access to queue 'amq.gen-"):
            c.channel().queue_declare(queue="")
        expect_channel_close(403, refused("exchange", "amq.direct", user),
                             c.channel().queue_bind, queue=mine, exchange="amq.direct", routing_key="k")
        expect_channel_close(403, refused("queue", other, user), c.channel().basic_get, queue=other)
        expect_channel_close(403, refused("queue", other, user),
                             c.channel().basic_consume, queue=other, on_message_callback=lambda *a: None)
        expect_channel_close(403, refused("exchange", "amq.fanout", user),
                             c.channel().exchange_declare, exchange="amq.fanout", exchange_type="fanout",
                             passive=False)
        # publishing to an exchange without write: the channel closes on the publish
        pch = c.channel()
        pch.basic_publish(exchange="amq.topic", routing_key="x", body=b"no")
        with pytest.raises(ChannelClosedByBroker) as ei:
            pch.queue_declare(queue=mine, passive=True)
        assert ei.value.reply_code == 403 and ei.value.reply_text == refused("exchange", "amq.topic", user)
        # what is allowed works, and the bystander never noticed
        ok = c.channel()
        ok.basic_publish(exchange="", routing_key=mine, body=b"yes")
        wait_for(lambda: ok.basic_get(queue=mine, auto_ack=True)[2] == b"yes", what="own message")
        bch.basic_publish(exchange="", routing_key=other, body=b"b")
        wait_for(lambda: bch.basic_get(queue=other, auto_ack=True)[2] == b"b", what="bystander's message")
        assert bystander.is_open and c.is_open
    finally:
        c.close()


def test_permission_change_applies_to_an_open_connection(broker, api, user):
    set_perms(api, "/", user)
    c = login(broker, user)
    try:
        ch = c.channel()
        name = unique("q")
        ch.queue_declare(queue=name, exclusive=True)
        ch.basic_publish(exchange="", routing_key=name, body=b"1")
        set_perms(api, "/", user, write="^$")
        ch.basic_publish(exchange="", routing_key=name, body=b"2")
        with pytest.raises(ChannelClosedByBroker, match="amq.default"):
            ch.queue_declare(queue=name, passive=True)
    finally:
        c.close()


# --------------------------------------------------------------------------
# the management API's users, tags and permissions


def test_management_api_by_tag(broker, api):
    names = {tag: unique(tag or "none") for tag in ("", "management", "monitoring", "administrator")}
    for tag, name in names.items():
        add_user(api, name, tags=tag)
    try:
        as_ = {tag: Api(broker.http_port, user=name, password="pw") for tag, name in names.items()}
        assert Api(broker.http_port, user=names["management"], password="bad").get("/api/overview").status == 401
        r = as_[""].get("/api/overview")
        assert r.status == 401 and r.json["reason"] == "Not management user"
        assert as_["management"].get("/api/overview").status == 200
        assert as_["management"].get("/api/whoami").json["tags"] == ["management"]
        # only administrators see and change users, permissions and vhosts
        for who in ("management", "monitoring"):
            assert as_[who].get("/api/users").status == 403
            assert as_[who].put("/api/users/" + q(unique("x")), {"password": "p"}).status == 403
            assert as_[who].put("/api/vhosts/" + q(unique("x")), {}).status == 403
            assert as_[who].get("/api/permissions").status == 403
        assert as_["administrator"].get("/api/users").status == 200
        # vhost visibility: monitoring sees every vhost, management only its own
        assert [v["name"] for v in as_["management"].ok("GET", "/api/vhosts")] == []
        assert "/" in [v["name"] for v in as_["monitoring"].ok("GET", "/api/vhosts")]
        assert as_["management"].get("/api/queues/%2F").status == 403
        # with permissions, a management user declares what its configure allows
        set_perms(api, "/", names["management"], configure=r"^m\.", write=".*", read=".*")
        m = as_["management"]
        qname = "m." + unique("q")
        assert m.put("/api/queues/%2F/" + q(qname), {"durable": False}).status == 201
        r = m.put("/api/queues/%2F/" + q(unique("other")), {"durable": False})
        assert r.status == 403 and "refused for user '%s'" % names["management"] in r.json["reason"]
        assert [x["name"] for x in m.ok("GET", "/api/queues") if x["name"] == qname] == [qname]
        assert m.delete("/api/queues/%2F/" + q(qname)).status == 204
    finally:
        for name in names.values():
            api.delete("/api/users/" + q(name))


def test_api_users_vhosts_permissions_round_trip(api):
    user, vhost = unique("u"), unique("v")
    add_user(api, user, tags="monitoring,policymaker")
    assert api.put("/api/users/" + q(user), {"password": "pw2", "tags": ["monitoring"]}).status == 204
    u = api.ok("GET", "/api/users/" + q(user))
    assert u["tags"] == ["monitoring"] and u["name"] == user
    add_vhost(api, vhost)
    assert api.ok("GET", "/api/vhosts/" + q(vhost))["description"] == "test vhost"
    # the creating administrator gets full permissions in the new vhost
    assert api.ok("GET", "/api/permissions/%s/guest" % q(vhost))["configure"] == ".*"
    set_perms(api, vhost, user, "^c", "^w", "^r")
    p = api.ok("GET", "/api/permissions/%s/%s" % (q(vhost), q(user)))
    assert (p["configure"], p["write"], p["read"]) == ("^c", "^w", "^r")
    assert {x["user"] for x in api.ok("GET", "/api/vhosts/%s/permissions" % q(vhost))} == {"guest", user}
    assert [x["vhost"] for x in api.ok("GET", "/api/users/%s/permissions" % q(user))] == [vhost]
    bad = api.put("/api/permissions/%s/%s" % (q(vhost), q(user)), {"configure": "(", "write": "", "read": ""})
    assert bad.status == 400 and "regular expression" in bad.json["reason"]
    assert api.put("/api/permissions/%s/%s" % (q(vhost), q(user)), {"configure": ".*"}).status == 400
    assert api.put("/api/permissions/%s/nobody" % q(vhost), {"configure": "", "write": "", "read": ""}).status == 400
    assert api.delete("/api/permissions/%s/%s" % (q(vhost), q(user))).status == 204
    assert api.get("/api/permissions/%s/%s" % (q(vhost), q(user))).status == 404
    assert api.delete("/api/users/" + q(user)).status == 204
    assert api.get("/api/users/" + q(user)).status == 404
    assert api.delete("/api/vhosts/" + q(vhost)).status == 204
    assert api.get("/api/vhosts/" + q(vhost)).status == 404


def test_deleting_a_user_closes_its_connections(broker, api, connect):
    name = unique("gone")
    add_user(api, name)
    set_perms(api, "/", name)
    c = login(broker, name)
    bystander = connect()
    assert api.delete("/api/users/" + q(name)).status == 204
    with pytest.raises(ConnectionClosedByBroker) as ei:
        for _ in range(50):
            c.process_data_events(time_limit=0.1)
    assert ei.value.reply_code == 320 and ei.value.reply_text == "CONNECTION_FORCED - user '%s' is deleted" % name
    bystander.channel().queue_declare(queue="", exclusive=True)
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        login(broker, name)


# --------------------------------------------------------------------------
# vhosts: isolation, deletion, limits


def test_two_vhosts_with_the_same_queue_name_are_isolated(broker, api, connect):
    vhost = unique("iso")
    add_vhost(api, vhost)
    try:
        name = unique("same")
        a = connect().channel()
        b = connect(virtual_host=vhost).channel()
        a.queue_declare(queue=name)
        b.queue_declare(queue=name)
        a.basic_publish(exchange="", routing_key=name, body=b"root")
        b.basic_publish(exchange="", routing_key=name, body=b"other")
        b.basic_publish(exchange="", routing_key=name, body=b"other2")
        wait_for(lambda: api.ok("GET", "/api/queues/%s/%s" % (q(vhost), q(name))).get("messages_ready") == 2,
                 what="two messages in the second vhost")
        assert api.ok("GET", "/api/queues/%2F/" + q(name))["messages_ready"] == 1
        assert a.basic_get(queue=name, auto_ack=True)[2] == b"root"
        a.queue_delete(queue=name)
    finally:
        api.delete("/api/vhosts/" + q(vhost))


def test_deleting_a_vhost_removes_its_queues_and_closes_its_connections(broker, api, connect):
    vhost = unique("del")
    add_vhost(api, vhost)
    c = connect(virtual_host=vhost)
    ch = c.channel()
    name = unique("q")
    ch.queue_declare(queue=name, durable=True)
    ch.exchange_declare(exchange=name, exchange_type="fanout", durable=True)
    assert api.delete("/api/vhosts/" + q(vhost)).status == 204
    with pytest.raises(ConnectionClosedByBroker) as ei:
        c.process_data_events(time_limit=2)
        c.process_data_events(time_limit=2)
    assert ei.value.reply_code == 320 and "is deleted" in ei.value.reply_text
    assert api.get("/api/queues/%s/%s" % (q(vhost), q(name))).status == 404
    assert name not in [x["name"] for x in api.ok("GET", "/api/queues")]
    # a vhost of the same name later starts empty
    add_vhost(api, vhost)
    try:
        assert api.ok("GET", "/api/queues/" + q(vhost)) == []
        assert name not in [x["name"] for x in api.ok("GET", "/api/exchanges/" + q(vhost))]
    finally:
        api.delete("/api/vhosts/" + q(vhost))


def test_vhost_limits(broker, api, connect):
    vhost = unique("lim")
    add_vhost(api, vhost)
    try:
        assert api.put("/api/vhost-limits/%s/max-connections" % q(vhost), {"value": 1}).status == 204
        assert api.put("/api/vhost-limits/%s/max-queues" % q(vhost), {"value": 1}).status == 204
        assert api.put("/api/vhost-limits/%s/max-bogus" % q(vhost), {"value": 1}).status == 400
        limits = [x for x in api.ok("GET", "/api/vhost-limits") if x["vhost"] == vhost]
        assert limits == [{"vhost": vhost, "value": {"max-connections": 1, "max-queues": 1}}]
        c = connect(virtual_host=vhost)
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match=r"connection limit \(1\) is reached"):
            connect(virtual_host=vhost)
        ch = c.channel()
        ch.queue_declare(queue="first")
        expect_channel_close(406, "PRECONDITION_FAILED - cannot declare queue 'second': queue limit in vhost '%s'"
                             " (1) is reached" % vhost, c.channel().queue_declare, queue="second")
        c.channel().queue_declare(queue="first")  # an existing queue may be declared again
        assert api.put("/api/queues/%s/third" % q(vhost), {}).status == 400
        assert api.delete("/api/vhost-limits/%s/max-queues" % q(vhost)).status == 204
        c.channel().queue_declare(queue="second")
        c.close()
        connect(virtual_host=vhost).close()  # the connection slot is free again
    finally:
        api.delete("/api/vhosts/" + q(vhost))


# --------------------------------------------------------------------------
# durability and definitions


def test_users_vhosts_permissions_survive_kill9(fresh_broker):
    api = api_for(fresh_broker)
    add_user(api, "keeper", tags="management")
    add_vhost(api, "kept")
    set_perms(api, "kept", "keeper", "^k", "^k", "^k")
    assert api.put("/api/vhost-limits/kept/max-queues", {"value": 5}).status == 204
    c = login(fresh_broker, "keeper", vhost="kept")
    c.channel().queue_declare(queue="k.durable", durable=True)
    c.close()
    fresh_broker.kill9()
    fresh_broker.start()
    c = login(fresh_broker, "keeper", vhost="kept")
    ch = c.channel()
    assert ch.queue_declare(queue="k.durable", passive=True).method.queue == "k.durable"
    expect_channel_close(403, refused("queue", "x", "keeper", "kept"), c.channel().queue_declare, queue="x")
    c.close()
    assert api.ok("GET", "/api/permissions/kept/keeper")["read"] == "^k"
    assert api.ok("GET", "/api/vhost-limits/kept") == [{"vhost": "kept", "value": {"max-queues": 5}}]
    assert api.ok("GET", "/api/users/keeper")["tags"] == ["management"]
    # the queue is in "kept" only
    assert api.get("/api/queues/%2F/k.durable").status == 404


def test_definitions_file_at_start_and_export_round_trip():
    defs = {
        "users": [
            {"name": "rabbit", "password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
             "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"]},
            {"name": "app", "password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
             "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""},
        ],
        "vhosts": [{"name": "prod"}],
        "permissions": [
            {"user": "rabbit", "vhost": "prod", "configure": ".*", "write": ".*", "read": ".*"},
            {"user": "app", "vhost": "prod", "configure": "^app\\.", "write": ".*", "read": "^app\\."},
        ],
        "parameters": [{"vhost": "prod", "component": "vhost-limits", "name": "limits",
                        "value": {"max-connections": 10}}],
        "queues": [{"name": "app.work", "vhost": "prod", "durable": True, "auto_delete": False, "arguments": {}}],
        "exchanges": [],
        "bindings": [],
    }
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(defs, f)
    b = ExtraBroker("--load-definitions", path)
    try:
        c = pika.BlockingConnection(pika.ConnectionParameters(
            port=b.port, virtual_host="prod", credentials=pika.PlainCredentials("app", "test12"),
            connection_attempts=1, socket_timeout=5))
        ch = c.channel()
        assert ch.queue_declare(queue="app.work", passive=True).method.queue == "app.work"
        expect_channel_close(403, refused("queue", "other", "app", "prod"), c.channel().queue_declare,
                             queue="other")
        c.close()
        admin = Api(b.http_port, user="rabbit", password="test12")
        exported = admin.ok("GET", "/api/definitions")
        users = {u["name"]: u for u in exported["users"]}
        assert users["app"]["password_hash"] == "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
        assert users["rabbit"]["tags"] == ["administrator"]
        assert {v["name"] for v in exported["vhosts"]} == {"/", "prod"}
        assert {(p["user"], p["vhost"], p["read"]) for p in exported["permissions"]} >= {("app", "prod", "^app\\.")}
        assert exported["parameters"] == [{"vhost": "prod", "component": "vhost-limits", "name": "limits",
                                           "value": {"max-connections": 10}}]
        assert [(x["name"], x["vhost"]) for x in exported["queues"]] == [("app.work", "prod")]
    finally:
        assert b.stop() == 0
        os.unlink(path)


def test_bad_definitions_file_stops_the_start():
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"permissions": [{"user": "ghost", "vhost": "/", "configure": "", "write": "", "read": ""}]}, f)
    try:
        with pytest.raises(AssertionError):
            ExtraBroker("--load-definitions", path)
    finally:
        os.unlink(path)
