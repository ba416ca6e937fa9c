// Session tests for the differences from RabbitMQ 3.10 that a client could
// notice (issue 16): sender-selected distribution, built-in exchanges,
// unbind of what is not there, exchange equivalence, x-match, quorum queue
// requeue and global qos, counts after expiry, CR/LF in names, strict
// method parsing, the default and trace exchanges. Each expected reply text
// is RabbitMQ's.
#include <gtest/gtest.h>

#include "net/amqp/wire.hpp"
#include "tests/unit/session_harness.hpp"

namespace sluice::test {
namespace {

namespace m = amqp::method;
using amqp::FieldArray;
using amqp::FieldValue;

std::string close_text(const ServerFrame& f) {
    if (f.is<m::ChannelClose>()) return std::string(f.get<m::ChannelClose>().reply_text);
    if (f.is<m::ConnectionClose>()) return std::string(f.get<m::ConnectionClose>().reply_text);
    return "(not a close: " + f.describe() + ")";
}

amqp::BasicProperties with_headers(amqp::FieldTable headers) {
    amqp::BasicProperties p;
    p.headers = std::move(headers);
    return p;
}

FieldArray keys(std::initializer_list<const char*> names) {
    FieldArray a;
    for (const char* n : names) a.emplace_back(std::string(n));
    return a;
}

// ---- 1. sender-selected distribution (CC, BCC) ---------------------------------

TEST_F(SessionTest, CcAndBccRouteCopiesAndBccIsStripped) {
    TestClient& c = connect();
    for (const char* q : {"to", "cc1", "cc2", "bcc", "other"}) c.declare_queue(1, q);
    ASSERT_TRUE(c.bind_queue(1, "other", "amq.direct", "other-key"));
    ASSERT_TRUE(c.bind_queue(1, "bcc", "amq.direct", "hidden"));
    ASSERT_TRUE(c.bind_queue(1, "to", "amq.direct", "to"));
    ASSERT_TRUE(c.bind_queue(1, "cc1", "amq.direct", "cc1"));
    ASSERT_TRUE(c.bind_queue(1, "cc2", "amq.direct", "cc2"));
    // "to" named twice (routing key and CC): one copy.
    c.publish(1, "amq.direct", "to", "m",
              with_headers(table({{"CC", keys({"cc1", "to", "cc2"})}, {"BCC", keys({"hidden"})}, {"k", "v"}})));
    for (const char* q : {"to", "cc1", "cc2", "bcc"}) EXPECT_EQ(queue(q)->ready_count(), 1u) << q;
    EXPECT_EQ(queue("other")->ready_count(), 0u);
    for (const char* q : {"to", "cc1", "bcc"}) {
        ServerFrame f = c.get(1, q, true);
        ASSERT_TRUE(f.is<m::BasicGetOk>()) << f.describe();
        EXPECT_EQ(f.get<m::BasicGetOk>().routing_key, "to") << q;
        ASSERT_TRUE(f.properties.headers) << q;
        EXPECT_EQ(f.properties.headers->find("BCC"), nullptr) << q << ": the hidden list leaked";
        ASSERT_NE(f.properties.headers->find("CC"), nullptr) << q;
        ASSERT_NE(f.properties.headers->find("k"), nullptr) << q;
    }
}

TEST_F(SessionTest, CcAndBccOnTheDefaultAndTopicExchanges) {
    TestClient& c = connect();
    for (const char* q : {"d1", "d2", "t1"}) c.declare_queue(1, q);
    c.publish(1, "", "d1", "m", with_headers(table({{"BCC", keys({"d2"})}})));
    EXPECT_EQ(queue("d1")->ready_count(), 1u);
    EXPECT_EQ(queue("d2")->ready_count(), 1u);
    ASSERT_TRUE(c.bind_queue(1, "t1", "amq.topic", "a.*"));
    c.publish(1, "amq.topic", "nothing", "m", with_headers(table({{"CC", keys({"a.b"})}})));
    EXPECT_EQ(queue("t1")->ready_count(), 1u);
}

TEST_F(SessionTest, CcThatIsNotAnArrayRefusesThePublish) {
    TestClient& c = connect();
    c.declare_queue(1, "q");
    c.publish(1, "", "q", "m", with_headers(table({{"CC", "q2"}})));
    ServerFrame f = c.expect_channel_close(1, 406);
    EXPECT_EQ(close_text(f), "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,\"CC\",longstr}");
    EXPECT_EQ(queue("q")->ready_count(), 0u);
}

TEST_F(SessionTest, DeadLetteringRoutesWithTheCcAndBccKeysToo) {
    TestClient& c = connect();
    for (const char* q : {"dl-main", "dl-cc", "dl-bcc"}) c.declare_queue(1, q);
    QueueOpts o;
    o.arguments = table({{"x-dead-letter-exchange", "amq.direct"}});
    c.declare_queue(1, "src", o);
    ASSERT_TRUE(c.bind_queue(1, "dl-main", "amq.direct", "src"));
    ASSERT_TRUE(c.bind_queue(1, "dl-cc", "amq.direct", "c"));
    ASSERT_TRUE(c.bind_queue(1, "dl-bcc", "amq.direct", "b"));
    // Through the default exchange: only src exists of the names it carries.
    c.publish(1, "", "src", "m", with_headers(table({{"CC", keys({"c"})}, {"BCC", keys({"b"})}})));
    ASSERT_EQ(queue("src")->ready_count(), 1u);
    ServerFrame f = c.get(1, "src", false);
    ASSERT_TRUE(f.is<m::BasicGetOk>()) << f.describe();
    c.reject(1, f.get<m::BasicGetOk>().delivery_tag, false);
    // Re-published to amq.direct with src, c and b: one copy each.
    for (const char* q : {"dl-main", "dl-cc", "dl-bcc"}) EXPECT_EQ(queue(q)->ready_count(), 1u) << q;
    ServerFrame d = c.get(1, "dl-bcc", true);
    ASSERT_TRUE(d.is<m::BasicGetOk>()) << d.describe();
    ASSERT_TRUE(d.properties.headers);
    EXPECT_EQ(d.properties.headers->find("BCC"), nullptr);
}

TEST_F(SessionTest, DeadLetterRoutingKeyReplacesTheCcKeysAndDropsCc) {
    TestClient& c = connect();
    for (const char* q : {"dlq", "cc"}) c.declare_queue(1, q);
    QueueOpts o;
    o.arguments = table({{"x-dead-letter-exchange", ""}, {"x-dead-letter-routing-key", "dlq"}});
    c.declare_queue(1, "src", o);
    c.publish(1, "", "src", "m", with_headers(table({{"CC", keys({"cc"})}, {"BCC", keys({"cc"})}})));
    ASSERT_EQ(queue("cc")->ready_count(), 1u);
    ServerFrame f = c.get(1, "src", false);
    ASSERT_TRUE(f.is<m::BasicGetOk>()) << f.describe();
    c.reject(1, f.get<m::BasicGetOk>().delivery_tag, false);
    EXPECT_EQ(queue("cc")->ready_count(), 1u);
    ServerFrame d = c.get(1, "dlq", true);
    ASSERT_TRUE(d.is<m::BasicGetOk>()) << d.describe();
    ASSERT_TRUE(d.properties.headers);
    EXPECT_EQ(d.properties.headers->find("CC"), nullptr);
    // x-death keeps the keys it was published with: its own and CC (not BCC).
    const FieldValue* xd = d.properties.headers->find("x-death");
    ASSERT_TRUE(xd && xd->as_array() && !xd->as_array()->empty());
    const amqp::FieldTable* death = xd->as_array()->front().as_table();
    ASSERT_TRUE(death);
    EXPECT_EQ(*death->find("routing-keys"), FieldValue(keys({"src", "cc"})));
}

// ---- 2. re-declaring the built-in exchanges --------------------------------------

TEST_F(SessionTest, BuiltInExchangesMayBeDeclaredAgainAsTheyAre) {
    TestClient& c = connect();
    EXPECT_TRUE(c.declare_exchange(1, "amq.direct", "direct", true));
    EXPECT_TRUE(c.declare_exchange(1, "amq.topic", "topic", true));
    EXPECT_TRUE(c.declare_exchange(1, "amq.match", "headers", true));
    m::ExchangeDeclare d;
    d.exchange = "amq.direct";
    d.type = "fanout";
    d.durable = true;
    c.send(1, d);
    ServerFrame f = c.expect_channel_close(1, 406);
    EXPECT_EQ(close_text(f), "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in vhost '/': "
                             "received 'fanout' but current is 'direct'");
    ASSERT_TRUE(c.open_channel(1));
    d.exchange = "amq.new";
    d.type = "direct";
    c.send(1, d);
    f = c.expect_channel_close(1, 403);
    EXPECT_EQ(close_text(f), "ACCESS_REFUSED - exchange name 'amq.new' contains reserved prefix 'amq.*'");
}

// ---- 3. unbinding what does not exist ------------------------------------------------

TEST_F(SessionTest, UnbindFromAMissingExchangeOrQueueIsOk) {
    TestClient& c = connect();
    c.declare_queue(1, "q");
    m::QueueUnbind u;
    u.queue = "q";
    u.exchange = "no-such-exchange";
    u.routing_key = "k";
    c.send(1, u);
    c.expect<m::QueueUnbindOk>(1);
    u.queue = "no-such-queue";
    u.exchange = "amq.direct";
    c.send(1, u);
    c.expect<m::QueueUnbindOk>(1);
    m::ExchangeUnbind eu;
    eu.destination = "amq.fanout";
    eu.source = "no-such-exchange";
    c.send(1, eu);
    c.expect<m::ExchangeUnbindOk>(1);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    u.queue = "q";
    u.exchange = "";
    c.send(1, u);  // the default exchange stays refused
    ServerFrame f = c.expect_channel_close(1, 403);
    EXPECT_EQ(close_text(f), "ACCESS_REFUSED - operation not permitted on the default exchange");
}

// ---- 4. alternate-exchange equivalence --------------------------------------------

TEST_F(SessionTest, RedeclareWithAnotherAlternateExchangeIs406) {
    TestClient& c = connect();
    m::ExchangeDeclare d;
    d.exchange = "x";
    d.type = "direct";
    d.arguments = table({{"alternate-exchange", "ae1"}});
    c.send(1, d);
    c.expect<m::ExchangeDeclareOk>(1);
    c.send(1, d);  // the same: fine
    c.expect<m::ExchangeDeclareOk>(1);
    d.arguments = table({{"alternate-exchange", "ae2"}});
    c.send(1, d);
    ServerFrame f = c.expect_channel_close(1, 406);
    EXPECT_EQ(close_text(f), "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'x' in vhost "
                             "'/': received 'ae2' but current is 'ae1'");
    ASSERT_TRUE(c.open_channel(1));
    d.arguments = {};
    c.send(1, d);
    f = c.expect_channel_close(1, 406);
    EXPECT_EQ(close_text(f), "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'x' in vhost "
                             "'/': received none but current is the value 'ae1' of type 'longstr'");
    ASSERT_TRUE(c.open_channel(1));
    d.arguments = table({{"other", "ignored"}, {"alternate-exchange", "ae1"}});  // other arguments are not compared
    c.send(1, d);
    c.expect<m::ExchangeDeclareOk>(1);
}

// ---- 5. x-match ----------------------------------------------------------------------

TEST_F(SessionTest, HeadersBindingWithAnUnknownXMatchIs406) {
    TestClient& c = connect();
    c.declare_queue(1, "q");
    for (const char* mode : {"all", "any", "all-with-x", "any-with-x"})
        EXPECT_TRUE(c.bind_queue(1, "q", "amq.headers", "", table({{"x-match", mode}, {"a", 1}}))) << mode;
    m::QueueBind b;
    b.queue = "q";
    b.exchange = "amq.headers";
    b.arguments = table({{"x-match", "bogus"}});
    c.send(1, b);
    ServerFrame f = c.expect_channel_close(1, 406);
    EXPECT_EQ(close_text(f), "PRECONDITION_FAILED - Invalid x-match field value <<\"bogus\">>; expected all, any, "
                             "all-with-x, or any-with-x");
    ASSERT_TRUE(c.open_channel(1));
    m::ExchangeBind eb;
    eb.destination = "amq.fanout";
    eb.source = "amq.headers";
    eb.arguments = table({{"x-match", int8_t(1)}});
    c.send(1, eb);
    f = c.expect_channel_close(1, 406);
    EXPECT_EQ(close_text(f), "PRECONDITION_FAILED - Invalid x-match field type byte (value 1); expected longstr");
    // Other exchange types do not look at x-match.
    ASSERT_TRUE(c.open_channel(1));
    EXPECT_TRUE(c.bind_queue(1, "q", "amq.direct", "k", table({{"x-match", "bogus"}})));
}

// ---- 6. quorum queues --------------------------------------------------------------------

QueueOpts quorum() {
    QueueOpts o;
    o.durable = true;
    o.arguments = table({{"x-queue-type", "quorum"}});
    return o;
}

std::vector<std::string> drain_bodies(TestClient& c, std::string_view q) {
    std::vector<std::string> out;
    for (;;) {
        ServerFrame f = c.get(1, q, true);
        if (!f.is<m::BasicGetOk>()) return out;
        out.push_back(f.body);
    }
}

TEST_F(SessionTest, QuorumQueueRequeuesAtTheBackClassicInPlace) {
    TestClient& c = connect();
    c.declare_queue(1, "qq", quorum());
    c.declare_queue(1, "cq");
    for (const char* q : {"qq", "cq"}) {
        for (const char* body : {"1", "2", "3"}) c.publish(1, "", q, body);
        ServerFrame f = c.get(1, q, false);
        ASSERT_TRUE(f.is<m::BasicGetOk>()) << f.describe();
        c.nack(1, f.get<m::BasicGetOk>().delivery_tag, false, true);
    }
    EXPECT_EQ(drain_bodies(c, "qq"), (std::vector<std::string>{"2", "3", "1"}));
    EXPECT_EQ(drain_bodies(c, "cq"), (std::vector<std::string>{"1", "2", "3"}));
}

TEST_F(SessionTest, QuorumQueueRefusesAConsumerUnderGlobalQos) {
    TestClient& c = connect();
    c.declare_queue(1, "qq", quorum());
    ASSERT_TRUE(c.qos(1, 5, true));
    m::BasicConsume bc;
    bc.queue = "qq";
    c.send(1, bc);
    ServerFrame f = c.expect_connection_close(540);
    EXPECT_EQ(close_text(f), "NOT_IMPLEMENTED - queue 'qq' in vhost '/' does not support global qos");
}

TEST_F(SessionTest, GlobalQosAfterConsumingFromAQuorumQueueDoesNotLimitIt) {
    TestClient& c = connect();
    c.declare_queue(1, "qq", quorum());
    ASSERT_TRUE(c.qos(1, 0, true));  // a global limit of 0 is no limit: consuming is fine
    c.consume(1, "qq", false, "t");
    ASSERT_TRUE(c.qos(1, 1, true));
    for (const char* body : {"1", "2", "3"}) c.publish(1, "", "qq", body);
    for (int i = 0; i < 3; ++i) c.expect<m::BasicDeliver>(1);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
}

// ---- 7. get-ok's count after expiry ---------------------------------------------------

class FidelityTimeTest : public SessionTest {
protected:
    uint64_t now = 1'800'000'000'000;
    void SetUp() override { broker().set_test_clock_ms(now); }
};

TEST_F(FidelityTimeTest, GetOkCountLeavesOutWhatExpiredBehindTheHead) {
    TestClient& c = connect();
    c.declare_queue(1, "q");
    c.publish(1, "", "q", "head");
    amqp::BasicProperties ttl;
    ttl.expiration = "100";
    c.publish(1, "", "q", "expiring", ttl);
    c.publish(1, "", "q", "expiring too", ttl);
    c.publish(1, "", "q", "tail");
    broker().set_test_clock_ms(now + 200);
    ServerFrame f = c.get(1, "q", true);
    ASSERT_TRUE(f.is<m::BasicGetOk>()) << f.describe();
    EXPECT_EQ(f.body, "head");
    EXPECT_EQ(f.get<m::BasicGetOk>().message_count, 1u);
    EXPECT_EQ(c.get(1, "q", true).body, "tail");
}

// ---- 8. CR and LF in names -------------------------------------------------------------

TEST_F(SessionTest, CrAndLfAreStrippedFromQueueAndExchangeNames) {
    TestClient& c = connect();
    EXPECT_EQ(c.declare_queue(1, "a\r\nb\n"), "ab");
    ASSERT_TRUE(queue("ab"));
    EXPECT_TRUE(c.declare_exchange(1, "x\r\ny", "fanout"));
    ASSERT_TRUE(vhost().find_exchange("xy"));
    EXPECT_TRUE(c.bind_queue(1, "a\nb", "x\ry", ""));
    c.publish(1, "xy", "", "m");
    EXPECT_EQ(queue("ab")->ready_count(), 1u);
    m::QueueDelete qd;
    qd.queue = "\na\rb";
    c.send(1, qd);
    c.expect<m::QueueDeleteOk>(1);
    EXPECT_FALSE(queue("ab"));
}

// ---- 9. strict parsing ------------------------------------------------------------------

TEST_F(SessionTest, MethodWithBytesAfterItsArgumentsIs501) {
    TestClient& c = connect();
    m::QueueDeclare d;
    d.queue = "q";
    std::string payload;
    amqp::encode(payload, d);
    payload.push_back('\x07');
    c.send_frame(amqp::kFrameMethod, 1, payload);
    ServerFrame f = c.expect_connection_close(501);
    EXPECT_EQ(close_text(f), "FRAME_ERROR - cannot decode <<0,0,1,113,0,0,0,0,0,7>>");
    EXPECT_FALSE(queue("q"));
}

TEST_F(SessionTest, ChannelAndConnectionMethodsWithStrayBytesAre501) {
    // channel.open, channel.close and connection.close are acted on by
    // their ids; their arguments are held to the same rule.
    for (int which = 0; which < 3; ++which) {
        TestClient& c = connect();
        std::string payload;
        if (which == 0) amqp::encode(payload, m::ChannelOpen{});
        if (which == 1) amqp::encode(payload, m::ChannelClose{});
        if (which == 2) amqp::encode(payload, m::ConnectionClose{});
        payload.push_back('\x01');
        c.send_frame(amqp::kFrameMethod, which == 2 ? 0 : static_cast<uint16_t>(2 - which), payload);
        ServerFrame f = c.expect_connection_close(501);
        EXPECT_EQ(close_text(f).substr(0, 30), "FRAME_ERROR - cannot decode <<") << which;
    }
}

TEST_F(SessionTest, ShortStringOf256BytesIs501) {
    // A client that writes a 256-byte short string sends a length octet of 0
    // and then all 256 bytes: the rest no longer lines up with the fields.
    TestClient& c = connect();
    std::string payload;
    amqp::put_u32(payload, m::BasicPublish::key);
    amqp::put_u16(payload, 0);                // ticket
    amqp::put_u8(payload, 0);                 // exchange: 256 wraps to 0...
    payload.append(256, 'b');                 // ...and its bytes follow
    amqp::put_u8(payload, 1);                 // routing key "k"
    payload.push_back('k');
    amqp::put_u8(payload, 0);                 // mandatory, immediate
    c.send_frame(amqp::kFrameMethod, 1, payload);
    ServerFrame f = c.expect_connection_close(501);
    EXPECT_EQ(close_text(f).substr(0, 30), "FRAME_ERROR - cannot decode <<");
}

// ---- 10. the default exchange, amq.rabbitmq.trace ------------------------------------------

TEST_F(SessionTest, PassiveDeclareOfTheDefaultExchangeIs403) {
    TestClient& c = connect();
    m::ExchangeDeclare d;
    d.exchange = "";
    d.passive = true;
    c.send(1, d);
    ServerFrame f = c.expect_channel_close(1, 403);
    EXPECT_EQ(close_text(f), "ACCESS_REFUSED - operation not permitted on the default exchange");
}

TEST_F(SessionTest, TraceExchangeExistsAndRefusesPublishes) {
    TestClient& c = connect();
    m::ExchangeDeclare d;
    d.exchange = "amq.rabbitmq.trace";
    d.passive = true;
    c.send(1, d);
    c.expect<m::ExchangeDeclareOk>(1);
    EXPECT_TRUE(c.declare_exchange(1, "amq.rabbitmq.trace", "topic", true, false, true));
    c.declare_queue(1, "tap");
    EXPECT_TRUE(c.bind_queue(1, "tap", "amq.rabbitmq.trace", "#"));
    c.publish(1, "amq.rabbitmq.trace", "publish.x", "m");
    ServerFrame f = c.expect_channel_close(1, 403);
    EXPECT_EQ(close_text(f), "ACCESS_REFUSED - cannot publish to internal exchange 'amq.rabbitmq.trace' in vhost '/'");
}

}  // namespace
}  // namespace sluice::test
