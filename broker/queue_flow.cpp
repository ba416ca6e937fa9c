#include "broker/queue_flow.hpp"

#include <algorithm>
#include <chrono>

namespace sluice::broker {

int64_t flow_clock_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

QueueCapacity queue_capacity(uint64_t depth, double publish_rate, double consume_rate, bool has_consumers) {
    QueueCapacity c;
    c.known = true;
    c.publish_rate = publish_rate;
    c.consume_rate = consume_rate;
    c.net_drain_rate = consume_rate - publish_rate;
    if (depth == 0) {
        c.drain_seconds = 0.0;
        if (has_consumers || consume_rate > 0) c.expected_wait_seconds = 0.0;
        return c;
    }
    if (c.net_drain_rate > 0) c.drain_seconds = double(depth) / c.net_drain_rate;
    if (consume_rate > 0) c.expected_wait_seconds = double(depth) / consume_rate;
    return c;
}

QueueCapacity QueueFlow::observe(int64_t now_ms, int64_t min_gap_ms, uint64_t published, uint64_t depth,
                                 bool has_consumers) {
    if (cur_.ms >= 0 && now_ms - cur_.ms > kStaleMs) prev_ = cur_ = Sample{};
    if (cur_.ms < 0 || now_ms - cur_.ms >= min_gap_ms) {
        prev_ = cur_;
        cur_ = Sample{now_ms, published, depth};
    }
    if (prev_.ms < 0 || cur_.ms <= prev_.ms) return QueueCapacity{};
    const double dt = double(cur_.ms - prev_.ms) / 1000.0;
    const double in = double(cur_.published - std::min(prev_.published, cur_.published)) / dt;
    const double depth_rate = (double(cur_.depth) - double(prev_.depth)) / dt;
    return queue_capacity(depth, in, std::max(0.0, in - depth_rate), has_consumers);
}

}  // namespace sluice::broker
