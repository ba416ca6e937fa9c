// A durable deduplication window (broker/dedup.hpp) against crashes and
// power loss: the key of a confirmed message is on disk (it went with the
// message's batch), so its duplicate is dropped after a power loss; the
// window's size and TTL rules hold after a restart; what the window let go
// is deleted from the disk by range, so the disk holds the window and at
// most one trim step more.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>
#include <vector>

#include "storage/records.hpp"
#include "tests/unit/durable_broker_fixture.hpp"

namespace sluice::test {
namespace {

amqp::BasicProperties keyed(const std::string& key, bool persistent = true) {
    amqp::BasicProperties p;
    p.delivery_mode = persistent ? 2 : 1;
    amqp::FieldTable h;
    h.set("x-deduplication-header", key);
    p.headers = std::move(h);
    return p;
}

class DurableDedupTest : public DurableBrokerTest {
protected:
    // A durable exchange (LavinMQ's argument form, fanout) with a window
    // and a durable queue bound to it, once both are synced.
    void declare(TestClient& c, int64_t cache_size, int64_t ttl_ms = 0) {
        m::ExchangeDeclare x;
        x.exchange = "dx";
        x.type = "fanout";
        x.durable = true;
        x.arguments.set("x-message-deduplication", true);
        x.arguments.set("x-cache-size", cache_size);
        if (ttl_ms) x.arguments.set("x-cache-ttl", ttl_ms);
        c.send(1, x);
        settle();
        c.expect<m::ExchangeDeclareOk>(1);
        declare_durable_queue(c, "q");
        m::QueueBind b;
        b.queue = "q";
        b.exchange = "dx";
        c.send(1, b);
        settle();  // a durable bind-ok waits for its sync
        c.expect<m::QueueBindOk>(1);
    }
    void confirmed_keys_survive_power_loss() {
    std::mt19937 rng(1505);
    start();
    {
        TestClient& c = connect();
        declare(c, 100000);
    }
    std::set<std::string> confirmed;
    int next = 0;
    for (int round = 0; round < 5; ++round) {
        TestClient& c = connect();
        // Duplicates of every key confirmed so far: none may get in.
        ASSERT_TRUE(c.confirm_select(1));
        c.batch([&] {
            for (const std::string& k : confirmed) c.publish(1, "dx", "", "dup:" + k, keyed(k));
        });
        for (const std::string& b : bodies(c)) EXPECT_NE(b.substr(0, 4), "dup:") << "round " << round << ": " << b;
        c.clear();

        std::vector<std::string> sent;
        const int turns = 3 + static_cast<int>(rng() % 10);
        for (int t = 0; t < turns; ++t) {
            const int n = 1 + static_cast<int>(rng() % 20);
            c.batch([&] {
                for (int i = 0; i < n; ++i) {
                    sent.push_back("k" + std::to_string(next++));
                    c.publish(1, "dx", "", sent.back(), keyed(sent.back()));
                }
            });
            executor_.run_all();
            if (rng() % 3 == 0) store_->wait_idle();
            executor_.run_all();
        }
        const uint64_t first_tag = confirmed.size() + 1;  // the duplicates took the first tags
        for (const ServerFrame& f : c.inbox()) {
            if (!f.is<m::BasicAck>()) continue;
            const auto& a = f.get<m::BasicAck>();
            for (uint64_t t = a.multiple ? 1 : a.delivery_tag; t <= a.delivery_tag; ++t)
                if (t >= first_tag && t - first_tag < sent.size()) confirmed.insert(sent[t - first_tag]);
        }
        lose_power();
        start();
    }
    EXPECT_GT(confirmed.size(), 10u);
    // The last round's duplicates too.
    TestClient& c = connect();
    ASSERT_TRUE(c.confirm_select(1));
    bodies(c);
    c.batch([&] {
        for (const std::string& k : confirmed) c.publish(1, "dx", "", "dup:" + k, keyed(k));
        c.publish(1, "dx", "", "fresh", keyed("never-seen"));
    });
    settle();
    EXPECT_EQ(bodies(c), std::vector<std::string>{"fresh"});
    }
    // Window entries on disk (all objects).
    size_t entries_on_disk() {
        size_t n = 0;
        store_->scan(storage::Column::meta, storage::records::kDedup[0], storage::records::kDedup[1],
                     [&](std::string_view, std::string_view) { return ++n, true; });
        return n;
    }
    // Index records on disk (all objects): the key-addressed twin of each entry.
    size_t index_on_disk() {
        size_t n = 0;
        store_->scan(storage::Column::meta, storage::records::kDedupIndex[0], storage::records::kDedupIndex[1],
                     [&](std::string_view, std::string_view) { return ++n, true; });
        return n;
    }
    // The acks (and no nack) the session wrote: the highest tag, checking
    // they come in order.
    static uint64_t acked_up_to(TestClient& c) {
        c.drain();
        uint64_t acked = 0;
        for (const ServerFrame& f : c.inbox()) {
            EXPECT_FALSE(f.is<m::BasicNack>()) << f.describe();
            if (!f.is<m::BasicAck>()) continue;
            EXPECT_GT(f.get<m::BasicAck>().delivery_tag, acked);
            acked = f.get<m::BasicAck>().delivery_tag;
        }
        return acked;
    }
    // Every message in q (confirms still pending on the client are dropped).
    std::vector<std::string> bodies(TestClient& c) {
        settle();
        c.drain();
        c.clear();
        std::vector<std::string> out;
        for (const ServerFrame& f : drain(c, "q")) out.push_back(f.body);
        return out;
    }
};

// Confirmed keys survive a power loss at a random point, in every round:
// their duplicates are dropped after it. (The messages are consumed each
// round, so it is the window, not the queue's content, that drops them.)
TEST_F(DurableDedupTest, EveryConfirmedKeySurvivesAPowerLoss) { confirmed_keys_survive_power_loss(); }

// The same with a window mostly on disk (8 keys in memory): the duplicates
// are found through the disk index, after each power loss too.
TEST_F(DurableDedupTest, EveryConfirmedKeySurvivesAPowerLossWithTheWindowOnDisk) {
    config.dedup_memory_keys = 8;
    confirmed_keys_survive_power_loss();
}

// Without a confirm the key may be lost with its message — never the
// other way round: a key on disk whose message is not would drop a
// publisher's retry of a message that is gone.
TEST_F(DurableDedupTest, AKeyIsNeverOnDiskWithoutItsMessage) {
    start();
    TestClient& c = connect();
    declare(c, 1000);
    ASSERT_TRUE(c.confirm_select(1));
    c.batch([&] {
        for (int i = 0; i < 20; ++i) c.publish(1, "dx", "", "m" + std::to_string(i), keyed("k" + std::to_string(i)));
    });
    executor_.run_all();  // end of turn: the commit starts, not waited for
    lose_power();
    start();
    TestClient& c2 = connect();
    ASSERT_TRUE(c2.confirm_select(1));
    std::set<std::string> kept;
    for (const std::string& b : bodies(c2)) kept.insert(b);
    // Retry all 20: exactly those whose message is gone get in.
    c2.batch([&] {
        for (int i = 0; i < 20; ++i) c2.publish(1, "dx", "", "m" + std::to_string(i), keyed("k" + std::to_string(i)));
    });
    settle();
    std::set<std::string> retried;
    for (const std::string& b : bodies(c2)) retried.insert(b);
    for (int i = 0; i < 20; ++i) {
        const std::string m = "m" + std::to_string(i);
        EXPECT_EQ(kept.count(m) + retried.count(m), 1u) << m;
    }
}

// The window's size holds across a restart (the newest keys are the ones
// kept), and the disk holds the window and at most one trim step more
// (64 entries for a window of 100), not every key ever published.
TEST_F(DurableDedupTest, SizeEvictionHoldsAfterARestartAndTheDiskIsTrimmed) {
    start();
    {
        TestClient& c = connect();
        declare(c, 100);
        ASSERT_TRUE(c.confirm_select(1));
        for (int t = 0; t < 10; ++t) {
            c.batch([&] {
                for (int i = 0; i < 100; ++i) c.publish(1, "dx", "", "m", keyed("k" + std::to_string(t * 100 + i)));
            });
            settle();
        }
        bodies(c);
    }
    EXPECT_LE(entries_on_disk(), 100u + 64u);
    EXPECT_GE(entries_on_disk(), 100u);
    crash();
    start();
    EXPECT_EQ(entries_on_disk(), 100u);  // recovery trims what it let go
    TestClient& c = connect();
    ASSERT_TRUE(c.confirm_select(1));
    c.publish(1, "dx", "", "newest-dup", keyed("k999"));
    c.publish(1, "dx", "", "oldest-kept-dup", keyed("k900"));
    c.publish(1, "dx", "", "evicted", keyed("k899"));
    settle();
    EXPECT_EQ(bodies(c), std::vector<std::string>{"evicted"});
}

// Expired keys do not come back at a restart; unexpired ones do. (Recovery
// reads the real clock, so the publishes are dated before it.)
TEST_F(DurableDedupTest, TtlHoldsAcrossARestart) {
    const uint64_t now = broker::Broker::system_now_ms();
    start();
    {
        TestClient& c = connect();
        declare(c, 1000, 60000);
        ASSERT_TRUE(c.confirm_select(1));
        broker_->set_test_clock_ms(now - 70000);  // expires 10 s before now
        c.publish(1, "dx", "", "a", keyed("a"));
        broker_->set_test_clock_ms(now - 1000);  // expires in 59 s
        c.publish(1, "dx", "", "b", keyed("b"));
        settle();
    }
    crash();
    start();
    TestClient& c = connect();
    bodies(c);
    ASSERT_TRUE(c.confirm_select(1));
    c.publish(1, "dx", "", "a2", keyed("a"));
    c.publish(1, "dx", "", "b2", keyed("b"));
    settle();
    EXPECT_EQ(bodies(c), std::vector<std::string>{"a2"});
}

// An exchange's key is as durable as its message: a persistent message
// whose only copy is in a transient queue is gone after a restart, and so is
// its key (a retry gets in); one that reached a durable queue keeps it.
TEST_F(DurableDedupTest, AnExchangeKeyIsDurableOnlyWithADurableCopy) {
    start();
    {
        TestClient& c = connect();
        declare(c, 1000);
        c.declare_queue(1, "transient");
        ASSERT_TRUE(c.bind_queue(1, "transient", "dx", "only"));
        ASSERT_TRUE(c.confirm_select(1));
        m::QueueUnbind u;  // "q" out for the first message: its only copy is transient
        u.queue = "q";
        u.exchange = "dx";
        c.send(1, u);
        settle();
        c.publish(1, "dx", "", "t", keyed("transient-only"));
        settle();
        m::QueueBind b;
        b.queue = "q";
        b.exchange = "dx";
        c.send(1, b);
        settle();
        c.publish(1, "dx", "", "d", keyed("with-durable-copy"));
        settle();
    }
    crash();
    start();
    TestClient& c = connect();
    bodies(c);
    ASSERT_TRUE(c.confirm_select(1));
    c.publish(1, "dx", "", "t-retry", keyed("transient-only"));
    c.publish(1, "dx", "", "d-dup", keyed("with-durable-copy"));
    EXPECT_EQ(bodies(c), std::vector<std::string>{"t-retry"});
}

// Deleting the exchange deletes its window from the disk in the same batch.
TEST_F(DurableDedupTest, DeletingTheExchangeDeletesItsWindow) {
    start();
    TestClient& c = connect();
    declare(c, 1000);
    ASSERT_TRUE(c.confirm_select(1));
    for (int i = 0; i < 10; ++i) c.publish(1, "dx", "", "m", keyed("k" + std::to_string(i)));
    settle();
    EXPECT_EQ(entries_on_disk(), 10u);
    m::ExchangeDelete d;
    d.exchange = "dx";
    c.send(1, d);
    settle();
    EXPECT_EQ(entries_on_disk(), 0u);
}

// A durable window larger than the memory cap (x-cache-size 100,000, 1,000
// keys in memory): a key 50,000 insertions old is still a duplicate, found
// on disk by the store's read thread — the publish is routed and confirmed
// only once that read is back on the broker thread (the session reads no
// further meanwhile), and what the connection published after it keeps its
// order. Memory holds at most the cap, before and after the lookups and
// after a restart.
TEST_F(DurableDedupTest, AWindowLargerThanMemoryFindsOldKeysOnDiskOffTheBrokerThread) {
    config.dedup_memory_keys = 1000;
    start();
    TestClient& c = connect();
    m::ExchangeDeclare x;  // no queue yet: the keys go on their own
    x.exchange = "big";
    x.type = "fanout";
    x.durable = true;
    x.arguments.set("x-message-deduplication", true);
    x.arguments.set("x-cache-size", int64_t{100000});
    c.send(1, x);
    settle();
    c.expect<m::ExchangeDeclareOk>(1);
    ASSERT_TRUE(c.confirm_select(1));
    broker::DedupCache* w = broker_->find_vhost("/")->find_exchange("big")->dedup();
    ASSERT_TRUE(w->spills());
    for (int t = 0; t < 60; ++t) {
        c.batch([&] {
            for (int i = 0; i < 1000; ++i) c.publish(1, "big", "", "m", keyed("k" + std::to_string(t * 1000 + i)));
        });
        settle();
        ASSERT_LE(w->size(), 1000u);
        c.clear();
    }
    EXPECT_LE(w->places(), 3024u);
    c.drain();
    c.clear();
    EXPECT_EQ(entries_on_disk(), 60000u);
    EXPECT_EQ(index_on_disk(), 60000u);
    declare_durable_queue(c, "q");
    m::QueueBind b;
    b.queue = "q";
    b.exchange = "big";
    c.send(1, b);
    settle();
    c.expect<m::QueueBindOk>(1);
    c.clear();

    c.batch([&] {
        c.publish(1, "big", "", "dup-old", keyed("k10000"));  // 50,000 insertions ago: on disk only
        c.publish(1, "big", "", "A", keyed("a"));
        c.publish(1, "big", "", "dup-older", keyed("k20"));
        c.publish(1, "big", "", "B", keyed("b"));
        c.publish(1, "big", "", "dup-recent", keyed("k59990"));  // in memory
        c.publish(1, "big", "", "C", keyed("c"));
        c.publish(1, "big", "", "dup-of-A", keyed("a"));
    });
    // The first waits for the read thread: the session parses nothing
    // more, nothing is routed or confirmed until the broker thread runs
    // the read's completion (the executor is not run here).
    EXPECT_TRUE(c.session().reading_paused());
    EXPECT_EQ(queue("q")->ready_count(), 0u);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    settle();
    EXPECT_FALSE(c.session().reading_paused());
    EXPECT_EQ(acked_up_to(c), 60007u);
    EXPECT_EQ(bodies(c), (std::vector<std::string>{"A", "B", "C"}));
    EXPECT_LE(w->size(), 1000u);

    crash();
    start();
    w = broker_->find_vhost("/")->find_exchange("big")->dedup();
    EXPECT_LE(w->size(), 1000u);
    TestClient& c2 = connect();
    ASSERT_TRUE(c2.confirm_select(1));
    c2.batch([&] {
        c2.publish(1, "big", "", "dup-old", keyed("k30000"));
        c2.publish(1, "big", "", "D", keyed("d"));
    });
    settle();
    EXPECT_EQ(acked_up_to(c2), 2u);
    EXPECT_EQ(bodies(c2), std::vector<std::string>{"D"});
    // A waiting publish with nothing after it is confirmed all the same
    // (a publisher may wait for that ack before sending anything more).
    c2.clear();
    c2.publish(1, "big", "", "dup-alone", keyed("k40000"));
    EXPECT_TRUE(c2.session().reading_paused());
    settle();
    EXPECT_EQ(acked_up_to(c2), 3u);
    EXPECT_EQ(queue("q")->ready_count(), 0u);
}

// A queue's window larger than the memory cap (5,000 keys, 100 in memory):
// a key that left the window by size is not a duplicate (its index record
// may still be on disk: stale, ignored), one still in it is, found on disk;
// the disk holds the window and at most a trim step (entries) and a
// generation (index) more; deleting the queue deletes both.
TEST_F(DurableDedupTest, AQueueWindowOnDiskKeepsItsSizeAndIsTrimmedByGeneration) {
    config.dedup_memory_keys = 100;
    start();
    TestClient& c = connect();
    m::QueueDeclare d;
    d.queue = "dq";
    d.durable = true;
    d.arguments.set("x-message-deduplication", true);
    d.arguments.set("x-cache-size", int64_t{5000});
    c.send(1, d);
    settle();
    c.expect<m::QueueDeclareOk>(1);
    ASSERT_TRUE(c.confirm_select(1));
    broker::DedupCache* w = queue("dq")->dedup();
    ASSERT_TRUE(w->spills());
    for (int t = 0; t < 6; ++t) {
        c.batch([&] {
            for (int i = 0; i < 1000; ++i) c.publish(1, "", "dq", "m", keyed("k" + std::to_string(t * 1000 + i)));
        });
        settle();
        ASSERT_LE(w->size(), 100u);
        c.clear();
    }
    EXPECT_EQ(queue("dq")->ready_count(), 6000u);
    EXPECT_LE(entries_on_disk(), 5000u + 1250u);
    EXPECT_LE(index_on_disk(), 5000u + 1250u);
    purge_or_delete(c, "dq", true);
    settle();
    c.drain();
    c.clear();
    c.batch([&] {
        c.publish(1, "", "dq", "left-the-window", keyed("k500"));
        c.publish(1, "", "dq", "dup-on-disk", keyed("k3000"));
        c.publish(1, "", "dq", "dup-in-memory", keyed("k5990"));
        c.publish(1, "", "dq", "new", keyed("n"));
    });
    settle();
    EXPECT_EQ(acked_up_to(c), 6004u);
    c.clear();
    settle();
    std::vector<std::string> got;
    for (const ServerFrame& f : drain(c, "dq")) got.push_back(f.body);
    EXPECT_EQ(got, (std::vector<std::string>{"left-the-window", "new"}));
    EXPECT_LE(w->size(), 100u);
    purge_or_delete(c, "dq", false);
    settle();
    EXPECT_EQ(entries_on_disk(), 0u);
    EXPECT_EQ(index_on_disk(), 0u);
}

// Keys whose batch is not in the store yet stay in memory whatever the cap
// (a lookup reads the store, which would not have them): duplicates in the
// same batch as their first copies, with 8 keys in memory, are dropped.
TEST_F(DurableDedupTest, KeysNotYetInTheStoreStayInMemory) {
    config.dedup_memory_keys = 8;
    start();
    TestClient& c = connect();
    declare(c, 1000);
    ASSERT_TRUE(c.confirm_select(1));
    broker::DedupCache* w = broker_->find_vhost("/")->find_exchange("dx")->dedup();
    ASSERT_TRUE(w->spills());
    c.batch([&] {
        for (int i = 0; i < 50; ++i) c.publish(1, "dx", "", "m" + std::to_string(i), keyed("k" + std::to_string(i)));
        for (int i = 0; i < 50; ++i) c.publish(1, "dx", "", "dup", keyed("k" + std::to_string(i)));
    });
    EXPECT_GE(w->size(), 50u);  // pinned until their batch is in the store
    settle();
    EXPECT_LE(w->size(), 8u);  // and only then gone to the disk part
    EXPECT_EQ(acked_up_to(c), 100u);
    std::vector<std::string> got = bodies(c);
    EXPECT_EQ(got.size(), 50u);
    for (const std::string& b : got) EXPECT_NE(b, "dup");
}

}  // namespace
}  // namespace sluice::test
