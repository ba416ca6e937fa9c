// Session tests for limits: the consumer timeout (an unacked delivery held
// too long closes its channel and requeues), max connections (530 at
// connection.open), the memory and disk alarms together (one
// connection.blocked, the reason naming both), and a content header that
// announces a large body costing no memory before the body arrives.
#include <gtest/gtest.h>

#include "broker/message.hpp"
#include "tests/unit/session_harness.hpp"

namespace sluice::test {
namespace {

namespace m = amqp::method;
using broker::Alarm;

std::string reply_text(const ServerFrame& f) {
    if (f.is<m::ChannelClose>()) return std::string(f.get<m::ChannelClose>().reply_text);
    if (f.is<m::ConnectionClose>()) return std::string(f.get<m::ConnectionClose>().reply_text);
    return "(not a close: " + f.describe() + ")";
}

// ---- consumer timeout --------------------------------------------------------

TEST_F(SessionTest, UnackedDeliveryPastConsumerTimeoutClosesChannelAndRequeues) {
    config.consumer_timeout_ms = 2000;
    broker().tick(1000);
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "slow-consumer");
    c.publish(1, "", q, "a");
    c.publish(1, "", q, "b");
    c.consume(1, q);
    c.expect<m::BasicDeliver>(1);
    c.expect<m::BasicDeliver>(1);
    EXPECT_EQ(queue(q)->unacked_count(), 2u);

    broker().tick(1002);  // 2 s: not more than the timeout yet
    EXPECT_EQ(c.drain(), 0u) << c.describe_pending();
    broker().tick(1003);
    c.drain();
    ServerFrame close = c.expect_channel_close(1, 406);
    EXPECT_EQ(reply_text(close),
              "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 2000 ms. "
              "This timeout value can be configured, see consumers doc guide to learn more");
    // Both deliveries are back in the queue, ready for someone else.
    EXPECT_EQ(queue(q)->unacked_count(), 0u);
    EXPECT_EQ(queue(q)->ready_count(), 2u);

    // The connection lives on: a new channel gets the messages again.
    ASSERT_TRUE(c.open_channel(2));
    ServerFrame got = c.get(2, q, true);
    ASSERT_TRUE(got.is<m::BasicGetOk>()) << got.describe();
    EXPECT_TRUE(got.get<m::BasicGetOk>().redelivered);
}

TEST_F(SessionTest, AckedDeliveriesAndBasicGetAreTimedFromTheOldestUnacked) {
    config.consumer_timeout_ms = 1000;
    broker().tick(500);
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "acking");
    c.publish(1, "", q, "a");
    c.consume(1, q);
    ServerFrame d = c.expect<m::BasicDeliver>(1);
    c.ack(1, d.get<m::BasicDeliver>().delivery_tag);
    // Acked in time: nothing unacked, no timeout however long we wait.
    broker().tick(600);
    EXPECT_EQ(c.drain(), 0u) << c.describe_pending();

    // basic.get without no-ack counts too (as in RabbitMQ).
    ASSERT_TRUE(c.open_channel(2));
    std::string q2 = c.declare_queue(2, "got");
    c.publish(2, "", q2, "x");
    ServerFrame g = c.get(2, q2, false);
    ASSERT_TRUE(g.is<m::BasicGetOk>()) << g.describe();
    broker().tick(602);
    c.drain();
    c.expect_channel_close(2, 406);
    EXPECT_EQ(queue(q2)->ready_count(), 1u);
}

TEST_F(SessionTest, ConsumerTimeoutZeroMeansNone) {
    config.consumer_timeout_ms = 0;
    broker().tick(100);
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "forever");
    c.publish(1, "", q, "a");
    c.consume(1, q);
    c.expect<m::BasicDeliver>(1);
    broker().tick(100 + 86400 * 30);
    EXPECT_EQ(c.drain(), 0u) << c.describe_pending();
    EXPECT_EQ(queue(q)->unacked_count(), 1u);
}

// ---- max connections ---------------------------------------------------------

TEST_F(SessionTest, ConnectionOpenPastMaxConnectionsIsRefusedWith530) {
    config.max_connections = 2;
    TestClient& a = connect();
    TestClient& b = connect();
    TestClient& c = client();
    EXPECT_FALSE(c.handshake());
    ServerFrame close = c.expect_connection_close(530);
    EXPECT_EQ(reply_text(close), "NOT_ALLOWED - connection refused: node connection limit (2) is reached");
    EXPECT_EQ(broker().open_connection_count(), 2u);

    // A slot frees when a connection goes; the next client gets it.
    b.transport_closed();
    EXPECT_EQ(broker().open_connection_count(), 1u);
    TestClient& d = client();
    EXPECT_TRUE(d.handshake()) << d.describe_pending();
    EXPECT_EQ(broker().open_connection_count(), 2u);
    (void)a;
}

