// Message deduplication (broker/dedup.hpp): the window alone (size, TTL,
// keys inserted again after they expired, recovery's restore), the
// arguments' validation, and the publish path over sans-IO sessions
// (exchange and queue windows, confirms, mandatory, the test clock for TTLs).
#include <gtest/gtest.h>

#include "broker/dedup.hpp"
#include "net/amqp/properties.hpp"
#include "tests/unit/session_harness.hpp"

namespace sluice::test {
namespace {

namespace m = amqp::method;
using broker::DedupCache;
using broker::DedupSettings;

DedupCache window(uint64_t size, uint64_t ttl_ms = 0) {
    DedupSettings s;
    s.cache_size = size;
    s.ttl_ms = ttl_ms;
    return DedupCache(s);
}

TEST(DedupCache, KeepsTheNewestKeysUpToItsSize) {
    DedupCache w = window(3);
    for (const char* k : {"a", "b", "c"}) EXPECT_GT(w.insert(k, 0, 100), 0u);
    EXPECT_TRUE(w.contains("a", 100));
    w.insert("d", 0, 100);  // a leaves
    EXPECT_FALSE(w.contains("a", 100));
    EXPECT_TRUE(w.contains("b", 100));
    EXPECT_TRUE(w.contains("d", 100));
    EXPECT_EQ(w.size(), 3u);
    EXPECT_EQ(w.first_live_seq(), 2u);  // a had seq 1
}

TEST(DedupCache, ExpiredKeysAreNotContainedAndLeaveFromTheFront) {
    DedupCache w = window(1000);
    w.insert("a", 150, 100);
    w.insert("b", 0, 100);  // never expires
    EXPECT_TRUE(w.contains("a", 149));
    EXPECT_FALSE(w.contains("a", 150));
    w.insert("c", 0, 200);  // a, at the front and expired, leaves
    EXPECT_EQ(w.size(), 2u);
    EXPECT_EQ(w.first_live_seq(), 2u);
    EXPECT_TRUE(w.contains("b", 1'000'000));
}

TEST(DedupCache, AKeyInsertedAgainAfterItExpiredLivesByItsNewEntry) {
    DedupCache w = window(2);
    w.insert("a", 150, 100);   // seq 1
    w.insert("b", 0, 120);     // seq 2
    EXPECT_FALSE(w.contains("a", 160));
    w.insert("a", 0, 160);     // seq 3: a's old place is stale, b stays (size 2)
    EXPECT_TRUE(w.contains("a", 160));
    EXPECT_TRUE(w.contains("b", 160));
    w.insert("c", 0, 170);     // b (the oldest live) leaves, not a
    EXPECT_TRUE(w.contains("a", 170));
    EXPECT_FALSE(w.contains("b", 170));
    EXPECT_EQ(w.size(), 2u);
}

TEST(DedupCache, ReinsertingExpiredKeysDoesNotGrowItsMemory) {
    // One long-lived key at the front holds every stale place behind it;
    // they are compacted away, so the order list stays near the live size.
    DedupCache w = window(1'000'000);
    w.insert("forever", 0, 0);
    for (uint64_t t = 1; t <= 100'000; ++t) {
        ASSERT_FALSE(w.contains("k", t * 10));
        w.insert("k", t * 10 + 5, t * 10);  // expires before the next round
    }
    EXPECT_EQ(w.size(), 2u);
    EXPECT_EQ(w.first_live_seq(), 1u);  // "forever" still at the front
    EXPECT_LE(w.places(), 2u * 2 + 1024 + 1);
}

TEST(DedupCache, RestoreAppliesTheSameRules) {
    DedupCache w = window(2, 1000);
    w.restore(5, "old", 50, 100);   // expired: not restored
    w.restore(6, "a", 0, 100);
    w.restore(7, "b", 0, 100);
    w.restore(9, "c", 0, 100);      // a leaves (size 2)
    EXPECT_FALSE(w.contains("old", 100));
    EXPECT_FALSE(w.contains("a", 100));
    EXPECT_TRUE(w.contains("b", 100));
    EXPECT_TRUE(w.contains("c", 100));
    EXPECT_EQ(w.insert("d", 0, 100), 10u);  // seqs go on after the restored ones
}

TEST(DedupArguments, ValidatesAndDefaults) {
    amqp::FieldTable args;
    auto r = broker::parse_dedup_arguments(args, "exchange", "x", "/", false);
    ASSERT_TRUE(std::holds_alternative<std::optional<DedupSettings>>(r));
    EXPECT_FALSE(std::get<std::optional<DedupSettings>>(r));  // off

    r = broker::parse_dedup_arguments(args, "exchange", "x", "/", true);  // the plugin's type
    auto s = std::get<std::optional<DedupSettings>>(r);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->cache_size, 128u);
    EXPECT_EQ(s->ttl_ms, 0u);
    EXPECT_EQ(s->header, "x-deduplication-header");

