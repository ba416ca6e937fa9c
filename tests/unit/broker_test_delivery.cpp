// Session tests: publish, consume, get, prefetch, acknowledgements, requeue
// on close, queue lifetime (auto-delete, exclusive, delete) and output
// back-pressure.
#include <gtest/gtest.h>

#include "tests/unit/session_harness.hpp"

namespace sluice::test {
namespace {

namespace m = amqp::method;

std::string pattern_body(size_t n) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
    return s;
}

// Receives `n` deliveries, ADD_FAILURE if fewer came.
std::vector<ServerFrame> deliveries(TestClient& c, uint16_t channel, size_t n) {
    std::vector<ServerFrame> out;
    for (size_t i = 0; i < n; ++i) {
        ServerFrame f = c.expect<m::BasicDeliver>(channel);
        if (!f.is<m::BasicDeliver>()) break;
        out.push_back(std::move(f));
    }
    return out;
}

TEST_F(SessionTest, PublishConsumeLargeBodySplitByFrameMax) {
    ClientOptions o;
    o.frame_max = 4096;
    TestClient& consumer = connect(o);
    TestClient& publisher = connect(o);
    std::string q = consumer.declare_queue(1, "big");
    std::string tag = consumer.consume(1, q);

    const std::string body = pattern_body(300 * 1024);
    amqp::BasicProperties props;
    props.content_type = "application/octet-stream";
    props.headers = table({{"k", amqp::FieldValue(int32_t(42))}, {"s", amqp::FieldValue("v")}});
    props.delivery_mode = 2;
    props.correlation_id = "corr";
    props.message_id = "mid";
    props.timestamp = 1700000000;
    props.app_id = "test";
    int flushes = consumer.host().flush_requests;
    publisher.publish(1, "", q, body, props);
    EXPECT_EQ(publisher.pending(), 0u) << publisher.describe_pending();
    // The delivery was written to the consumer's connection, which asked for a flush.
    EXPECT_GT(consumer.host().flush_requests, flushes);

    ServerFrame d = consumer.expect<m::BasicDeliver>(1);
    ASSERT_TRUE(d.is<m::BasicDeliver>());
    const auto& del = d.get<m::BasicDeliver>();
    EXPECT_EQ(std::string_view(del.consumer_tag), tag);
    EXPECT_EQ(del.delivery_tag, 1u);
    EXPECT_FALSE(del.redelivered);
    EXPECT_EQ(std::string_view(del.exchange), "");
    EXPECT_EQ(std::string_view(del.routing_key), q);
    EXPECT_EQ(d.content_class, 60);
    EXPECT_EQ(d.body_size, body.size());
    EXPECT_TRUE(d.body == body) << "body differs (" << d.body.size() << " bytes)";
    EXPECT_EQ(d.properties, props);
    const size_t max_chunk = 4096 - amqp::kFrameOverhead;
    EXPECT_EQ(d.body_frame_sizes.size(), (body.size() + max_chunk - 1) / max_chunk);
    for (size_t s : d.body_frame_sizes) EXPECT_LE(s, max_chunk);
    EXPECT_EQ(consumer.pending(), 0u) << consumer.describe_pending();
}

TEST_F(SessionTest, EmptyBodyRoundTrip) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "");
    EXPECT_EQ(q.rfind("amq.gen-", 0), 0u) << q;
    c.publish(1, "", q, "");
    ServerFrame f = c.get(1, q);
    ASSERT_TRUE(f.is<m::BasicGetOk>()) << f.describe();
    EXPECT_EQ(f.body_size, 0u);
    EXPECT_EQ(f.body, "");
}

