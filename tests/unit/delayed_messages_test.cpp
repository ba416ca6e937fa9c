// Delayed messages (broker/delayed_messages.hpp) over a real store on the
// power-loss file system, with the broker's clock and timers run by the
// test: due-time order, the memory window and its refills, a confirm that
// survives a power loss, and a due message that leaves the delay log in the
// batch that enqueues it (a crash neither loses nor duplicates it).
#include "broker/delayed_messages.hpp"
#include "tests/unit/durable_broker_fixture.hpp"

namespace sluice::test {
namespace {

constexpr uint64_t kT0 = 1'900'000'000'000;  // the test clock's start, Unix ms

class DelayedMessagesTest : public DurableBrokerTest {
protected:
    DelayedMessagesTest() { config.queue_memory_messages = 8; }

    void start_at(uint64_t now) {
        start();
        now_ = now;
        broker_->set_test_clock_ms(now_);
    }
    // A durable x-delayed-message exchange "dx" (direct) and a durable
    // queue "q" bound to it with key "k".
    void declare(TestClient& c) {
        m::ExchangeDeclare x;
        x.exchange = "dx";
        x.type = "x-delayed-message";
        x.durable = true;
        x.arguments.set("x-delayed-type", amqp::FieldValue(std::string("direct")));
        c.send(1, x);
        settle();
        c.expect<m::ExchangeDeclareOk>(1);
        declare_durable_queue(c, "q");
        m::QueueBind b;
        b.queue = "q";
        b.exchange = "dx";
        b.routing_key = "k";
        c.send(1, b);
        settle();
        c.expect<m::QueueBindOk>(1);
    }
    static amqp::BasicProperties delayed(int64_t delay_ms) {
        amqp::BasicProperties p = persistent();
        p.headers.emplace();
        p.headers->set("x-delay", amqp::FieldValue(delay_ms));
        return p;
    }
    broker::DelayedMessages& held() { return *broker_->find_vhost("/")->find_exchange("dx")->delayed(); }
    // The clock moves to `t`; timers run and reads come back until nothing
    // more happens.
    void advance_to(uint64_t t) {
        now_ = t;
        broker_->set_test_clock_ms(now_);
        for (int i = 0; i < 100; ++i) {
            broker_->timers().run(now_);
            settle();
            if (broker_->timers().next_deadline() == 0 || broker_->timers().next_deadline() > now_) {
                settle();
                if (broker_->timers().next_deadline() == 0 || broker_->timers().next_deadline() > now_) return;
            }
        }
    }
    // Acks seen on channel 1 (multiple ones cover every tag up to theirs).
    static uint64_t acked(TestClient& c) {
        c.drain();
        uint64_t up_to = 0;
        while (c.pending() > 0) {
            ServerFrame f = c.next();
            if (f.is<m::BasicAck>()) up_to = std::max(up_to, f.get<m::BasicAck>().delivery_tag);
        }
        return up_to;
    }

