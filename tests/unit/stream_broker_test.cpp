// Streams (broker/stream.hpp) through sans-IO sessions over a real store on
// the power-loss file system (durable_broker_fixture.hpp): confirmed
// messages survive a power loss and come back in order with their offsets;
// a reader sees only synced chunks; a reader's memory is bounded however
// far behind it is; acks and nacks remove nothing.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "broker/queue.hpp"
#include "broker/stream.hpp"
#include "tests/unit/durable_broker_fixture.hpp"

namespace sluice::test {
namespace {

class StreamBrokerTest : public DurableBrokerTest {
protected:
    void declare_stream(TestClient& c, std::string_view name, amqp::FieldTable args = {}) {
        m::QueueDeclare d;
        d.queue = name;
        d.durable = true;
        args.set("x-queue-type", std::string("stream"));
        d.arguments = args;
        c.send(1, d);
        settle();
        c.expect<m::QueueDeclareOk>(1);
    }
    void consume_from(TestClient& c, std::string_view name, amqp::FieldValue offset, uint16_t prefetch) {
        ASSERT_TRUE(c.qos(1, prefetch));
        m::BasicConsume bc;
        bc.queue = name;
        bc.arguments.set("x-stream-offset", std::move(offset));
        c.send(1, bc);
        settle();
        c.expect<m::BasicConsumeOk>(1);
    }
    // Deliveries pending on the client: (x-stream-offset, body, tag).
    struct Got {
        int64_t offset;
        std::string body;
        uint64_t tag;
    };
    std::vector<Got> deliveries(TestClient& c) {
        std::vector<Got> out;
        for (;;) {
            ServerFrame f = c.next();
            if (!f.valid()) return out;
            if (!f.is<m::BasicDeliver>()) {
                ADD_FAILURE() << "expected basic.deliver, got " << f.describe();
                return out;
            }
            const amqp::FieldValue* h = f.properties.headers ? f.properties.headers->find("x-stream-offset") : nullptr;
            EXPECT_TRUE(h && h->type_code() == 'l');
            out.push_back({h ? h->as_int().value_or(-1) : -1, f.body, f.get<m::BasicDeliver>().delivery_tag});
        }
    }
    // Publishes n messages with confirms, one turn each; returns the confirms heard.
    size_t publish_confirmed(TestClient& c, std::string_view name, int from, int n, size_t size = 8) {
        for (int i = from; i < from + n; ++i) {
            std::string body = "m" + std::to_string(i);
            body.resize(std::max(size, body.size()), '.');
            c.publish(1, "", name, body);
        }
        settle();
        size_t acks = 0;
        for (ServerFrame f = c.next(); f.valid(); f = c.next())
            if (f.is<m::BasicAck>()) ++acks;
        return acks;
    }
};

TEST_F(StreamBrokerTest, ConfirmedMessagesSurviveAPowerLossInOrderWithTheirOffsets) {
    start();
    TestClient& c = connect();
    declare_stream(c, "s");
    ASSERT_TRUE(c.confirm_select(1));
    ASSERT_GT(publish_confirmed(c, "s", 0, 30), 0u);
    ASSERT_GT(publish_confirmed(c, "s", 30, 20), 0u);
    // Published, not yet committed when the power goes: may be lost, never
    // half there.
    for (int i = 50; i < 55; ++i) c.publish(1, "", "s", "m" + std::to_string(i));
    lose_power();
    start();
    ASSERT_TRUE(queue("s") && queue("s")->stream());
    EXPECT_EQ(queue("s")->ready_count(), 50u);
    TestClient& r = connect();
    consume_from(r, "s", std::string("first"), 100);
    settle();
    std::vector<Got> got = deliveries(r);
    ASSERT_EQ(got.size(), 50u);
    for (int i = 0; i < 50; ++i) {
        EXPECT_EQ(got[i].offset, i);
        EXPECT_EQ(got[i].body.substr(0, got[i].body.find('.')), "m" + std::to_string(i));
    }
}

TEST_F(StreamBrokerTest, AReaderSeesOnlySyncedChunks) {
    start();
    TestClient& c = connect();
    declare_stream(c, "s");
    TestClient& r = connect();
    consume_from(r, "s", std::string("first"), 100);
    c.publish(1, "", "s", "one");
    // The publish's turn has not ended: nothing is synced, nothing delivered.
    EXPECT_TRUE(deliveries(r).empty());
    settle();
    std::vector<Got> got = deliveries(r);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].offset, 0);
    EXPECT_EQ(got[0].body, "one");
}

TEST_F(StreamBrokerTest, AReaderFarBehindHoldsOnlyItsReadAhead) {
    start();
    TestClient& c = connect();
    declare_stream(c, "s");
    // 4 MiB in batches of 64 messages of 1 KiB.
    for (int b = 0; b < 64; ++b) publish_confirmed(c, "s", b * 64, 64, 1024);
    broker::QueuePtr q = queue("s");
    ASSERT_EQ(q->ready_count(), 4096u);
    TestClient& r = connect();
    consume_from(r, "s", int64_t(0), 10);
    settle();
    std::vector<Got> got = deliveries(r);
    ASSERT_EQ(got.size(), 10u);  // the prefetch
    // Read ahead: at most kReadAhead plus one chunk (64 KiB here), not the stream.
    EXPECT_GT(q->stream()->buffered_bytes(), 0u);
    EXPECT_LE(q->stream()->buffered_bytes(), broker::Stream::kReadAhead + 70 * 1024);
    // Acking moves the reader on; the stream keeps everything.
    size_t total = got.size();
    int64_t expect = 0;
    for (const Got& g : got) EXPECT_EQ(g.offset, expect++);
    while (total < 4096) {
        r.ack(1, got.back().tag, true);
        settle();
        got = deliveries(r);
        ASSERT_FALSE(got.empty()) << "stalled at " << total;
        for (const Got& g : got) EXPECT_EQ(g.offset, expect++);
        total += got.size();
        EXPECT_LE(q->stream()->buffered_bytes(), broker::Stream::kReadAhead + 70 * 1024);
    }
    EXPECT_EQ(q->ready_count(), 4096u);
}

