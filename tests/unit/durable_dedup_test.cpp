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
    // Window entries on disk (all objects).
    size_t entries_on_disk() {
        size_t n = 0;
        store_->scan(storage::Column::meta, storage::records::kDedup[0], storage::records::kDedup[1],
                     [&](std::string_view, std::string_view) { return ++n, true; });
        return n;
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
TEST_F(DurableDedupTest, EveryConfirmedKeySurvivesAPowerLoss) {
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

}  // namespace
}  // namespace sluice::test
