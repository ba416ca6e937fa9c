// A queue's capacity figures (broker/queue_flow.hpp): drain time and
// expected wait from two samples of (published, depth).
#include <gtest/gtest.h>

#include "broker/queue_flow.hpp"

namespace sluice::broker {
namespace {

TEST(QueueFlow, UnknownUntilTwoSamples) {
    QueueFlow f;
    EXPECT_FALSE(f.observe(1000, 1000, 0, 0, false).known);
    EXPECT_FALSE(f.observe(1500, 1000, 10, 10, false).known) << "closer than the interval: no second sample";
    EXPECT_TRUE(f.observe(2000, 1000, 10, 10, false).known);
}

TEST(QueueFlow, NoConsumerNeverDrainsNorServes) {
    QueueFlow f;
    f.observe(0, 1000, 0, 0, false);
    QueueCapacity c = f.observe(2000, 1000, 200, 200, false);  // 100/s in, nothing out
    ASSERT_TRUE(c.known);
    EXPECT_DOUBLE_EQ(c.publish_rate, 100);
    EXPECT_DOUBLE_EQ(c.consume_rate, 0);
    EXPECT_DOUBLE_EQ(c.net_drain_rate, -100);
    EXPECT_FALSE(c.drain_seconds);
    EXPECT_FALSE(c.expected_wait_seconds);
}

TEST(QueueFlow, LittlesLawAndNetDrain) {
    QueueFlow f;
    f.observe(0, 1000, 1000, 900, true);
    // 10 s: 100 published (10/s), depth 900 → 600: 400 left (40/s).
    QueueCapacity c = f.observe(10000, 1000, 1100, 600, true);
    ASSERT_TRUE(c.known);
    EXPECT_DOUBLE_EQ(c.publish_rate, 10);
    EXPECT_DOUBLE_EQ(c.consume_rate, 40);
    EXPECT_DOUBLE_EQ(c.net_drain_rate, 30);
    ASSERT_TRUE(c.drain_seconds);
    EXPECT_DOUBLE_EQ(*c.drain_seconds, 600.0 / 30);
    ASSERT_TRUE(c.expected_wait_seconds);
    EXPECT_DOUBLE_EQ(*c.expected_wait_seconds, 600.0 / 40);
}

TEST(QueueFlow, GrowingQueueWithAConsumerServesButNeverDrains) {
    QueueFlow f;
    f.observe(0, 1000, 0, 0, true);
    QueueCapacity c = f.observe(1000, 1000, 50, 30, true);  // 50 in, 20 out
    EXPECT_DOUBLE_EQ(c.consume_rate, 20);
    EXPECT_FALSE(c.drain_seconds);
    ASSERT_TRUE(c.expected_wait_seconds);
    EXPECT_DOUBLE_EQ(*c.expected_wait_seconds, 30.0 / 20);
}

TEST(QueueFlow, EmptyQueue) {
    QueueFlow f;
    f.observe(0, 1000, 0, 0, true);
    QueueCapacity c = f.observe(1000, 1000, 0, 0, true);
    EXPECT_EQ(c.drain_seconds, 0.0);
    EXPECT_EQ(c.expected_wait_seconds, 0.0) << "a consumer takes a new message at once";
    QueueFlow idle;
    idle.observe(0, 1000, 0, 0, false);
    c = idle.observe(1000, 1000, 0, 0, false);
    EXPECT_EQ(c.drain_seconds, 0.0);
    EXPECT_FALSE(c.expected_wait_seconds) << "no consumer: a new message waits for ever";
}

TEST(QueueFlow, ReadsBetweenSamplesKeepTheLastWindowAndStaleSamplesStartOver) {
    QueueFlow f;
    f.observe(0, 1000, 0, 0, true);
    f.observe(1000, 1000, 10, 0, true);  // 10/s in and out
    QueueCapacity c = f.observe(1400, 1000, 100, 50, true);  // no new sample: same rates, depth of now
    EXPECT_DOUBLE_EQ(c.consume_rate, 10);
    ASSERT_TRUE(c.expected_wait_seconds);
    EXPECT_DOUBLE_EQ(*c.expected_wait_seconds, 5);
    EXPECT_FALSE(f.observe(1000 + QueueFlow::kStaleMs + 1, 1000, 100, 50, true).known);
}

}  // namespace
}  // namespace sluice::broker