TEST_F(StreamBrokerTest, NacksAndRejectsGiveCreditBackAndRedeliverNothing) {
    start();
    TestClient& c = connect();
    declare_stream(c, "s");
    ASSERT_TRUE(c.confirm_select(1));
    publish_confirmed(c, "s", 0, 4);
    TestClient& r = connect();
    consume_from(r, "s", std::string("first"), 1);
    std::vector<Got> got = deliveries(r);
    ASSERT_EQ(got.size(), 1u);
    r.nack(1, got[0].tag, false, true);
    settle();
    got = deliveries(r);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].offset, 1);  // not 0 again
    r.reject(1, got[0].tag, false);
    settle();
    got = deliveries(r);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].offset, 2);
    EXPECT_EQ(queue("s")->unacked_count(), 1u);
    EXPECT_EQ(queue("s")->ready_count(), 4u);
}

TEST_F(StreamBrokerTest, RetentionSurvivesARestartAndReadersSkipWhatWentAway) {
    start();
    TestClient& c = connect();
    amqp::FieldTable args;
    args.set("x-max-length-bytes", int64_t(20000));
    args.set("x-stream-max-segment-size-bytes", int64_t(5000));
    declare_stream(c, "s", args);
    ASSERT_TRUE(c.confirm_select(1));
    for (int b = 0; b < 20; ++b) publish_confirmed(c, "s", b * 4, 4, 1000);
    const uint64_t kept = queue("s")->ready_count();
    EXPECT_LT(kept, 80u);
    EXPECT_GE(kept, 16u);
    crash();
    start();
    EXPECT_EQ(queue("s")->ready_count(), kept);
    TestClient& r = connect();
    consume_from(r, "s", int64_t(0), 200);  // offset 0 is gone: the reader starts at the first kept
    settle();
    std::vector<Got> got = deliveries(r);
    ASSERT_EQ(got.size(), kept);
    EXPECT_EQ(got.front().offset, int64_t(80 - kept));
    EXPECT_EQ(got.back().offset, 79);
}

TEST_F(StreamBrokerTest, EveryOffsetFormStartsWhereRabbitMQsDoes) {
    start();
    TestClient& c = connect();
    declare_stream(c, "s");
    ASSERT_TRUE(c.confirm_select(1));
    publish_confirmed(c, "s", 0, 6);  // one batch: offsets 0-5 in one chunk
    publish_confirmed(c, "s", 6, 4);  // another: 6-9
    auto first_offset = [&](amqp::FieldValue offset) {
        TestClient& r = connect();
        consume_from(r, "s", std::move(offset), 100);
        settle();
        std::vector<Got> got = deliveries(r);
        return got.empty() ? int64_t(-1) : got.front().offset;
    };
    EXPECT_EQ(first_offset(std::string("first")), 0);
    EXPECT_EQ(first_offset(int64_t(7)), 7);
    EXPECT_EQ(first_offset(int32_t(3)), 3);
    EXPECT_EQ(first_offset(std::string("last")), 6);  // the first message of the last chunk
    EXPECT_EQ(first_offset(std::string("next")), -1);  // nothing until the next publish
    EXPECT_EQ(first_offset(int64_t(1000)), -1);        // past the end: next
    EXPECT_EQ(first_offset(std::string("1h")), 0);
    const uint64_t now_s = broker_->now_ms() / 1000;
    EXPECT_EQ(first_offset(amqp::Timestamp{now_s - 60}), 0);
    EXPECT_EQ(first_offset(amqp::Timestamp{now_s + 3600}), -1);
}

TEST_F(StreamBrokerTest, ConsumeAndGetRulesAreRabbitMQs) {
    start();
    TestClient& c = connect();
    declare_stream(c, "s");
    m::BasicConsume bc;
    bc.queue = "s";
    c.send(1, bc);  // no basic.qos
    settle();
    c.expect_channel_close(1, 406);
    TestClient& c2 = connect();
    ASSERT_TRUE(c2.qos(1, 10));
    bc.arguments.set("x-stream-offset", std::string("yesterday"));
    c2.send(1, bc);
    settle();
    c2.expect_channel_close(1, 406);
    TestClient& c3 = connect();
    ASSERT_TRUE(c3.qos(1, 10));
    m::BasicConsume no_ack;
    no_ack.queue = "s";
    no_ack.no_ack = true;
    c3.send(1, no_ack);
    settle();
    c3.expect_connection_close(540);
    TestClient& c4 = connect();
    m::BasicGet g;
    g.queue = "s";
    c4.send(1, g);
    settle();
    c4.expect_connection_close(540);
}

}  // namespace
}  // namespace sluice::test