TEST_F(SessionTest, GetAndGetEmptyWithMessageCount) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "g");
    ServerFrame empty = c.get(1, q);
    EXPECT_TRUE(empty.is<m::BasicGetEmpty>()) << empty.describe();
    for (int i = 1; i <= 3; ++i) c.publish(1, "", q, "m" + std::to_string(i));

    ServerFrame f1 = c.get(1, q);
    ASSERT_TRUE(f1.is<m::BasicGetOk>()) << f1.describe();
    EXPECT_EQ(f1.get<m::BasicGetOk>().message_count, 2u);
    EXPECT_EQ(f1.get<m::BasicGetOk>().delivery_tag, 1u);
    EXPECT_FALSE(f1.get<m::BasicGetOk>().redelivered);
    EXPECT_EQ(std::string_view(f1.get<m::BasicGetOk>().routing_key), "g");
    EXPECT_EQ(f1.body, "m1");

    ServerFrame f2 = c.get(1, q, /*no_ack=*/true);
    ASSERT_TRUE(f2.is<m::BasicGetOk>());
    EXPECT_EQ(f2.get<m::BasicGetOk>().message_count, 1u);
    EXPECT_EQ(f2.get<m::BasicGetOk>().delivery_tag, 2u);
    EXPECT_EQ(f2.body, "m2");
    EXPECT_EQ(queue(q)->unacked_count(), 1u);  // m1 only: m2 was no_ack

    ServerFrame f3 = c.get(1, q);
    ASSERT_TRUE(f3.is<m::BasicGetOk>());
    EXPECT_EQ(f3.get<m::BasicGetOk>().message_count, 0u);
    EXPECT_EQ(f3.body, "m3");
    EXPECT_TRUE(c.get(1, q).is<m::BasicGetEmpty>());

    // declare-ok counts ready messages only.
    c.publish(1, "", q, "m4");
    QueueOpts passive;
    passive.passive = true;
    m::QueueDeclare d;
    d.queue = q;
    d.passive = true;
    c.send(1, d);
    ServerFrame ok = c.expect<m::QueueDeclareOk>(1);
    ASSERT_TRUE(ok.is<m::QueueDeclareOk>());
    EXPECT_EQ(ok.get<m::QueueDeclareOk>().message_count, 1u);
}

TEST_F(SessionTest, GetFromMissingQueueIs404) {
    TestClient& c = connect();
    m::BasicGet g;
    g.queue = "nope";
    c.send(1, g);
    c.expect_channel_close(1, 404);
}

TEST_F(SessionTest, PrefetchLimitsUnackedDeliveries) {
    TestClient& consumer = connect();
    TestClient& publisher = connect();
    std::string q = consumer.declare_queue(1, "pf");
    ASSERT_TRUE(consumer.qos(1, 3));
    consumer.consume(1, q);
    for (int i = 1; i <= 10; ++i) publisher.publish(1, "", q, "m" + std::to_string(i));

    auto got = deliveries(consumer, 1, 3);
    ASSERT_EQ(got.size(), 3u);
    EXPECT_EQ(consumer.pending(), 0u) << "more than prefetch delivered: " << consumer.describe_pending();
    EXPECT_EQ(queue(q)->ready_count(), 7u);
    EXPECT_EQ(queue(q)->unacked_count(), 3u);

    consumer.ack(1, got[1].get<m::BasicDeliver>().delivery_tag);
    ServerFrame next = consumer.expect<m::BasicDeliver>(1);
    ASSERT_TRUE(next.is<m::BasicDeliver>());
    EXPECT_EQ(next.body, "m4");
    EXPECT_EQ(next.get<m::BasicDeliver>().delivery_tag, 4u);
    EXPECT_EQ(consumer.pending(), 0u) << consumer.describe_pending();
    EXPECT_EQ(queue(q)->ready_count(), 6u);
}

TEST_F(SessionTest, LargerQosLetsExistingConsumerResume) {
    // basic.qos(global=false) applies to consumers created after it, as in
    // RabbitMQ; a channel-wide (global) limit applies at once.
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "pf2");
    ASSERT_TRUE(c.qos(1, 1, /*global=*/true));
    c.consume(1, q);
    for (int i = 0; i < 3; ++i) c.publish(1, "", q, "x");
    EXPECT_EQ(deliveries(c, 1, 1).size(), 1u);
    EXPECT_EQ(c.pending(), 0u);
    ASSERT_TRUE(c.qos(1, 3, /*global=*/true));
    EXPECT_EQ(deliveries(c, 1, 2).size(), 2u);
}

