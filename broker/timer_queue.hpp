// Deadlines on the broker thread (message TTLs, queue expiry): a min-heap of
// (Unix ms, callback). The net layer keeps one timer armed for the earliest
// deadline (on_earliest_changed tells it) and calls run() when it fires; a
// unit test calls run() with the time it wants.
//
// Callbacks that may outlive their owner capture a weak reference; a
// callback that finds its deadline superseded simply returns.
//
// Thread-safety: broker thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

namespace sluice::broker {

class TimerQueue {
public:
    // Runs fn at (or soon after) deadline_ms, never inline.
    void schedule(uint64_t deadline_ms, std::function<void()> fn) {
        const bool earliest = heap_.empty() || deadline_ms < heap_.top().deadline_ms;
        heap_.push(Entry{deadline_ms, next_order_++, std::move(fn)});
        if (earliest && on_earliest_changed_) on_earliest_changed_(deadline_ms);
    }
    // Runs every callback due at now_ms (including ones they schedule for
    // now or earlier); returns the next deadline, 0 when none is left.
    uint64_t run(uint64_t now_ms) {
        while (!heap_.empty() && heap_.top().deadline_ms <= now_ms) {
            std::function<void()> fn = std::move(const_cast<Entry&>(heap_.top()).fn);
            heap_.pop();
            fn();
        }
        return next_deadline();
    }
    uint64_t next_deadline() const { return heap_.empty() ? 0 : heap_.top().deadline_ms; }
    size_t size() const { return heap_.size(); }
    // The net layer's hook: a deadline earlier than any before was scheduled.
    void on_earliest_changed(std::function<void(uint64_t deadline_ms)> fn) { on_earliest_changed_ = std::move(fn); }

private:
    struct Entry {
        uint64_t deadline_ms;
        uint64_t order;  // FIFO among equal deadlines
        std::function<void()> fn;
        bool operator>(const Entry& o) const {
            return deadline_ms != o.deadline_ms ? deadline_ms > o.deadline_ms : order > o.order;
        }
    };
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap_;
    uint64_t next_order_ = 0;
    std::function<void(uint64_t)> on_earliest_changed_;
};

}  // namespace sluice::broker