// ---- alarms ------------------------------------------------------------------

TEST_F(SessionTest, MemoryAndDiskAlarmsBlockOnceAndUnblockWhenBothClear) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "alarm-once");
    c.publish(1, "", q, "m");  // a publishing connection: it hears the alarm
    c.drain();
    broker().set_alarm(Alarm::memory, true);
    c.drain();
    ServerFrame b = c.expect<m::ConnectionBlocked>(0);
    ASSERT_TRUE(b.is<m::ConnectionBlocked>());
    EXPECT_EQ(b.get<m::ConnectionBlocked>().reason, "low on memory");
    EXPECT_EQ(broker().alarm_reason(), "low on memory");

    broker().set_alarm(Alarm::disk, true);  // already blocked: nothing new is sent
    c.drain();
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    EXPECT_EQ(broker().alarm_reason(), "low on memory & disk");

    broker().set_alarm(Alarm::memory, false);  // disk still on: still blocked
    c.drain();
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    EXPECT_TRUE(broker().alarm_active());

    broker().set_alarm(Alarm::disk, false);
    c.drain();
    c.expect<m::ConnectionUnblocked>(0);
    EXPECT_FALSE(broker().alarm_active());
}

TEST_F(SessionTest, MemoryAlarmStopsReadingAPublisherButNotAConsumer) {
    TestClient& pub = connect();
    TestClient& sub = connect();
    std::string q = pub.declare_queue(1, "alarmed");
    pub.publish(1, "", q, "before");
    broker().set_alarm(Alarm::memory, true);
    sub.drain();
    EXPECT_EQ(sub.pending(), 0u) << "a connection that never published is not blocked (RabbitMQ): "
                                 << sub.describe_pending();
    pub.drain();
    pub.expect<m::ConnectionBlocked>(0);
    EXPECT_FALSE(sub.session().reading_paused());
    pub.publish(1, "", q, "during");  // read (it is the publish that blocks)...
    EXPECT_TRUE(pub.session().reading_paused());
    EXPECT_FALSE(sub.session().reading_paused());
    ServerFrame got = sub.get(1, q, true);  // ...and a consumer still drains
    ASSERT_TRUE(got.is<m::BasicGetOk>()) << got.describe();
    EXPECT_EQ(got.body, "before");
    // A consumer that starts publishing during the alarm hears it then.
    sub.publish(1, "", q, "late");
    sub.drain();
    sub.expect<m::ConnectionBlocked>(0);
    EXPECT_TRUE(sub.session().reading_paused());
    broker().set_alarm(Alarm::memory, false);
    EXPECT_FALSE(pub.session().reading_paused());
    EXPECT_GE(pub.host().resume_reading_calls, 1);
}

// ---- message memory ----------------------------------------------------------

TEST(MessageMemory, AnnouncedBodyIsNotReservedUpFront) {
    const uint64_t announced = 100ull << 20;
    broker::Message msg("", "q", "", announced);
    EXPECT_LT(msg.memory_size(), size_t(256 << 10)) << "a 100 MiB announcement reserved its body";
    const std::string chunk(131064, 'x');
    uint64_t sent = 0;
    while (sent + chunk.size() <= (4u << 20)) {
        msg.append_body(chunk);
        sent += chunk.size();
    }
    // Grows with what arrived (amortised doubling), never to the announcement.
    EXPECT_LT(msg.memory_size(), size_t(3 * sent));
    EXPECT_EQ(msg.body().size(), sent);
}

TEST(MessageMemory, CompleteBodyNeverExceedsItsSize) {
    const std::string body(1000000, 'y');
    broker::Message msg("ex", "rk", "", body.size());
    for (size_t off = 0; off < body.size(); off += 131064) msg.append_body(std::string_view(body).substr(off, 131064));
    ASSERT_TRUE(msg.body_complete());
    EXPECT_EQ(msg.body(), body);
    EXPECT_LE(msg.memory_size(), sizeof(msg) + body.size() + 2 + 64);  // exact capacity, give or take the allocator
}

}  // namespace
}  // namespace sluice::test