TEST_F(SessionTest, GlobalQosLimitsTheWholeChannel) {
    TestClient& c = connect();
    std::string qa = c.declare_queue(1, "ga");
    std::string qb = c.declare_queue(1, "gb");
    ASSERT_TRUE(c.qos(1, 2, /*global=*/true));
    c.consume(1, qa);
    c.consume(1, qb);
    for (int i = 0; i < 3; ++i) {
        c.publish(1, "", qa, "a");
        c.publish(1, "", qb, "b");
    }
    auto got = deliveries(c, 1, 2);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(c.pending(), 0u) << "channel prefetch exceeded: " << c.describe_pending();
    EXPECT_EQ(queue(qa)->ready_count() + queue(qb)->ready_count(), 4u);
    c.ack(1, got[0].get<m::BasicDeliver>().delivery_tag);
    EXPECT_EQ(deliveries(c, 1, 1).size(), 1u);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
}

TEST_F(SessionTest, GetDoesNotCountAgainstPrefetch) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "gp");
    ASSERT_TRUE(c.qos(1, 1, true));
    for (int i = 0; i < 3; ++i) c.publish(1, "", q, "x");
    EXPECT_TRUE(c.get(1, q).is<m::BasicGetOk>());
    EXPECT_TRUE(c.get(1, q).is<m::BasicGetOk>());
    c.consume(1, q);
    EXPECT_EQ(deliveries(c, 1, 1).size(), 1u);
}

TEST_F(SessionTest, AckMultiple) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "am");
    c.consume(1, q);
    for (int i = 0; i < 5; ++i) c.publish(1, "", q, "x");
    ASSERT_EQ(deliveries(c, 1, 5).size(), 5u);
    EXPECT_EQ(queue(q)->unacked_count(), 5u);
    c.ack(1, 3, /*multiple=*/true);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    EXPECT_EQ(queue(q)->unacked_count(), 2u);
    c.ack(1, 5, true);
    EXPECT_EQ(queue(q)->unacked_count(), 0u);
    // Tag 4 is settled already: acking it again is an unknown tag.
    c.ack(1, 4);
    c.expect_channel_close(1, 406);
}

TEST_F(SessionTest, AckMultipleZeroAcksEverything) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "am0");
    c.consume(1, q);
    for (int i = 0; i < 4; ++i) c.publish(1, "", q, "x");
    ASSERT_EQ(deliveries(c, 1, 4).size(), 4u);
    c.ack(1, 0, true);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    EXPECT_EQ(queue(q)->unacked_count(), 0u);
}

TEST_F(SessionTest, NackRequeueRestoresOriginalOrder) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "order");
    for (int i = 1; i <= 3; ++i) c.publish(1, "", q, std::to_string(i));
    ServerFrame g1 = c.get(1, q);
    ServerFrame g2 = c.get(1, q);
    ASSERT_EQ(g1.body, "1");
    ASSERT_EQ(g2.body, "2");
    c.nack(1, g2.get<m::BasicGetOk>().delivery_tag, false, true);
    c.nack(1, g1.get<m::BasicGetOk>().delivery_tag, false, true);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    EXPECT_EQ(queue(q)->unacked_count(), 0u);

    const char* bodies[] = {"1", "2", "3"};
    const bool redelivered[] = {true, true, false};
    for (int i = 0; i < 3; ++i) {
        ServerFrame f = c.get(1, q, true);
        ASSERT_TRUE(f.is<m::BasicGetOk>()) << f.describe();
        EXPECT_EQ(f.body, bodies[i]);
        EXPECT_EQ(f.get<m::BasicGetOk>().redelivered, redelivered[i]) << "message " << bodies[i];
    }
}

TEST_F(SessionTest, NackMultipleRequeueRedeliversToConsumerInOrder) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "nm");
    ASSERT_TRUE(c.qos(1, 3));
    c.consume(1, q);
    for (int i = 1; i <= 3; ++i) c.publish(1, "", q, std::to_string(i));
    ASSERT_EQ(deliveries(c, 1, 3).size(), 3u);
    c.nack(1, 3, /*multiple=*/true, /*requeue=*/true);
    auto again = deliveries(c, 1, 3);
    ASSERT_EQ(again.size(), 3u);
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(again[i].body, std::to_string(i + 1));
        EXPECT_TRUE(again[i].get<m::BasicDeliver>().redelivered);
        EXPECT_EQ(again[i].get<m::BasicDeliver>().delivery_tag, uint64_t(4 + i));
    }
}

