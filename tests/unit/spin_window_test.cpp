// The busy-poll window of the event loop (net/spin_window.hpp).
#include "net/spin_window.hpp"

#include <gtest/gtest.h>

using sluice::net::SpinWindow;
using namespace std::chrono_literals;

TEST(SpinWindow, StartsAtTheMaximum) {
    SpinWindow w(100us);
    EXPECT_EQ(w.current(), 100us);
}

TEST(SpinWindow, LongGapsHalveItDownToNoPolling) {
    SpinWindow w(100us);
    w.on_slept(5ms);
    EXPECT_EQ(w.current(), 50us);
    w.on_slept(5ms);
    EXPECT_EQ(w.current(), 25us);
    w.on_slept(5ms);
    EXPECT_EQ(w.current(), 12500ns);
    w.on_slept(5ms);  // below the 10 µs start: off
    EXPECT_EQ(w.current(), 0us);
    w.on_slept(5ms);
    EXPECT_EQ(w.current(), 0us);
}

TEST(SpinWindow, ShortGapsGrowItBackToTheMaximum) {
    SpinWindow w(100us);
    for (int i = 0; i < 6; ++i) w.on_slept(1s);
    ASSERT_EQ(w.current(), 0us);
    w.on_slept(40us);  // polling 40 µs would have caught this one
    EXPECT_EQ(w.current(), SpinWindow::kStart);
    w.on_slept(40us);
    EXPECT_EQ(w.current(), 20us);
    w.on_slept(100us);  // exactly the maximum still counts as catchable
    EXPECT_EQ(w.current(), 40us);
    w.on_slept(60us);
    EXPECT_EQ(w.current(), 80us);
    w.on_slept(60us);
    EXPECT_EQ(w.current(), 100us);  // capped
    w.on_slept(60us);
    EXPECT_EQ(w.current(), 100us);
}

TEST(SpinWindow, AMaximumBelowTheStartStaysWithinIt) {
    SpinWindow w(5us);
    w.on_slept(1ms);
    EXPECT_EQ(w.current(), 0us);
    w.on_slept(3us);
    EXPECT_EQ(w.current(), 5us);
}
