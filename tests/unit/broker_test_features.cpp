// Session tests: publisher confirms, mandatory returns, direct reply-to,
// routing through every exchange type, transactions, and declare errors.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include "tests/unit/session_harness.hpp"

namespace sluice::test {
namespace {

namespace m = amqp::method;

size_t ready(const broker::QueuePtr& q) { return q ? q->ready_count() : 0; }

// ---- publisher confirms ------------------------------------------------------

TEST_F(SessionTest, ConfirmsForABatchAreOneMultipleAck) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "cf");
    ASSERT_TRUE(c.confirm_select(1));
    const int kN = 7;
    c.batch([&] {
        for (int i = 0; i < kN; ++i) c.publish(1, "", q, "m");
    });
    ServerFrame ack = c.expect<m::BasicAck>(1);
    ASSERT_TRUE(ack.is<m::BasicAck>());
    EXPECT_EQ(ack.get<m::BasicAck>().delivery_tag, uint64_t(kN));
    EXPECT_TRUE(ack.get<m::BasicAck>().multiple);
    EXPECT_EQ(c.pending(), 0u) << "more than one ack for one batch: " << c.describe_pending();
    EXPECT_EQ(queue(q)->ready_count(), size_t(kN));

    // A lone publish next: its own tag, not multiple.
    c.publish(1, "", q, "m");
    ack = c.expect<m::BasicAck>(1);
    ASSERT_TRUE(ack.is<m::BasicAck>());
    EXPECT_EQ(ack.get<m::BasicAck>().delivery_tag, uint64_t(kN + 1));
    EXPECT_FALSE(ack.get<m::BasicAck>().multiple);
}

TEST_F(SessionTest, ConfirmsCountPerChannel) {
    TestClient& c = connect();
    ASSERT_TRUE(c.open_channel(2));
    std::string q = c.declare_queue(1, "cf2");
    ASSERT_TRUE(c.confirm_select(1));
    ASSERT_TRUE(c.confirm_select(2));
    c.batch([&] {
        c.publish(1, "", q, "a");
        c.publish(2, "", q, "b");
        c.publish(1, "", q, "c");
    });
    uint64_t tag1 = 0, tag2 = 0;
    for (int i = 0; i < 2; ++i) {
        ServerFrame f = c.next();
        ASSERT_TRUE(f.is<m::BasicAck>()) << f.describe();
        (f.channel == 1 ? tag1 : tag2) = f.get<m::BasicAck>().delivery_tag;
    }
    EXPECT_EQ(tag1, 2u);
    EXPECT_EQ(tag2, 1u);
}

TEST_F(SessionTest, MandatoryUnroutableIsReturnedBeforeTheConfirm) {
    TestClient& c = connect();
    ASSERT_TRUE(c.confirm_select(1));
    amqp::BasicProperties props;
    props.message_id = "lost";
    c.publish(1, "", "nowhere", "payload", props, /*mandatory=*/true);
    ServerFrame ret = c.expect<m::BasicReturn>(1);
    ASSERT_TRUE(ret.is<m::BasicReturn>());
    EXPECT_EQ(ret.get<m::BasicReturn>().reply_code, 312);
    EXPECT_EQ(std::string_view(ret.get<m::BasicReturn>().reply_text), "NO_ROUTE");
    EXPECT_EQ(std::string_view(ret.get<m::BasicReturn>().exchange), "");
    EXPECT_EQ(std::string_view(ret.get<m::BasicReturn>().routing_key), "nowhere");
    EXPECT_EQ(ret.body, "payload");
    EXPECT_EQ(ret.properties.message_id, std::optional<std::string>("lost"));
    ServerFrame ack = c.expect<m::BasicAck>(1);
    ASSERT_TRUE(ack.is<m::BasicAck>());
    EXPECT_EQ(ack.get<m::BasicAck>().delivery_tag, 1u);

    // Not mandatory: silently dropped, still confirmed.
    c.publish(1, "", "nowhere", "payload");
    ack = c.expect<m::BasicAck>(1);
    ASSERT_TRUE(ack.is<m::BasicAck>());
    EXPECT_EQ(ack.get<m::BasicAck>().delivery_tag, 2u);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
}