TEST_F(SessionTest, RejectWithoutRequeueDrops) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "rj");
    c.publish(1, "", q, "bye");
    ServerFrame g = c.get(1, q);
    ASSERT_TRUE(g.is<m::BasicGetOk>());
    c.reject(1, g.get<m::BasicGetOk>().delivery_tag, false);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    EXPECT_EQ(queue(q)->ready_count(), 0u);
    EXPECT_EQ(queue(q)->unacked_count(), 0u);
    EXPECT_TRUE(c.get(1, q).is<m::BasicGetEmpty>());
}

TEST_F(SessionTest, RejectWithRequeueRedelivers) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "rjr");
    c.publish(1, "", q, "again");
    ServerFrame g = c.get(1, q);
    c.reject(1, g.get<m::BasicGetOk>().delivery_tag, true);
    ServerFrame g2 = c.get(1, q);
    ASSERT_TRUE(g2.is<m::BasicGetOk>());
    EXPECT_TRUE(g2.get<m::BasicGetOk>().redelivered);
    EXPECT_EQ(g2.body, "again");
}

TEST_F(SessionTest, UnknownDeliveryTagIs406) {
    TestClient& c = connect();
    ASSERT_TRUE(c.open_channel(2));
    c.ack(1, 99);
    ServerFrame f = c.expect_channel_close(1, 406);
    ASSERT_TRUE(f.is<m::ChannelClose>());
    EXPECT_EQ(f.get<m::ChannelClose>().failing_class_id, m::BasicAck::class_id);
    EXPECT_EQ(f.get<m::ChannelClose>().failing_method_id, m::BasicAck::method_id);
    EXPECT_EQ(c.host().close_calls, 0);
    EXPECT_FALSE(c.declare_queue(2, "still-open").empty());
}

TEST_F(SessionTest, UnknownDeliveryTagNackAndRejectAre406) {
    TestClient& c = connect();
    c.nack(1, 5, false, true);
    c.expect_channel_close(1, 406);
    ASSERT_TRUE(c.open_channel(1));
    c.reject(1, 5, true);
    c.expect_channel_close(1, 406);
    ASSERT_TRUE(c.open_channel(1));
    c.ack(1, 1, /*multiple=*/true);  // beyond any tag handed out
    c.expect_channel_close(1, 406);
}

TEST_F(SessionTest, ChannelCloseRequeuesUnackedToAnotherConnection) {
    TestClient& a = connect();
    TestClient& b = connect();
    std::string q = a.declare_queue(1, "cc");
    a.consume(1, q);
    a.publish(1, "", q, "one");
    a.publish(1, "", q, "two");
    ASSERT_EQ(deliveries(a, 1, 2).size(), 2u);
    std::string btag = b.consume(1, q);
    EXPECT_EQ(b.pending(), 0u);

    EXPECT_TRUE(a.close_channel(1));
    auto got = deliveries(b, 1, 2);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].body, "one");
    EXPECT_EQ(got[1].body, "two");
    for (const auto& f : got) {
        EXPECT_TRUE(f.get<m::BasicDeliver>().redelivered);
        EXPECT_EQ(std::string_view(f.get<m::BasicDeliver>().consumer_tag), btag);
    }
    EXPECT_EQ(a.pending(), 0u) << a.describe_pending();
}

TEST_F(SessionTest, ChannelCloseRequeuesGetDeliveriesToo) {
    TestClient& a = connect();
    std::string q = a.declare_queue(1, "ccg");
    a.publish(1, "", q, "g");
    ASSERT_TRUE(a.get(1, q).is<m::BasicGetOk>());
    EXPECT_EQ(queue(q)->ready_count(), 0u);
    ASSERT_TRUE(a.close_channel(1));
    EXPECT_EQ(queue(q)->ready_count(), 1u);
    EXPECT_EQ(queue(q)->unacked_count(), 0u);
}

