// A queue's capacity figures, the seed's formulas: how long until it is
// empty at the present rates, and how long a message published now waits.
//
//   in        = publish rate (messages routed to the queue per second)
//   out       = in - d(depth)/dt: the rate messages leave it (acks,
//               deliveries without ack, expiries, length-limit drops,
//               purges), by conservation, so every way out counts
//   drain     = depth / (out - in)      when out > in, else never (null)
//   wait      = depth / out             (Little's law), else never (null)
//
// depth = ready + unacknowledged. An empty queue drains in 0 s; a new
// message waits 0 s in an empty queue that has a consumer.
//
// The rates come from two samples of (published, depth) at least a sample
// interval apart, taken when someone reads them (the management API, the
// per-object metrics): a queue nobody watches does no work, and the samples
// cost 48 bytes a queue. A reader more than kStale after the last sample
// starts over (its rates would average minutes of history).
//
// Thread-safety: the broker thread (as the queue's counters).
#pragma once

#include <cstdint>
#include <optional>

namespace sluice::broker {

struct QueueCapacity {
    bool known = false;  // two samples taken: the rates below mean something
    double publish_rate = 0;  // in, messages/s
    double consume_rate = 0;  // out, messages/s
    double net_drain_rate = 0;  // out - in (negative: growing)
    std::optional<double> drain_seconds;  // nullopt: never at these rates
    std::optional<double> expected_wait_seconds;
};

// The samples' clock: milliseconds of the steady clock.
int64_t flow_clock_ms();

// The formulas alone, for a depth and the rates.
QueueCapacity queue_capacity(uint64_t depth, double publish_rate, double consume_rate, bool has_consumers);

class QueueFlow {
public:
    static constexpr int64_t kStaleMs = 5 * 60 * 1000;

    // Takes a sample (published, depth) at now_ms if the last one is at
    // least min_gap_ms old; the figures over the last two samples, with the
    // depth of now.
    QueueCapacity observe(int64_t now_ms, int64_t min_gap_ms, uint64_t published, uint64_t depth, bool has_consumers);

private:
    struct Sample {
        int64_t ms = -1;  // -1: none
        uint64_t published = 0, depth = 0;
    };
    Sample prev_, cur_;
};

}  // namespace sluice::broker