TEST_F(SessionTest, MandatoryReturnInABatchPrecedesTheBatchAck) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "mb");
    ASSERT_TRUE(c.confirm_select(1));
    c.batch([&] {
        c.publish(1, "", q, "ok1");
        c.publish(1, "", "nowhere", "lost", {}, true);
        c.publish(1, "", q, "ok2");
    });
    c.expect<m::BasicReturn>(1);
    ServerFrame ack = c.expect<m::BasicAck>(1);
    ASSERT_TRUE(ack.is<m::BasicAck>());
    EXPECT_EQ(ack.get<m::BasicAck>().delivery_tag, 3u);
    EXPECT_TRUE(ack.get<m::BasicAck>().multiple);
}

TEST_F(SessionTest, PublishToMissingExchangeIs404) {
    TestClient& c = connect();
    c.publish(1, "no-such-exchange", "k", "x");
    c.expect_channel_close(1, 404);
    EXPECT_EQ(c.host().close_calls, 0);
}

TEST_F(SessionTest, PublishWithForeignUserIdIs406) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "uid");
    amqp::BasicProperties props;
    props.user_id = "guest";
    c.publish(1, "", q, "mine", props);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    props.user_id = "mallory";
    c.publish(1, "", q, "forged", props);
    c.expect_channel_close(1, 406);
    EXPECT_EQ(queue(q)->ready_count(), 1u);
}

// ---- direct reply-to ---------------------------------------------------------

TEST_F(SessionTest, DirectReplyTo) {
    TestClient& requester = connect();
    TestClient& server = connect();
    std::string rpc = server.declare_queue(1, "rpc");
    server.consume(1, rpc, true);
    // The pseudo-queue always "exists".
    EXPECT_EQ(requester.declare_queue(1, "amq.rabbitmq.reply-to"), "amq.rabbitmq.reply-to");
    std::string rtag = requester.consume(1, "amq.rabbitmq.reply-to", /*no_ack=*/true);
    ASSERT_FALSE(rtag.empty());

    amqp::BasicProperties props;
    props.reply_to = "amq.rabbitmq.reply-to";
    props.correlation_id = "c-1";
    requester.publish(1, "", rpc, "2+2", props);

    ServerFrame req = server.expect<m::BasicDeliver>(1);
    ASSERT_TRUE(req.is<m::BasicDeliver>());
    EXPECT_EQ(req.body, "2+2");
    ASSERT_TRUE(req.properties.reply_to.has_value());
    const std::string reply_to = *req.properties.reply_to;
    EXPECT_EQ(reply_to.rfind("amq.rabbitmq.reply-to.", 0), 0u) << reply_to;
    EXPECT_GT(reply_to.size(), std::string_view("amq.rabbitmq.reply-to.").size());
    EXPECT_EQ(req.properties.correlation_id, std::optional<std::string>("c-1"));

    amqp::BasicProperties reply_props;
    reply_props.correlation_id = "c-1";
    server.publish(1, "", reply_to, "4", reply_props);
    EXPECT_EQ(server.pending(), 0u) << server.describe_pending();
    ServerFrame reply = requester.expect<m::BasicDeliver>(1);
    ASSERT_TRUE(reply.is<m::BasicDeliver>());
    EXPECT_EQ(std::string_view(reply.get<m::BasicDeliver>().consumer_tag), rtag);
    EXPECT_EQ(std::string_view(reply.get<m::BasicDeliver>().routing_key), reply_to);
    EXPECT_EQ(reply.body, "4");
    EXPECT_EQ(reply.properties.correlation_id, std::optional<std::string>("c-1"));
}