TEST_F(SessionTest, TransportCloseRequeuesAndDeletesExclusiveQueues) {
    TestClient& a = connect();
    TestClient& b = connect();
    std::string shared = b.declare_queue(1, "shared-q");
    QueueOpts ex;
    ex.exclusive = true;
    std::string mine = a.declare_queue(1, "exclusive-q", ex);
    std::string server_named = a.declare_queue(1, "", ex);
    ASSERT_NE(queue(mine), nullptr);
    ASSERT_NE(queue(server_named), nullptr);
    a.consume(1, shared);
    b.publish(1, "", shared, "x1");
    b.publish(1, "", shared, "x2");
    ASSERT_EQ(deliveries(a, 1, 2).size(), 2u);
    b.consume(1, shared);

    a.transport_closed();
    EXPECT_EQ(queue(mine), nullptr);
    EXPECT_EQ(queue(server_named), nullptr);
    auto got = deliveries(b, 1, 2);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].body, "x1");
    EXPECT_EQ(got[1].body, "x2");
    EXPECT_TRUE(got[0].get<m::BasicDeliver>().redelivered);
    EXPECT_TRUE(got[1].get<m::BasicDeliver>().redelivered);
}

TEST_F(SessionTest, ConnectionCloseMethodRequeuesAndDeletesExclusiveQueues) {
    TestClient& a = connect();
    TestClient& b = connect();
    std::string q = b.declare_queue(1, "ccm");
    QueueOpts ex;
    ex.exclusive = true;
    std::string mine = a.declare_queue(1, "ccm-excl", ex);
    a.consume(1, q);
    b.publish(1, "", q, "p");
    ASSERT_EQ(deliveries(a, 1, 1).size(), 1u);
    b.consume(1, q);
    m::ConnectionClose close;
    close.reply_code = 200;
    a.send(0, close);
    a.expect<m::ConnectionCloseOk>(0);
    EXPECT_EQ(queue(mine), nullptr);
    auto got = deliveries(b, 1, 1);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_TRUE(got[0].get<m::BasicDeliver>().redelivered);
}

TEST_F(SessionTest, RequeueOnCloseSkipsOtherChannelsOfTheClosingConnection) {
    TestClient& a = connect();
    TestClient& b = connect();
    ASSERT_TRUE(a.open_channel(2));
    std::string q = a.declare_queue(1, "skip");
    a.consume(1, q);
    a.publish(1, "", q, "m");
    ASSERT_EQ(deliveries(a, 1, 1).size(), 1u);
    a.consume(2, q);
    b.consume(1, q);
    a.transport_closed();
    // Channel 2 of the dying connection must not get it; b must.
    EXPECT_EQ(a.pending(), 0u) << a.describe_pending();
    EXPECT_EQ(deliveries(b, 1, 1).size(), 1u);
}

TEST_F(SessionTest, AutoDeleteQueueGoesWithItsLastConsumer) {
    TestClient& c = connect();
    QueueOpts ad;
    ad.auto_delete = true;
    std::string q = c.declare_queue(1, "ad", ad);
    std::string t1 = c.consume(1, q);
    std::string t2 = c.consume(1, q);
    m::BasicCancel cancel;
    cancel.consumer_tag = t1;
    c.send(1, cancel);
    ServerFrame ok = c.expect<m::BasicCancelOk>(1);
    ASSERT_TRUE(ok.is<m::BasicCancelOk>());
    EXPECT_EQ(std::string_view(ok.get<m::BasicCancelOk>().consumer_tag), t1);
    EXPECT_NE(queue(q), nullptr) << "deleted while a consumer remains";
    cancel.consumer_tag = t2;
    c.send(1, cancel);
    c.expect<m::BasicCancelOk>(1);
    EXPECT_EQ(queue(q), nullptr) << "auto-delete queue survived its last consumer";
}

TEST_F(SessionTest, AutoDeleteQueueWithoutConsumersStays) {
    TestClient& c = connect();
    QueueOpts ad;
    ad.auto_delete = true;
    std::string q = c.declare_queue(1, "ad2", ad);
    ASSERT_TRUE(c.close_channel(1));
    EXPECT_NE(queue(q), nullptr);
}

TEST_F(SessionTest, AutoDeleteQueueGoesWhenConsumerChannelCloses) {
    TestClient& c = connect();
    QueueOpts ad;
    ad.auto_delete = true;
    std::string q = c.declare_queue(1, "ad3", ad);
    c.consume(1, q);
    ASSERT_TRUE(c.close_channel(1));
    EXPECT_EQ(queue(q), nullptr);
}

