// storage::SharedBodies alone: a body is released exactly once, by the last
// of its entries to go, however the removals of its entries overlap.
#include "storage/shared_bodies.hpp"

#include <gtest/gtest.h>

namespace sluice::test {
namespace {

using storage::SharedBodies;

TEST(SharedBodiesTest, TheLastEntryReleasesTheBodyAndASecondDropOfAnEntryDoesNothing) {
    SharedBodies b;
    const uint64_t id = b.add({{1, 10}, {2, 20}, {3, 30}});
    EXPECT_TRUE(b.referenced(id));
    EXPECT_EQ(b.drop(1, 10), 0u);
    // An ack of queue 1's entry, then the delete of queue 1 behind it: the
    // entry's reference went with the ack, the delete finds nothing.
    EXPECT_TRUE(b.drop_from(1, 0).empty());
    EXPECT_EQ(b.drop(1, 10), 0u);
    EXPECT_EQ(b.drop(2, 20), 0u);
    EXPECT_TRUE(b.referenced(id)) << "queue 3 still holds it";
    EXPECT_EQ(b.drop(3, 30), id);
    EXPECT_FALSE(b.referenced(id));
    EXPECT_EQ(b.drop(3, 30), 0u);
    EXPECT_EQ(b.bodies(), 0u);
}

TEST(SharedBodiesTest, DropFromReleasesOnlyTheBodiesWhoseLastEntryWent) {
    SharedBodies b;
    const uint64_t a = b.add({{1, 1}, {2, 1}});
    const uint64_t c = b.add({{1, 2}, {2, 2}});
    const uint64_t d = b.add({{1, 3}});  // a shared body may end with one entry left
    EXPECT_EQ(b.drop(2, 2), 0u);
    auto released = b.drop_from(1, 2);  // queue 1 purges its tail from seq 2
    ASSERT_EQ(released.size(), 2u);
    EXPECT_EQ(released[0], c);
    EXPECT_EQ(released[1], d);
    EXPECT_TRUE(b.referenced(a));
    EXPECT_EQ(b.drop_from(2, 0), std::vector<uint64_t>{});  // queue 1 still holds a
    EXPECT_EQ(b.drop_from(1, 0), std::vector<uint64_t>{a});
    EXPECT_EQ(b.bodies(), 0u);
}

TEST(SharedBodiesTest, RecoveryCountsEachEntryOnceAndNewIdsComeAfterTheStoredOnes) {
    SharedBodies b;
    b.next_id_at_least(7);
    b.recovered(1, 5, 42);
    b.recovered(1, 5, 42);  // the same entry seen twice
    b.recovered(2, 9, 42);
    EXPECT_GT(b.add({{1, 6}, {2, 10}}), 42u);
    EXPECT_EQ(b.drop(1, 5), 0u);
    EXPECT_EQ(b.drop(2, 9), 42u);
}

}  // namespace
}  // namespace sluice::test