TEST_F(SessionTest, DirectReplyToRewriteStaysWithinFrameMax) {
    // The broker rewrites reply_to from "amq.rabbitmq.reply-to" to the longer
    // "amq.rabbitmq.reply-to.<token>". A content header the client sent at
    // exactly frame_max would no longer fit in one frame: the publish is
    // refused (406) rather than delivered as a frame no client may accept.
    // The harness fails the test on any frame above the negotiated frame_max.
    ClientOptions o;
    o.frame_max = 4096;
    TestClient& requester = connect(o);
    TestClient& server = connect(o);
    std::string rpc = server.declare_queue(1, "rpc-big");
    requester.consume(1, "amq.rabbitmq.reply-to", true);

    amqp::BasicProperties props;
    props.reply_to = "amq.rabbitmq.reply-to";
    props.headers = table({{"pad", amqp::FieldValue(std::string(1, 'p'))}});
    std::string raw;
    amqp::encode_properties(raw, props);
    // Grow the header to the largest frame the client may send.
    const size_t header_payload = 2 + 2 + 8 + raw.size();
    const size_t room = 4096 - amqp::kFrameOverhead - header_payload;
    const size_t growth = std::string_view(".0123456789012345678901").size();  // "." + the 22-character token
    props.headers = table({{"pad", amqp::FieldValue(std::string(1 + room, 'p'))}});
    requester.publish(1, "", rpc, "x", props);
    requester.expect_channel_close(1, 406);
    EXPECT_TRUE(server.get(1, rpc, true).is<m::BasicGetEmpty>());

    // The largest header that still fits once rewritten is delivered whole.
    ASSERT_TRUE(requester.open_channel(2));
    requester.consume(2, "amq.rabbitmq.reply-to", true);
    props.headers = table({{"pad", amqp::FieldValue(std::string(1 + room - growth, 'p'))}});
    requester.publish(2, "", rpc, "y", props);
    ASSERT_EQ(requester.pending(), 0u) << requester.describe_pending();
    ServerFrame got = server.get(1, rpc, true);
    ASSERT_TRUE(got.is<m::BasicGetOk>()) << server.describe_pending();
    EXPECT_EQ(got.body, "y");
    ASSERT_TRUE(got.properties.reply_to.has_value());
    EXPECT_EQ(got.properties.reply_to->substr(0, 22), "amq.rabbitmq.reply-to.");
}

TEST_F(SessionTest, DirectReplyToRules) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "rpc2");
    // Publishing with reply_to = the pseudo-queue needs a reply consumer.
    amqp::BasicProperties props;
    props.reply_to = "amq.rabbitmq.reply-to";
    c.publish(1, "", q, "x", props);
    c.expect_channel_close(1, 406);
    // The reply consumer must be no_ack.
    ASSERT_TRUE(c.open_channel(1));
    m::BasicConsume bc;
    bc.queue = "amq.rabbitmq.reply-to";
    bc.no_ack = false;
    c.send(1, bc);
    c.expect_channel_close(1, 406);
    // A reply to a token nobody holds: returned when mandatory.
    ASSERT_TRUE(c.open_channel(1));
    c.publish(1, "", "amq.rabbitmq.reply-to.bogus", "late", {}, true);
    ServerFrame ret = c.expect<m::BasicReturn>(1);
    ASSERT_TRUE(ret.is<m::BasicReturn>());
    EXPECT_EQ(ret.get<m::BasicReturn>().reply_code, 312);
}

TEST_F(SessionTest, DirectReplyToAfterRequesterLeft) {
    TestClient& requester = connect();
    TestClient& server = connect();
    std::string rpc = server.declare_queue(1, "rpc3");
    server.consume(1, rpc, true);
    requester.consume(1, "amq.rabbitmq.reply-to", true);
    amqp::BasicProperties props;
    props.reply_to = "amq.rabbitmq.reply-to";
    requester.publish(1, "", rpc, "q", props);
    ServerFrame req = server.expect<m::BasicDeliver>(1);
    ASSERT_TRUE(req.properties.reply_to.has_value());
    requester.transport_closed();
    server.publish(1, "", *req.properties.reply_to, "a", {}, /*mandatory=*/true);
    ServerFrame ret = server.expect<m::BasicReturn>(1);
    EXPECT_TRUE(ret.is<m::BasicReturn>()) << ret.describe();
}

// ---- routing -----------------------------------------------------------------

TEST_F(SessionTest, TopicRouting) {
    TestClient& c = connect();
    std::string q1 = c.declare_queue(1, "t1");
    std::string q2 = c.declare_queue(1, "t2");
    std::string q3 = c.declare_queue(1, "t3");
    ASSERT_TRUE(c.bind_queue(1, q1, "amq.topic", "stock.*.nyse"));
    ASSERT_TRUE(c.bind_queue(1, q2, "amq.topic", "stock.#"));
    ASSERT_TRUE(c.bind_queue(1, q3, "amq.topic", "#.eur"));
    c.publish(1, "amq.topic", "stock.ibm.nyse", "a");      // q1 q2
    c.publish(1, "amq.topic", "stock.ibm.lse.eur", "b");   // q2 q3
    c.publish(1, "amq.topic", "stock", "c");               // q2
    c.publish(1, "amq.topic", "bond.eur", "d");            // q3
    c.publish(1, "amq.topic", "stock.ibm.nyse.x", "e");    // q2
    EXPECT_EQ(queue(q1)->ready_count(), 1u);
    EXPECT_EQ(queue(q2)->ready_count(), 4u);
    EXPECT_EQ(queue(q3)->ready_count(), 2u);
}