TEST_F(SessionTest, QueueDeleteCancelsConsumersWithNotification) {
    TestClient& a = connect();
    ClientOptions plain;
    plain.capabilities = {};  // no consumer_cancel_notify
    TestClient& b = connect(plain);
    TestClient& admin = connect();
    std::string q = a.declare_queue(1, "del");
    std::string atag = a.consume(1, q);
    b.consume(1, q);
    for (int i = 0; i < 2; ++i) admin.publish(1, "", q, "m");  // one unacked delivery each
    a.clear();
    b.clear();
    m::QueueDelete d;
    d.queue = q;
    admin.send(1, d);
    ServerFrame ok = admin.expect<m::QueueDeleteOk>(1);
    ASSERT_TRUE(ok.is<m::QueueDeleteOk>());
    EXPECT_EQ(queue(q), nullptr);

    a.drain();
    // a was told, with its consumer tag; b (no capability) was not.
    bool told = false;
    while (a.pending()) {
        ServerFrame f = a.next();
        if (f.is<m::BasicCancel>()) {
            told = true;
            EXPECT_EQ(std::string_view(f.get<m::BasicCancel>().consumer_tag), atag);
        }
    }
    EXPECT_TRUE(told) << "no basic.cancel for a consumer_cancel_notify client";
    while (b.pending()) EXPECT_FALSE(b.next().is<m::BasicCancel>());
    // The cancelled consumer's tag is free again and its channel still works.
    EXPECT_FALSE(a.declare_queue(1, "del2").empty());
    EXPECT_EQ(a.consume(1, "del2", false, atag), atag);
}

TEST_F(SessionTest, QueueDeleteReportsMessageCountAndIfEmpty) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "dq");
    c.publish(1, "", q, "a");
    c.publish(1, "", q, "b");
    m::QueueDelete d;
    d.queue = q;
    d.if_empty = true;
    c.send(1, d);
    c.expect_channel_close(1, 406);
    ASSERT_TRUE(c.open_channel(1));
    d.if_empty = false;
    c.send(1, d);
    ServerFrame ok = c.expect<m::QueueDeleteOk>(1);
    ASSERT_TRUE(ok.is<m::QueueDeleteOk>());
    EXPECT_EQ(ok.get<m::QueueDeleteOk>().message_count, 2u);
}

TEST_F(SessionTest, AckAfterQueueDeletedIsHarmless) {
    // Found under ASan: settling a delivery could free its (deleted) queue
    // before the channel dispatched it (channel_basic.cpp, touched_).
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "gone");
    c.publish(1, "", q, "a");
    ServerFrame g = c.get(1, q);
    m::QueueDelete d;
    d.queue = q;
    c.send(1, d);
    c.expect<m::QueueDeleteOk>(1);
    c.ack(1, g.get<m::BasicGetOk>().delivery_tag);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    c.nack(1, 0, true, true);  // nothing outstanding; multiple with 0 is fine
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();

    // An auto-delete queue goes with its last consumer; its deliveries stay ackable.
    QueueOpts ad;
    ad.auto_delete = true;
    std::string adq = c.declare_queue(1, "gone-ad", ad);
    std::string tag = c.consume(1, adq);
    c.publish(1, "", adq, "b");
    ServerFrame delivery = c.expect<m::BasicDeliver>(1);
    m::BasicCancel cancel;
    cancel.consumer_tag = tag;
    c.send(1, cancel);
    c.expect<m::BasicCancelOk>(1);
    ASSERT_EQ(queue(adq), nullptr);
    c.ack(1, delivery.get<m::BasicDeliver>().delivery_tag, /*multiple=*/true);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
}

TEST_F(SessionTest, PurgeReturnsCount) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "pg");
    for (int i = 0; i < 4; ++i) c.publish(1, "", q, "x");
    m::QueuePurge p;
    p.queue = q;
    c.send(1, p);
    ServerFrame ok = c.expect<m::QueuePurgeOk>(1);
    ASSERT_TRUE(ok.is<m::QueuePurgeOk>());
    EXPECT_EQ(ok.get<m::QueuePurgeOk>().message_count, 4u);
    EXPECT_TRUE(c.get(1, q).is<m::BasicGetEmpty>());
}