    args.set("x-message-deduplication", true);
    args.set("x-cache-size", int64_t(5));
    args.set("x-cache-ttl", int32_t(2000));
    args.set("x-deduplication-header", "id");
    args.set("x-cache-persistence", "disk");
    s = std::get<std::optional<DedupSettings>>(broker::parse_dedup_arguments(args, "queue", "q", "/", false));
    ASSERT_TRUE(s);
    EXPECT_EQ(s->cache_size, 5u);
    EXPECT_EQ(s->ttl_ms, 2000u);
    EXPECT_EQ(s->header, "id");

    for (auto [name, value] : std::vector<std::pair<const char*, amqp::FieldValue>>{
             {"x-cache-size", int64_t(0)}, {"x-cache-size", "10"}, {"x-cache-ttl", int64_t(-1)},
             {"x-deduplication-header", int64_t(1)}, {"x-cache-persistence", "tape"},
             {"x-message-deduplication", "yes"}}) {
        amqp::FieldTable bad = args;
        bad.set(name, value);
        auto e = broker::parse_dedup_arguments(bad, "queue", "q", "/", false);
        ASSERT_TRUE(std::holds_alternative<broker::AmqpError>(e)) << name;
        EXPECT_EQ(std::get<broker::AmqpError>(e).code, 406) << name;
    }
}

amqp::BasicProperties keyed(amqp::FieldValue key, std::optional<int64_t> ttl = std::nullopt) {
    amqp::BasicProperties p;
    amqp::FieldTable h;
    h.set("x-deduplication-header", std::move(key));
    if (ttl) h.set("x-cache-ttl", *ttl);
    p.headers = std::move(h);
    return p;
}

class DedupSessionTest : public SessionTest {
protected:
    void declare_exchange(TestClient& c, std::string_view name, std::string_view type, amqp::FieldTable args) {
        m::ExchangeDeclare x;
        x.exchange = name;
        x.type = type;
        x.arguments = std::move(args);
        c.send(1, x);
        c.expect<m::ExchangeDeclareOk>(1);
    }
    // Publishes with confirms; returns how many acks and nacks came back.
    std::pair<uint64_t, uint64_t> confirms(TestClient& c) {
        uint64_t acks = 0, nacks = 0;
        while (c.pending()) {
            ServerFrame f = c.next();
            if (f.is<m::BasicAck>()) acks = std::max(acks, f.get<m::BasicAck>().delivery_tag);
            if (f.is<m::BasicNack>()) ++nacks;
        }
        return {acks, nacks};
    }
};

TEST_F(DedupSessionTest, ExchangeDropsADuplicateAndAcksIt) {
    TestClient& c = connect();
    amqp::FieldTable args;
    args.set("x-message-deduplication", true);
    declare_exchange(c, "dx", "direct", args);
    std::string q = c.declare_queue(1, "dq");
    ASSERT_TRUE(c.bind_queue(1, q, "dx", "k"));
    ASSERT_TRUE(c.confirm_select(1));
    c.publish(1, "dx", "k", "1", keyed("a"));
    c.publish(1, "dx", "k", "2", keyed("a"));
    c.publish(1, "dx", "k", "3", keyed(int32_t(1)));
    c.publish(1, "dx", "k", "4", keyed("\x01"));  // not the integer 1: keys keep their type
    c.publish(1, "dx", "k", "5", keyed(int32_t(1)));
    c.publish(1, "dx", "k", "6");                 // no header: passes
    c.publish(1, "dx", "k", "7");
    auto [acks, nacks] = confirms(c);
    EXPECT_EQ(acks, 7u);
    EXPECT_EQ(nacks, 0u);
    EXPECT_EQ(queue(q)->ready_count(), 5u);
    EXPECT_EQ(broker().stats().messages_deduplicated, 2u);
}

// A transient window larger than the memory cap has no disk to spill to:
// it is a window of the cap's size (the oldest keys are forgotten), and
// its memory stays within the cap (docs/deduplication.md, Memory).
TEST_F(DedupSessionTest, ATransientWindowPastTheMemoryCapForgetsTheOldest) {
    config.dedup_memory_keys = 10;
    TestClient& c = connect();
    amqp::FieldTable args;
    args.set("x-message-deduplication", true);
    args.set("x-cache-size", int64_t(1000));
    declare_exchange(c, "tx", "fanout", args);
    std::string q = c.declare_queue(1, "tq");
    ASSERT_TRUE(c.bind_queue(1, q, "tx", ""));
    for (int i = 0; i < 100; ++i) c.publish(1, "tx", "", "m", keyed("k" + std::to_string(i)));
    broker::DedupCache* w = broker().find_vhost("/")->find_exchange("tx")->dedup();
    EXPECT_FALSE(w->spills());
    EXPECT_LE(w->size(), 10u);
    c.publish(1, "tx", "", "m", keyed("k95"));  // among the newest 10: dropped
    c.publish(1, "tx", "", "m", keyed("k5"));   // forgotten: gets in
    EXPECT_EQ(queue(q)->ready_count(), 101u);
}

TEST_F(DedupSessionTest, AMandatoryDuplicateIsReturnedNoRoute) {
    TestClient& c = connect();
    declare_exchange(c, "px", "x-message-deduplication", {});
    std::string q = c.declare_queue(1, "pq");
    ASSERT_TRUE(c.bind_queue(1, q, "px", "whatever"));
    c.publish(1, "px", "other-key", "1", keyed("a"), true);  // fanout: the key does not matter
    c.publish(1, "px", "other-key", "2", keyed("a"), true);
    ServerFrame r = c.expect<m::BasicReturn>(1);
    ASSERT_TRUE(r.is<m::BasicReturn>());
    EXPECT_EQ(r.get<m::BasicReturn>().reply_code, 312);
    EXPECT_EQ(queue(q)->ready_count(), 1u);
}

TEST_F(DedupSessionTest, QueueWindowDropsOnlyForThatQueue) {
    TestClient& c = connect();
    declare_exchange(c, "fx", "fanout", {});
    QueueOpts o;
    o.arguments.set("x-message-deduplication", true);
    o.arguments.set("x-cache-size", int64_t(2));
    std::string dq = c.declare_queue(1, "dedup-q", o);
    std::string pq = c.declare_queue(1, "plain-q");
    ASSERT_TRUE(c.bind_queue(1, dq, "fx", ""));
    ASSERT_TRUE(c.bind_queue(1, pq, "fx", ""));
    for (const char* k : {"a", "a", "b", "c", "a"})  // the last a: evicted by size (2) after c
        c.publish(1, "fx", "", k, keyed(k));
    EXPECT_EQ(queue(dq)->ready_count(), 4u);
    EXPECT_EQ(queue(pq)->ready_count(), 5u);
}

TEST_F(DedupSessionTest, TtlsByTheExchangeAndByTheMessage) {
    broker().set_test_clock_ms(1'000'000);
    TestClient& c = connect();
    amqp::FieldTable args;
    args.set("x-message-deduplication", true);
    args.set("x-cache-ttl", int64_t(1000));
    declare_exchange(c, "tx", "fanout", args);
    std::string q = c.declare_queue(1, "tq");
    ASSERT_TRUE(c.bind_queue(1, q, "tx", ""));
    c.publish(1, "tx", "", "default", keyed("d"));
    c.publish(1, "tx", "", "long", keyed("l", 5000));
    c.publish(1, "tx", "", "short", keyed("s", 100));
    broker().set_test_clock_ms(1'000'099);
    for (const char* k : {"d", "l", "s"}) c.publish(1, "tx", "", "dup", keyed(k));
    EXPECT_EQ(queue(q)->ready_count(), 3u);
    broker().set_test_clock_ms(1'000'100);  // s expired
    for (const char* k : {"d", "l", "s"}) c.publish(1, "tx", "", "again", keyed(k));
    EXPECT_EQ(queue(q)->ready_count(), 4u);
    broker().set_test_clock_ms(1'001'000);  // d expired
    for (const char* k : {"d", "l"}) c.publish(1, "tx", "", "again", keyed(k));
    EXPECT_EQ(queue(q)->ready_count(), 5u);
    broker().set_test_clock_ms(1'005'000);  // l expired
    c.publish(1, "tx", "", "again", keyed("l"));
    EXPECT_EQ(queue(q)->ready_count(), 6u);
}

TEST_F(DedupSessionTest, ACustomHeaderNamesTheKey) {
    TestClient& c = connect();
    QueueOpts o;
    o.arguments.set("x-message-deduplication", true);
    o.arguments.set("x-deduplication-header", "order");
    std::string q = c.declare_queue(1, "hq", o);
    amqp::BasicProperties p;
    amqp::FieldTable h;
    h.set("order", "42");
    p.headers = h;
    c.publish(1, "", q, "1", p);
    c.publish(1, "", q, "2", p);
    c.publish(1, "", q, "3", keyed("42"));  // the default header is not read here
    c.publish(1, "", q, "4", keyed("42"));
    EXPECT_EQ(queue(q)->ready_count(), 3u);
}

}  // namespace
}  // namespace sluice::test