TEST_F(SessionTest, TopicRoutingEdgeCases) {
    TestClient& c = connect();
    std::string hash = c.declare_queue(1, "te-hash");
    std::string star = c.declare_queue(1, "te-star");
    std::string a_hash = c.declare_queue(1, "te-a-hash");
    std::string hash_hash = c.declare_queue(1, "te-hash-hash");
    ASSERT_TRUE(c.bind_queue(1, hash, "amq.topic", "#"));
    ASSERT_TRUE(c.bind_queue(1, star, "amq.topic", "*"));
    ASSERT_TRUE(c.bind_queue(1, a_hash, "amq.topic", "a.#"));
    ASSERT_TRUE(c.bind_queue(1, hash_hash, "amq.topic", "#.#"));
    c.publish(1, "amq.topic", "", "empty key");  // # and #.#
    c.publish(1, "amq.topic", "a", "a");         // all four
    c.publish(1, "amq.topic", "a.b.c", "abc");   // #, a.#, #.#
    c.publish(1, "amq.topic", "b..", "empty words");  // #, #.#
    EXPECT_EQ(queue(hash)->ready_count(), 4u);
    EXPECT_EQ(queue(star)->ready_count(), 1u);
    EXPECT_EQ(queue(a_hash)->ready_count(), 2u);
    EXPECT_EQ(queue(hash_hash)->ready_count(), 4u);
}

TEST_F(SessionTest, FanoutRouting) {
    TestClient& c = connect();
    ASSERT_TRUE(c.declare_exchange(1, "fan", "fanout"));
    std::vector<std::string> qs;
    for (int i = 0; i < 3; ++i) {
        qs.push_back(c.declare_queue(1, ""));
        ASSERT_TRUE(c.bind_queue(1, qs.back(), "fan", i == 0 ? "ignored" : ""));
    }
    // Bound twice with different keys: still one copy.
    ASSERT_TRUE(c.bind_queue(1, qs[0], "fan", "other"));
    c.publish(1, "fan", "whatever", "f");
    for (const auto& q : qs) {
        EXPECT_EQ(queue(q)->ready_count(), 1u) << q;
        ServerFrame g = c.get(1, q, true);
        EXPECT_EQ(g.body, "f");
        EXPECT_EQ(std::string_view(g.get<m::BasicGetOk>().exchange), "fan");
    }
}

TEST_F(SessionTest, HeadersRouting) {
    TestClient& c = connect();
    std::string all = c.declare_queue(1, "h-all");
    std::string any = c.declare_queue(1, "h-any");
    ASSERT_TRUE(c.bind_queue(1, all, "amq.headers", "",
                             table({{"x-match", "all"}, {"format", "pdf"}, {"type", "report"}})));
    ASSERT_TRUE(c.bind_queue(1, any, "amq.headers", "",
                             table({{"x-match", "any"}, {"format", "pdf"}, {"type", "log"}})));
    auto send = [&](std::initializer_list<std::pair<std::string, amqp::FieldValue>> h) {
        amqp::BasicProperties p;
        p.headers = table(h);
        c.publish(1, "amq.headers", "", "h", p);
    };
    send({{"format", "pdf"}, {"type", "report"}});  // all, any
    send({{"format", "pdf"}});                      // any
    send({{"type", "log"}});                        // any
    send({{"format", "zip"}, {"type", "report"}});  // none
    c.publish(1, "amq.headers", "", "no headers");  // none
    EXPECT_EQ(queue(all)->ready_count(), 1u);
    EXPECT_EQ(queue(any)->ready_count(), 3u);
}

