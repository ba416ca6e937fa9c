// Queue arguments (parse + validate), dead-letter headers and cycles, the
// timer queue, and TTL / x-expires driven by a test clock through the
// sans-IO session.
#include <gtest/gtest.h>

#include "broker/dead_letter.hpp"
#include "broker/queue_arguments.hpp"
#include "broker/timer_queue.hpp"
#include "session_harness.hpp"

namespace sluice::test {
namespace {

namespace m = amqp::method;
using broker::DeathReason;
using broker::QueueArguments;

amqp::FieldTable table(std::initializer_list<std::pair<std::string, amqp::FieldValue>> entries) {
    amqp::FieldTable t;
    for (const auto& [k, v] : entries) t.set(k, v);
    return t;
}

std::variant<QueueArguments, broker::AmqpError> parse(const amqp::FieldTable& args, bool durable = false) {
    return broker::parse_queue_arguments(args, "q", "/", {durable, false, false});
}

std::string error_text(const amqp::FieldTable& args, bool durable = false) {
    auto r = parse(args, durable);
    const auto* e = std::get_if<broker::AmqpError>(&r);
    if (!e) return "(accepted)";
    EXPECT_EQ(e->code, broker::reply::precondition_failed);
    return e->text;
}

TEST(QueueArguments, ParsesEveryFeature) {
    auto r = parse(table({{"x-message-ttl", int32_t(1000)},
                          {"x-expires", int64_t(60000)},
                          {"x-dead-letter-exchange", "dlx"},
                          {"x-dead-letter-routing-key", "dead"},
                          {"x-max-length", int16_t(10)},
                          {"x-max-length-bytes", int32_t(4096)},
                          {"x-overflow", "reject-publish-dlx"},
                          {"x-max-priority", uint8_t(7)},
                          {"x-single-active-consumer", true},
                          {"x-whatever", "kept, ignored"}}));
    ASSERT_TRUE(std::holds_alternative<QueueArguments>(r)) << std::get<broker::AmqpError>(r).text;
    const QueueArguments& a = std::get<QueueArguments>(r);
    EXPECT_EQ(a.message_ttl_ms, 1000u);
    EXPECT_EQ(a.expires_ms, 60000u);
    EXPECT_EQ(a.dead_letter_exchange, "dlx");
    EXPECT_EQ(a.dead_letter_routing_key, "dead");
    EXPECT_EQ(a.max_length, 10u);
    EXPECT_EQ(a.max_length_bytes, 4096u);
    EXPECT_EQ(a.overflow, broker::Overflow::reject_publish_dlx);
    EXPECT_EQ(a.max_priority, 7);
    EXPECT_TRUE(a.single_active_consumer);
    EXPECT_EQ(a.type, broker::QueueType::classic);
}

TEST(QueueArguments, RefusesBadValuesAsRabbitMQWordsThem) {
    EXPECT_EQ(error_text(table({{"x-message-ttl", int32_t(-1)}})),
              "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}");
    EXPECT_EQ(error_text(table({{"x-max-length", "10"}})),
              "invalid arg 'x-max-length' for queue 'q' in vhost '/': \"expected integer, got longstr\"");
    EXPECT_EQ(error_text(table({{"x-dead-letter-exchange", int32_t(5)}})),
              "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'");
    EXPECT_EQ(error_text(table({{"x-expires", int32_t(0)}})),
              "invalid arg 'x-expires' for queue 'q' in vhost '/': {value_zero,0}");
    EXPECT_EQ(error_text(table({{"x-max-priority", int32_t(256)}})),
              "invalid arg 'x-max-priority' for queue 'q' in vhost '/': {max_value_exceeded,256}");
    EXPECT_EQ(error_text(table({{"x-overflow", "drop-tail"}})),
              "invalid arg 'x-overflow' for queue 'q' in vhost '/': {invalid_overflow,<<\"drop-tail\">>}");
    EXPECT_EQ(error_text(table({{"x-dead-letter-routing-key", "k"}})),
              "invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined");
    EXPECT_NE(error_text(table({{"x-message-ttl", int64_t(1) << 40}})).find("value_too_large"), std::string::npos);
}

TEST(QueueArguments, QueueTypes) {
    // A stream: durable, x-max-age and the segment size parsed, what it does not do refused.
    EXPECT_EQ(error_text(table({{"x-queue-type", "stream"}}), false),
              "invalid property 'non-durable' for queue 'q' in vhost '/'");
    auto stream = parse(table({{"x-queue-type", "stream"},
                               {"x-max-age", "7D"},
                               {"x-max-length-bytes", int64_t(1) << 30},
                               {"x-stream-max-segment-size-bytes", int32_t(1000000)}}),
                        true);
    ASSERT_TRUE(std::holds_alternative<QueueArguments>(stream));
    EXPECT_EQ(std::get<QueueArguments>(stream).type, broker::QueueType::stream);
    EXPECT_EQ(std::get<QueueArguments>(stream).max_age_ms, uint64_t{7} * 86400 * 1000);
    EXPECT_EQ(std::get<QueueArguments>(stream).max_length_bytes, uint64_t(1) << 30);
    EXPECT_EQ(std::get<QueueArguments>(stream).segment_bytes, 1000000u);
    EXPECT_EQ(error_text(table({{"x-queue-type", "stream"}, {"x-max-age", "7 days"}}), true),
              "invalid arg 'x-max-age' for queue 'q' in vhost '/': {invalid_max_age,<<\"7 days\">>}");
    EXPECT_EQ(error_text(table({{"x-queue-type", "stream"}, {"x-max-length", int32_t(10)}}), true),
              "invalid arg 'x-max-length' for queue 'q' in vhost '/' of queue type rabbit_stream_queue");
    EXPECT_EQ(broker::parse_stream_duration_ms("1h"), 3600000u);
    EXPECT_EQ(broker::parse_stream_duration_ms("30m"), 1800000u);
    EXPECT_EQ(broker::parse_stream_duration_ms("10s"), 10000u);
    EXPECT_EQ(broker::parse_stream_duration_ms("1Y"), uint64_t{365} * 86400 * 1000);
    EXPECT_FALSE(broker::parse_stream_duration_ms("h"));
    EXPECT_FALSE(broker::parse_stream_duration_ms("0s"));
    EXPECT_FALSE(broker::parse_stream_duration_ms("5w"));
    EXPECT_EQ(error_text(table({{"x-queue-type", "quorum"}}), false),
              "invalid property 'non-durable' for queue 'q' in vhost '/'");
    auto quorum = parse(table({{"x-queue-type", "quorum"}, {"x-delivery-limit", int32_t(3)}}), true);
    ASSERT_TRUE(std::holds_alternative<QueueArguments>(quorum));
    EXPECT_EQ(std::get<QueueArguments>(quorum).delivery_limit, 3u);
    // As RabbitMQ: a classic queue ignores the delivery limit.
    auto classic = parse(table({{"x-delivery-limit", int32_t(3)}}));
    ASSERT_TRUE(std::holds_alternative<QueueArguments>(classic));
    EXPECT_FALSE(std::get<QueueArguments>(classic).delivery_limit);
}

// --- dead-letter headers ------------------------------------------------------

broker::MessagePtr message(std::string_view exchange, std::string_view key, const amqp::BasicProperties& p,
                           std::string_view body = "payload") {
    std::string raw;
    amqp::encode_properties(raw, p);
    auto msg = std::make_shared<broker::Message>(exchange, key, raw, body.size());
    msg->append_body(body);
    return msg;
}

amqp::BasicProperties props_of(const broker::Message& m) {
    amqp::BasicProperties p;
    EXPECT_TRUE(amqp::decode_properties(m.properties(), p));
    return p;
}

const amqp::FieldTable& death(const amqp::BasicProperties& p, size_t i) {
    return *p.headers->find("x-death")->as_array()->at(i).as_table();
}

TEST(DeadLetter, FirstDeathWritesXDeathAndFirstDeathHeaders) {
    amqp::BasicProperties p;
    p.expiration = "500";
    p.correlation_id = "c";
    p.headers = table({{"CC", amqp::FieldArray{amqp::FieldValue("cc.key")}}});
    auto dl = broker::make_dead_letter(*message("ex", "rk", p), DeathReason::expired, "q1", "dlx", std::nullopt, 1700000000);
    const broker::Message& m = *dl.message;
    EXPECT_EQ(m.exchange(), "dlx");
    EXPECT_EQ(m.routing_key(), "rk");  // no x-dead-letter-routing-key: its own key
    EXPECT_EQ(m.body(), "payload");
    amqp::BasicProperties out = props_of(m);
    EXPECT_FALSE(out.expiration) << "the copy must not expire again";
    EXPECT_EQ(out.correlation_id, "c");
    EXPECT_EQ(*out.headers->find("x-first-death-reason")->as_string(), "expired");
    EXPECT_EQ(*out.headers->find("x-first-death-queue")->as_string(), "q1");
    EXPECT_EQ(*out.headers->find("x-first-death-exchange")->as_string(), "ex");
    const amqp::FieldTable& d = death(out, 0);
    EXPECT_EQ(d.find("count")->as_int(), 1);
    EXPECT_EQ(*d.find("reason")->as_string(), "expired");
    EXPECT_EQ(*d.find("queue")->as_string(), "q1");
    EXPECT_EQ(*d.find("exchange")->as_string(), "ex");
    EXPECT_EQ(std::get<amqp::Timestamp>(d.find("time")->v).seconds, 1700000000u);
    EXPECT_EQ(*d.find("original-expiration")->as_string(), "500");
    const amqp::FieldArray& keys = *d.find("routing-keys")->as_array();
    ASSERT_EQ(keys.size(), 2u);
    EXPECT_EQ(*keys[0].as_string(), "rk");
    EXPECT_EQ(*keys[1].as_string(), "cc.key");
}

TEST(DeadLetter, RepeatedDeathCountsAndMovesToTheFront) {
    auto m0 = message("ex", "rk", {});
    auto d1 = broker::make_dead_letter(*m0, DeathReason::rejected, "a", "dlx", std::string("to-b"), 1);
    auto d2 = broker::make_dead_letter(*d1.message, DeathReason::expired, "b", "dlx", std::string("to-a"), 2);
    auto d3 = broker::make_dead_letter(*d2.message, DeathReason::rejected, "a", "dlx", std::string("to-b"), 3);
    amqp::BasicProperties p = props_of(*d3.message);
    ASSERT_EQ(p.headers->find("x-death")->as_array()->size(), 2u);
    EXPECT_EQ(*death(p, 0).find("queue")->as_string(), "a");
    EXPECT_EQ(death(p, 0).find("count")->as_int(), 2);
    EXPECT_EQ(std::get<amqp::Timestamp>(death(p, 0).find("time")->v).seconds, 1u) << "first time kept";
    EXPECT_EQ(*death(p, 1).find("queue")->as_string(), "b");
    EXPECT_EQ(*p.headers->find("x-first-death-queue")->as_string(), "a") << "set once";
    EXPECT_EQ(d3.message->routing_key(), "to-b");
}

TEST(DeadLetter, CyclesFollowRabbitMQsRule) {
    auto m0 = message("ex", "rk", {});
    auto expired_a = broker::make_dead_letter(*m0, DeathReason::expired, "a", "dlx", std::nullopt, 1);
    EXPECT_TRUE(broker::dead_letter_cycles(expired_a.x_death, "a", DeathReason::expired));
    EXPECT_FALSE(broker::dead_letter_cycles(expired_a.x_death, "b", DeathReason::expired));
    // A rejection is never a cycle, and one inside a cycle breaks it.
    auto rejected_a = broker::make_dead_letter(*m0, DeathReason::rejected, "a", "dlx", std::nullopt, 1);
    EXPECT_FALSE(broker::dead_letter_cycles(rejected_a.x_death, "a", DeathReason::rejected));
    auto then_expired_b = broker::make_dead_letter(*rejected_a.message, DeathReason::expired, "b", "dlx", std::nullopt, 2);
    EXPECT_FALSE(broker::dead_letter_cycles(then_expired_b.x_death, "a", DeathReason::expired));
    EXPECT_TRUE(broker::dead_letter_cycles(then_expired_b.x_death, "b", DeathReason::expired));
}

TEST(DeadLetter, DeliveryCountHeader) {
    amqp::BasicProperties p;
    p.headers = table({{"keep", "me"}});
    auto m0 = message("ex", "rk", p);
    auto m2 = broker::with_delivery_count(*broker::with_delivery_count(*m0, 1), 2);
    amqp::BasicProperties out = props_of(*m2);
    EXPECT_EQ(out.headers->find("x-delivery-count")->as_int(), 2);
    EXPECT_EQ(*out.headers->find("keep")->as_string(), "me");
    EXPECT_EQ(m2->body(), "payload");
}

// --- timers ---------------------------------------------------------------------

TEST(TimerQueue, RunsDueCallbacksInDeadlineOrderAndReportsTheEarliest) {
    broker::TimerQueue t;
    std::vector<uint64_t> armed;
    t.on_earliest_changed([&](uint64_t d) { armed.push_back(d); });
    std::vector<int> ran;
    t.schedule(300, [&] { ran.push_back(3); });
    t.schedule(100, [&] { ran.push_back(1); });
    t.schedule(200, [&] { ran.push_back(2); });
    t.schedule(100, [&] { ran.push_back(11); });  // same deadline: after the first
    EXPECT_EQ(armed, (std::vector<uint64_t>{300, 100}));
    EXPECT_EQ(t.run(99), 100u);
    EXPECT_TRUE(ran.empty());
    EXPECT_EQ(t.run(200), 300u);
    EXPECT_EQ(ran, (std::vector<int>{1, 11, 2}));
    t.schedule(250, [&] { t.schedule(260, [&] { ran.push_back(26); }); });
    EXPECT_EQ(t.run(1000), 0u);
    EXPECT_EQ(ran, (std::vector<int>{1, 11, 2, 26, 3}));
}

// --- TTL and expiry through a session, on a test clock ---------------------------

class QueueTimeTest : public SessionTest {
protected:
    uint64_t now = 1'800'000'000'000;
    void at(uint64_t ms) {
        now = ms;
        broker().set_test_clock_ms(now);
        broker().timers().run(now);
    }
    void SetUp() override { broker().set_test_clock_ms(now); }
};

TEST_F(QueueTimeTest, QueueTtlExpiresAtTheMillisecondAndDeadLetters) {
    TestClient& c = connect();
    std::string dlq = c.declare_queue(1, "dlq");
    QueueOpts o;
    o.arguments = table({{"x-message-ttl", int32_t(1000)},
                         {"x-dead-letter-exchange", ""},
                         {"x-dead-letter-routing-key", "dlq"}});
    std::string q = c.declare_queue(1, "ttl", o);
    uint64_t t0 = now;
    c.publish(1, "", q, "m");
    at(t0 + 999);
    EXPECT_EQ(queue(q)->ready_count(), 1u);
    EXPECT_EQ(queue(dlq)->ready_count(), 0u);
    at(t0 + 1000);
    EXPECT_EQ(queue(q)->ready_count(), 0u);
    EXPECT_EQ(queue(dlq)->ready_count(), 1u);
    EXPECT_EQ(queue(q)->counters.expired, 1u);
    EXPECT_EQ(queue(q)->counters.dead_lettered, 1u);
    EXPECT_EQ(c.get(1, dlq, true).body, "m");
}

TEST_F(QueueTimeTest, RequeuedMessageKeepsItsExpiry) {
    TestClient& c = connect();
    QueueOpts o;
    o.arguments = table({{"x-message-ttl", int32_t(500)}});
    std::string q = c.declare_queue(1, "ttl", o);
    uint64_t t0 = now;
    c.publish(1, "", q, "m");
    ServerFrame f = c.get(1, q, false);
    ASSERT_TRUE(f.is<m::BasicGetOk>()) << f.describe();
    at(t0 + 400);
    c.reject(1, f.get<m::BasicGetOk>().delivery_tag, true);
    EXPECT_EQ(queue(q)->ready_count(), 1u);
    at(t0 + 500);
    EXPECT_EQ(queue(q)->ready_count(), 0u);
}

TEST_F(QueueTimeTest, ExpiresDeletesAnUnusedQueueAndUseRestartsIt) {
    TestClient& c = connect();
    QueueOpts o;
    o.arguments = table({{"x-expires", int32_t(1000)}});
    std::string q = c.declare_queue(1, "exp", o);
    uint64_t t0 = now;
    at(t0 + 600);
    (void)c.get(1, q, true);  // use: the lease restarts
    at(t0 + 1000);
    EXPECT_TRUE(queue(q));
    at(t0 + 1599);
    EXPECT_TRUE(queue(q));
    at(t0 + 1600);
    EXPECT_FALSE(queue(q));
}

}  // namespace
}  // namespace sluice::test