    uint64_t now_ = 0;
};

TEST_F(DelayedMessagesTest, DueMessagesComeInDueTimeOrderWithOnlyAWindowInMemory) {
    start_at(kT0);
    TestClient& c = connect();
    declare(c);
    ASSERT_TRUE(c.confirm_select(1));
    std::mt19937 rnd(11);
    std::vector<std::pair<uint64_t, int>> due;  // (due, index): the order they must come in
    const int n = 100;
    for (int i = 0; i < n; ++i) {
        const int64_t delay = 1 + int64_t(rnd() % 10000);
        due.emplace_back(kT0 + uint64_t(delay), i);
        c.publish(1, "dx", "k", std::to_string(i), delayed(delay));
    }
    settle();
    EXPECT_EQ(acked(c), uint64_t(n));  // confirmed: synced in the delay log
    EXPECT_EQ(held().count(), uint64_t(n));
    EXPECT_LE(held().in_memory(), 8u);
    EXPECT_EQ(queue("q")->ready_count(), 0u);
    std::stable_sort(due.begin(), due.end());

    // Step through time: exactly the messages due by then are in the queue.
    for (uint64_t t = kT0; t <= kT0 + 10000; t += 250) {
        advance_to(t);
        const size_t expected = size_t(std::count_if(due.begin(), due.end(), [&](auto& d) { return d.first <= t; }));
        ASSERT_EQ(queue("q")->ready_count(), expected) << "at +" << (t - kT0) << " ms";
        EXPECT_EQ(held().count(), uint64_t(n) - expected);
        EXPECT_LE(held().in_memory(), 8u);
    }
    auto got = drain(c, "q");
    ASSERT_EQ(got.size(), size_t(n));
    for (int i = 0; i < n; ++i) {
        EXPECT_EQ(got[size_t(i)].body, std::to_string(due[size_t(i)].second)) << "position " << i;
        const amqp::FieldValue* x = got[size_t(i)].properties.headers->find("x-delay");
        ASSERT_TRUE(x);
        EXPECT_EQ(*x->as_int(), -int64_t(due[size_t(i)].first - kT0));  // as the plugin: -delay
    }
}

TEST_F(DelayedMessagesTest, EveryConfirmedDelayedMessageSurvivesAPowerLossAndComesWhenDue) {
    start_at(kT0);
    TestClient& c = connect();
    declare(c);
    ASSERT_TRUE(c.confirm_select(1));
    const int confirmed = 60;
    for (int i = 0; i < confirmed; ++i) c.publish(1, "dx", "k", "c" + std::to_string(i), delayed(1000 + 10 * i));
    settle();
    ASSERT_EQ(acked(c), uint64_t(confirmed));
    // More, never synced: the power goes before their batch is written.
    for (int i = 0; i < 20; ++i) c.publish(1, "dx", "k", "u" + std::to_string(i), delayed(500));
    lose_power();

    start_at(kT0 + 100);
    EXPECT_EQ(held().count(), uint64_t(confirmed));  // the 'd' record's count matched its batch
    EXPECT_LE(held().in_memory(), 8u);                // recovery read a window, not the log
    EXPECT_EQ(queue("q")->ready_count(), 0u);         // none early
    advance_to(kT0 + 2000);
    EXPECT_EQ(held().count(), 0u);
    TestClient& c2 = connect();
    auto got = drain(c2, "q");
    ASSERT_EQ(got.size(), size_t(confirmed));
    for (int i = 0; i < confirmed; ++i) EXPECT_EQ(got[size_t(i)].body, "c" + std::to_string(i));
}

// The batch that routes a due message into its queue also removes it from
// the delay log: a crash before that batch is written leaves it held (and
// routed again after the restart), one after it leaves it queued — never
// both, never neither.
class DelayedCrashTest : public DelayedMessagesTest, public ::testing::WithParamInterface<bool> {};

TEST_P(DelayedCrashTest, ADueMessageIsHeldOrQueuedAfterACrashNeverBothNorNeither) {
    const bool written = GetParam();
    start_at(kT0);
    TestClient& c = connect();
    declare(c);
    ASSERT_TRUE(c.confirm_select(1));
    c.publish(1, "dx", "k", "m", delayed(1000));
    settle();
    ASSERT_EQ(acked(c), 1u);
    now_ = kT0 + 1000;
    broker_->set_test_clock_ms(now_);
    broker_->timers().run(now_);  // routed in this turn: its batch is gathering
    EXPECT_EQ(queue("q")->ready_count(), 1u);
    if (written) settle();
    lose_power();

    start_at(kT0 + 1000);
    EXPECT_EQ(held().count() + queue("q")->ready_count(), 1u);
    EXPECT_EQ(queue("q")->ready_count(), written ? 1u : 0u);
    advance_to(kT0 + 1001);
    TestClient& c2 = connect();
    auto got = drain(c2, "q");
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].body, "m");
    EXPECT_EQ(held().count(), 0u);
}

INSTANTIATE_TEST_SUITE_P(BeforeOrAfterItsBatch, DelayedCrashTest, ::testing::Values(false, true));

TEST_F(DelayedMessagesTest, DeletingTheExchangeDropsItsHeldMessagesForGood) {
    start_at(kT0);
    TestClient& c = connect();
    declare(c);
    for (int i = 0; i < 30; ++i) c.publish(1, "dx", "k", "m", delayed(1000));
    settle();
    m::ExchangeDelete d;
    d.exchange = "dx";
    c.send(1, d);
    settle();
    c.expect<m::ExchangeDeleteOk>(1);
    crash();
    start_at(kT0 + 5000);
    EXPECT_EQ(broker_->find_vhost("/")->find_exchange("dx"), nullptr);
    // The log is gone from the store: nothing under a delay-log key remains.
    size_t keys = 0;
    store_->scan(storage::Column::msgs, "", "", [&](std::string_view key, std::string_view) {
        keys += key.size() == 24;
        return true;
    });
    EXPECT_EQ(keys, 0u);
    EXPECT_EQ(queue("q")->ready_count(), 0u);
}

}  // namespace
}  // namespace sluice::test