TEST_F(SessionTest, HeadersBindingWithOnlyXMatch) {
    TestClient& c = connect();
    std::string all = c.declare_queue(1, "hx-all");
    std::string any = c.declare_queue(1, "hx-any");
    ASSERT_TRUE(c.bind_queue(1, all, "amq.match", "", table({{"x-match", "all"}})));
    ASSERT_TRUE(c.bind_queue(1, any, "amq.match", "", table({{"x-match", "any"}})));
    amqp::BasicProperties p;
    p.headers = table({{"k", "v"}});
    c.publish(1, "amq.match", "", "with headers", p);
    c.publish(1, "amq.match", "", "without headers");
    // RabbitMQ: "all" of nothing holds; "any" of nothing does not.
    EXPECT_EQ(queue(all)->ready_count(), 2u);
    EXPECT_EQ(queue(any)->ready_count(), 0u);
}

TEST_F(SessionTest, DirectRoutingAndUnbind) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "dr");
    ASSERT_TRUE(c.bind_queue(1, q, "amq.direct", "k1"));
    ASSERT_TRUE(c.bind_queue(1, q, "amq.direct", "k2"));
    c.publish(1, "amq.direct", "k1", "1");
    c.publish(1, "amq.direct", "k2", "2");
    c.publish(1, "amq.direct", "k3", "3");
    EXPECT_EQ(queue(q)->ready_count(), 2u);
    m::QueueUnbind u;
    u.queue = q;
    u.exchange = "amq.direct";
    u.routing_key = "k1";
    c.send(1, u);
    c.expect<m::QueueUnbindOk>(1);
    c.publish(1, "amq.direct", "k1", "4");
    c.publish(1, "amq.direct", "k2", "5");
    EXPECT_EQ(queue(q)->ready_count(), 3u);
}

TEST_F(SessionTest, ExchangeToExchangeRouting) {
    TestClient& c = connect();
    ASSERT_TRUE(c.declare_exchange(1, "src", "direct"));
    ASSERT_TRUE(c.declare_exchange(1, "mid", "topic"));
    ASSERT_TRUE(c.declare_exchange(1, "dst", "fanout"));
    m::ExchangeBind b;
    b.destination = "mid";
    b.source = "src";
    b.routing_key = "orders.eu";
    c.send(1, b);
    c.expect<m::ExchangeBindOk>(1);
    b.destination = "dst";
    b.source = "mid";
    b.routing_key = "orders.*";
    c.send(1, b);
    c.expect<m::ExchangeBindOk>(1);
    // A cycle back to the source must not loop or duplicate.
    b.destination = "src";
    b.source = "dst";
    b.routing_key = "";
    c.send(1, b);
    c.expect<m::ExchangeBindOk>(1);
    std::string q = c.declare_queue(1, "e2e");
    ASSERT_TRUE(c.bind_queue(1, q, "dst", ""));
    ASSERT_TRUE(c.bind_queue(1, q, "mid", "#"));  // reachable twice: one copy

    c.publish(1, "src", "orders.eu", "yes");
    c.publish(1, "src", "orders.us", "no");
    EXPECT_EQ(queue(q)->ready_count(), 1u);

    m::ExchangeUnbind u;
    u.destination = "mid";
    u.source = "src";
    u.routing_key = "orders.eu";
    c.send(1, u);
    c.expect<m::ExchangeUnbindOk>(1);
    c.publish(1, "src", "orders.eu", "after unbind");
    EXPECT_EQ(queue(q)->ready_count(), 1u);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
}

TEST_F(SessionTest, InternalExchangeRefusesPublishButRoutesBindings) {
    TestClient& c = connect();
    ASSERT_TRUE(c.declare_exchange(1, "pub", "fanout"));
    ASSERT_TRUE(c.declare_exchange(1, "inner", "fanout", false, false, /*internal=*/true));
    m::ExchangeBind b;
    b.destination = "inner";
    b.source = "pub";
    c.send(1, b);
    c.expect<m::ExchangeBindOk>(1);
    std::string q = c.declare_queue(1, "inq");
    ASSERT_TRUE(c.bind_queue(1, q, "inner", ""));
    c.publish(1, "pub", "", "via pub");
    EXPECT_EQ(queue(q)->ready_count(), 1u);
    c.publish(1, "inner", "", "direct");
    c.expect_channel_close(1, 403);
}

TEST_F(SessionTest, AutoDeleteExchangeGoesWithItsLastBinding) {
    TestClient& c = connect();
    ASSERT_TRUE(c.declare_exchange(1, "adx", "fanout", false, /*auto_delete=*/true));
    std::string q = c.declare_queue(1, "adxq");
    ASSERT_TRUE(c.bind_queue(1, q, "adx", ""));
    m::QueueDelete d;
    d.queue = q;
    c.send(1, d);
    c.expect<m::QueueDeleteOk>(1);
    EXPECT_EQ(vhost().find_exchange("adx"), nullptr);
}

