// How long the event loop keeps polling its sockets after running out of work
// before it sleeps in epoll_wait: an adaptive window, as the Linux guest's
// cpuidle-haltpoll governor sizes its poll before halting a vCPU.
//
// Why: on a VM a sleeping thread's vCPU halts, and waking it costs the peer an
// IPI and this thread a VM entry — 25–30 µs on the 2-core benchmark VM, paid
// on every hop of a request/reply exchange. Polling through a short gap
// avoids both. The window grows (doubling from `kStart`) while gaps are short
// enough that polling would have caught them, and halves after each gap
// longer than the maximum, down to no polling at all; so a broker that idles,
// or waits on fsync, stops spending CPU on polling within a few gaps.
//
// Pure arithmetic (no clock, no I/O): the loop in net/server.cpp measures.
#pragma once

#include <algorithm>
#include <chrono>

namespace sluice::net {

class SpinWindow {
public:
    using ns = std::chrono::nanoseconds;
    static constexpr ns kStart{10'000};

    explicit SpinWindow(ns max) : max_(max), window_(max) {}

    // How long to poll after the next pass that finds no work.
    ns current() const { return window_; }
    ns max() const { return max_; }

    // The loop slept (the window ran out) and woke `idle` after its last
    // work. (A gap that polling caught needs no call: the window is right.)
    void on_slept(ns idle) {
        if (idle <= max_) {  // a longer poll would have caught it
            window_ = window_ < kStart ? std::min(kStart, max_) : std::min(max_, window_ * 2);
        } else {
            window_ /= 2;
            if (window_ < kStart) window_ = ns{0};
        }
    }

private:
    ns max_;
    ns window_;
};

}  // namespace sluice::net