TEST_F(SessionTest, RecoverRequeuesUnacked) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "rec");
    c.consume(1, q);
    c.publish(1, "", q, "r");
    ASSERT_EQ(deliveries(c, 1, 1).size(), 1u);
    m::BasicRecover r;
    r.requeue = true;
    c.send(1, r);
    // Redelivered (to the same consumer) and recover-ok, in either order.
    bool redelivered = false, ok = false;
    for (int i = 0; i < 2; ++i) {
        ServerFrame f = c.next();
        if (f.is<m::BasicDeliver>()) redelivered = f.get<m::BasicDeliver>().redelivered;
        if (f.is<m::BasicRecoverOk>()) ok = true;
    }
    EXPECT_TRUE(redelivered);
    EXPECT_TRUE(ok);
}

TEST_F(SessionTest, ChannelFlowPausesDeliveries) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "flow");
    c.consume(1, q, true);
    m::ChannelFlow f;
    f.active = false;
    c.send(1, f);
    c.expect<m::ChannelFlowOk>(1);
    c.publish(1, "", q, "held");
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    f.active = true;
    c.send(1, f);
    c.expect<m::ChannelFlowOk>(1);
    ServerFrame d = c.expect<m::BasicDeliver>(1);
    EXPECT_EQ(d.body, "held");
}

TEST_F(SessionTest, ExclusiveConsumerAndTagReuse) {
    TestClient& a = connect();
    TestClient& b = connect();
    std::string q = a.declare_queue(1, "xc");
    a.consume(1, q, false, "t1", /*exclusive=*/true);
    m::BasicConsume c;
    c.queue = q;
    b.send(1, c);
    b.expect_channel_close(1, 403);
    // A consumer tag used twice on a channel: 530, a connection error.
    a.declare_queue(1, "xc2");
    m::BasicConsume again;
    again.queue = "xc2";
    again.consumer_tag = "t1";
    a.send(1, again);
    a.expect_connection_close(530);
}

TEST_F(SessionTest, ConsumersAreServedRoundRobin) {
    TestClient& a = connect();
    TestClient& b = connect();
    TestClient& p = connect();
    std::string q = a.declare_queue(1, "rr");
    a.consume(1, q, true);
    b.consume(1, q, true);
    for (int i = 0; i < 6; ++i) p.publish(1, "", q, std::to_string(i));
    auto ga = deliveries(a, 1, 3);
    auto gb = deliveries(b, 1, 3);
    ASSERT_EQ(ga.size(), 3u);
    ASSERT_EQ(gb.size(), 3u);
    EXPECT_EQ(ga[0].body + ga[1].body + ga[2].body, "024");
    EXPECT_EQ(gb[0].body + gb[1].body + gb[2].body, "135");
}

TEST_F(SessionTest, OutputBackPressurePausesDeliveriesUntilWritable) {
    config.output_high_watermark = 16 * 1024;
    TestClient& consumer = connect();
    TestClient& publisher = connect();
    std::string q = consumer.declare_queue(1, "bp");
    consumer.consume(1, q, /*no_ack=*/true);
    consumer.set_auto_drain(false);

    const size_t kMessages = 100;
    const std::string body(1024, 'b');
    for (size_t i = 0; i < kMessages; ++i) publisher.publish(1, "", q, body);
    EXPECT_TRUE(consumer.session().output_full());
    const size_t buffered = consumer.session().output().size();
    // It stopped at the watermark: at most one delivery beyond it.
    EXPECT_LT(buffered, config.output_high_watermark + body.size() + 256);
    EXPECT_GT(queue(q)->ready_count(), 0u);

    // Still full: a new publish must not grow the buffer.
    publisher.publish(1, "", q, body);
    EXPECT_EQ(consumer.session().output().size(), buffered) << "delivered while output_full()";

    size_t received = 0;
    int rounds = 0;
    while (received < kMessages + 1 && rounds++ < 100) {
        size_t before = queue(q)->ready_count();
        consumer.drain();
        while (consumer.pending()) {
            ServerFrame f = consumer.next();
            ASSERT_TRUE(f.is<m::BasicDeliver>()) << f.describe();
            EXPECT_EQ(f.get<m::BasicDeliver>().delivery_tag, received + 1);
            ++received;
        }
        // Drained, but nothing moves until the host says the socket is writable.
        EXPECT_EQ(queue(q)->ready_count(), before);
        consumer.session().on_writable();
    }
    EXPECT_EQ(received, kMessages + 1);
    EXPECT_EQ(queue(q)->ready_count(), 0u);
}

}  // namespace
}  // namespace sluice::test