TEST_F(SessionTest, DeletedExchangeStopsRouting) {
    TestClient& c = connect();
    ASSERT_TRUE(c.declare_exchange(1, "tmp", "fanout"));
    std::string q = c.declare_queue(1, "tmpq");
    ASSERT_TRUE(c.bind_queue(1, q, "tmp", ""));
    m::ExchangeDelete d;
    d.exchange = "tmp";
    d.if_unused = true;
    c.send(1, d);
    c.expect_channel_close(1, 406);  // in use
    ASSERT_TRUE(c.open_channel(1));
    d.if_unused = false;
    c.send(1, d);
    c.expect<m::ExchangeDeleteOk>(1);
    c.publish(1, "tmp", "", "x");
    c.expect_channel_close(1, 404);
}

TEST_F(SessionTest, QueueMaxLengthDropsHead) {
    // x-max-length is accepted (and checked for equivalence on redeclare);
    // RabbitMQ then keeps at most that many ready messages, dropping the
    // oldest (x-overflow drop-head, the default).
    TestClient& c = connect();
    QueueOpts o;
    o.arguments = table({{"x-max-length", amqp::FieldValue(int32_t(2))}});
    std::string q = c.declare_queue(1, "maxlen", o);
    for (int i = 1; i <= 5; ++i) c.publish(1, "", q, std::to_string(i));
    EXPECT_EQ(queue(q)->ready_count(), 2u);
    EXPECT_EQ(c.get(1, q, true).body, "4");
    EXPECT_EQ(c.get(1, q, true).body, "5");
}

TEST_F(SessionTest, ConsumerPrioritiesServeHighestFirst) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "prio");
    ASSERT_TRUE(c.qos(1, 1));
    m::BasicConsume low;
    low.queue = q;
    low.consumer_tag = "low";
    c.send(1, low);
    c.expect<m::BasicConsumeOk>(1);
    m::BasicConsume high = low;
    high.consumer_tag = "high";
    high.arguments = table({{"x-priority", amqp::FieldValue(int32_t(10))}});
    c.send(1, high);
    c.expect<m::BasicConsumeOk>(1);
    c.publish(1, "", q, "1");
    c.publish(1, "", q, "2");
    c.publish(1, "", q, "3");
    ServerFrame d1 = c.expect<m::BasicDeliver>(1);
    ServerFrame d2 = c.expect<m::BasicDeliver>(1);
    EXPECT_EQ(std::string_view(d1.get<m::BasicDeliver>().consumer_tag), "high");
    EXPECT_EQ(std::string_view(d2.get<m::BasicDeliver>().consumer_tag), "low");
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    // The high-priority consumer gets credit back first and takes the next.
    c.ack(1, d1.get<m::BasicDeliver>().delivery_tag);
    ServerFrame d3 = c.expect<m::BasicDeliver>(1);
    EXPECT_EQ(std::string_view(d3.get<m::BasicDeliver>().consumer_tag), "high");
    EXPECT_EQ(d3.body, "3");
}

// ---- transactions ------------------------------------------------------------

TEST_F(SessionTest, TxCommitAndRollback) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "tx");
    c.send(1, m::TxSelect{});
    c.expect<m::TxSelectOk>(1);
    c.publish(1, "", q, "a");
    c.publish(1, "", q, "b");
    EXPECT_EQ(queue(q)->ready_count(), 0u) << "published before commit";
    c.send(1, m::TxCommit{});
    c.expect<m::TxCommitOk>(1);
    EXPECT_EQ(queue(q)->ready_count(), 2u);

    c.publish(1, "", q, "rolled back");
    c.send(1, m::TxRollback{});
    c.expect<m::TxRollbackOk>(1);
    EXPECT_EQ(queue(q)->ready_count(), 2u);
    c.send(1, m::TxCommit{});
    c.expect<m::TxCommitOk>(1);
    EXPECT_EQ(queue(q)->ready_count(), 2u) << "a rolled-back publish came back at the next commit";
}

TEST_F(SessionTest, TxAcksWaitForCommit) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "txa");
    c.publish(1, "", q, "m");  // before tx.select: routed at once
    c.send(1, m::TxSelect{});
    c.expect<m::TxSelectOk>(1);
    ServerFrame g = c.get(1, q);
    ASSERT_TRUE(g.is<m::BasicGetOk>());
    uint64_t tag = g.get<m::BasicGetOk>().delivery_tag;
    c.ack(1, tag);
    EXPECT_EQ(queue(q)->unacked_count(), 1u);
    c.send(1, m::TxRollback{});
    c.expect<m::TxRollbackOk>(1);
    EXPECT_EQ(queue(q)->unacked_count(), 1u);  // still unacked, still ackable
    c.ack(1, tag);
    c.send(1, m::TxCommit{});
    c.expect<m::TxCommitOk>(1);
    EXPECT_EQ(queue(q)->unacked_count(), 0u);
    EXPECT_EQ(queue(q)->ready_count(), 0u);
}

TEST_F(SessionTest, TxDoubleAckIs406) {
    // RabbitMQ settles a tag out of the unacked set when the ack arrives (even
    // in a transaction), so the second ack of the same tag is 406 at once.
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "txd");
    c.publish(1, "", q, "m");
    c.send(1, m::TxSelect{});
    c.expect<m::TxSelectOk>(1);
    ServerFrame g = c.get(1, q);
    uint64_t tag = g.get<m::BasicGetOk>().delivery_tag;
    c.ack(1, tag);
    c.ack(1, tag);
    ServerFrame f = c.next();
    ASSERT_TRUE(f.is<m::ChannelClose>()) << f.describe();
    EXPECT_EQ(f.get<m::ChannelClose>().reply_code, 406);
}

TEST_F(SessionTest, TxCommitWithoutSelectIs406) {
    TestClient& c = connect();
    c.send(1, m::TxCommit{});
    c.expect_channel_close(1, 406);
}

TEST_F(SessionTest, TxAndConfirmsExcludeEachOther) {
    TestClient& c = connect();
    ASSERT_TRUE(c.confirm_select(1));
    c.send(1, m::TxSelect{});
    c.expect_channel_close(1, 406);
    ASSERT_TRUE(c.open_channel(1));
    c.send(1, m::TxSelect{});
    c.expect<m::TxSelectOk>(1);
    c.send(1, m::ConfirmSelect{});
    c.expect_channel_close(1, 406);
}

// ---- declare errors ------------------------------------------------------------

TEST_F(SessionTest, QueueDeclareEquivalence) {
    TestClient& c = connect();
    QueueOpts o;
    o.arguments = table({{"x-max-length", amqp::FieldValue(int32_t(10))}});
    ASSERT_FALSE(c.declare_queue(1, "eq", o).empty());
    // Same again: fine, and message/consumer counts come back.
    EXPECT_EQ(c.declare_queue(1, "eq", o), "eq");

    QueueOpts durable = o;
    durable.durable = true;
    m::QueueDeclare d;
    d.queue = "eq";
    d.durable = true;
    d.arguments = o.arguments;
    c.send(1, d);
    c.expect_channel_close(1, 406);

    ASSERT_TRUE(c.open_channel(1));
    d.durable = false;
    d.arguments = table({{"x-max-length", amqp::FieldValue(int32_t(11))}});
    c.send(1, d);
    c.expect_channel_close(1, 406);

    ASSERT_TRUE(c.open_channel(1));
    d.arguments = {};
    c.send(1, d);
    c.expect_channel_close(1, 406);  // x-max-length missing now

    ASSERT_TRUE(c.open_channel(1));
    d.arguments = o.arguments;
    d.auto_delete = true;
    c.send(1, d);
    c.expect_channel_close(1, 406);
}

TEST_F(SessionTest, ExchangeDeclareEquivalence) {
    TestClient& c = connect();
    ASSERT_TRUE(c.declare_exchange(1, "ex", "direct"));
    ASSERT_TRUE(c.declare_exchange(1, "ex", "direct"));
    m::ExchangeDeclare d;
    d.exchange = "ex";
    d.type = "topic";
    c.send(1, d);
    c.expect_channel_close(1, 406);
    ASSERT_TRUE(c.open_channel(1));
    d.type = "direct";
    d.durable = true;
    c.send(1, d);
    c.expect_channel_close(1, 406);
}

TEST_F(SessionTest, ExchangeDeclareErrors) {
    TestClient& c = connect();
    m::ExchangeDeclare d;
    d.exchange = "amq.mine";
    d.type = "direct";
    c.send(1, d);
    c.expect_channel_close(1, 403);  // reserved prefix
    ASSERT_TRUE(c.open_channel(1));
    d.exchange = "weird";
    d.type = "x-no-such-type";
    c.send(1, d);
    c.expect_connection_close(503);
}

TEST_F(SessionTest, PassiveExchangeDeclare) {
    TestClient& c = connect();
    m::ExchangeDeclare d;
    d.exchange = "amq.topic";
    d.passive = true;
    c.send(1, d);
    c.expect<m::ExchangeDeclareOk>(1);
    d.exchange = "absent";
    c.send(1, d);
    c.expect_channel_close(1, 404);
}

TEST_F(SessionTest, ReservedQueueNameIs403) {
    TestClient& c = connect();
    m::QueueDeclare d;
    d.queue = "amq.myqueue";
    c.send(1, d);
    c.expect_channel_close(1, 403);
}

TEST_F(SessionTest, ExclusiveQueueFromAnotherConnectionIs405) {
    TestClient& owner = connect();
    TestClient& other = connect();
    QueueOpts ex;
    ex.exclusive = true;
    std::string q = owner.declare_queue(1, "mine", ex);
    ASSERT_EQ(q, "mine");
    // Redeclare from the owner: fine.
    EXPECT_EQ(owner.declare_queue(1, "mine", ex), "mine");

    m::QueueDeclare d;
    d.queue = q;
    d.exclusive = true;
    other.send(1, d);
    other.expect_channel_close(1, 405);

    ASSERT_TRUE(other.open_channel(1));
    d.exclusive = false;
    other.send(1, d);
    other.expect_channel_close(1, 405);

    ASSERT_TRUE(other.open_channel(1));
    d.passive = true;
    other.send(1, d);
    other.expect_channel_close(1, 405);

    ASSERT_TRUE(other.open_channel(1));
    m::BasicConsume bc;
    bc.queue = q;
    other.send(1, bc);
    other.expect_channel_close(1, 405);

    ASSERT_TRUE(other.open_channel(1));
    m::BasicGet g;
    g.queue = q;
    other.send(1, g);
    other.expect_channel_close(1, 405);

    ASSERT_TRUE(other.open_channel(1));
    m::QueueDelete del;
    del.queue = q;
    other.send(1, del);
    other.expect_channel_close(1, 405);
    EXPECT_NE(queue(q), nullptr);

    // Publishing to it from another connection is allowed, as in RabbitMQ.
    ASSERT_TRUE(other.open_channel(1));
    other.publish(1, "", q, "hello");
    EXPECT_EQ(other.pending(), 0u) << other.describe_pending();
    EXPECT_EQ(queue(q)->ready_count(), 1u);
}

TEST_F(SessionTest, NonExclusiveRedeclareOfExclusiveByOwnerIs405) {
    TestClient& c = connect();
    QueueOpts ex;
    ex.exclusive = true;
    ASSERT_EQ(c.declare_queue(1, "mine2", ex), "mine2");
    m::QueueDeclare d;
    d.queue = "mine2";
    c.send(1, d);
    c.expect_channel_close(1, 405);
}

TEST_F(SessionTest, BindErrors) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "bq");
    m::QueueBind b;
    b.queue = q;
    b.exchange = "missing-ex";
    c.send(1, b);
    c.expect_channel_close(1, 404);
    ASSERT_TRUE(c.open_channel(1));
    b.queue = "missing-q";
    b.exchange = "amq.direct";
    c.send(1, b);
    c.expect_channel_close(1, 404);
    ASSERT_TRUE(c.open_channel(1));
    b.queue = q;
    b.exchange = "";
    c.send(1, b);
    c.expect_channel_close(1, 403);
}

TEST_F(SessionTest, EmptyQueueNameMeansLastDeclared) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "");
    // queue.bind with queue "" and key "": the last queue, bound by its name.
    ASSERT_TRUE(c.bind_queue(1, "", "amq.direct", ""));
    c.publish(1, "amq.direct", q, "via name");
    EXPECT_EQ(ready(queue(q)), 1u);
    ServerFrame g = c.get(1, "");
    ASSERT_TRUE(g.is<m::BasicGetOk>()) << g.describe();
    EXPECT_EQ(g.body, "via name");
}

}  // namespace
}  // namespace sluice::test
