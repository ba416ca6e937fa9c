// What the two sets of Prometheus names (Sluice's, metrics_text.cpp; and
// RabbitMQ's rabbitmq_prometheus ones, metrics_rabbitmq.cpp) share: the
// family builder, the process readings and the queue totals. Private to
// net/metrics_*.cpp (it pulls in prometheus-cpp's model headers).
//
// Thread-safety: as metrics_text.hpp (the broker thread reads the broker;
// the builders touch only their output vector).
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <string>
#include <vector>

#include "broker/broker_stats.hpp"
#include "net/metrics_text.hpp"
#include "storage/store.hpp"

namespace sluice::broker {
class Broker;
}

namespace sluice::net::metrics {

// Families appended to `out`, one per call.
class Families {
public:
    explicit Families(std::vector<prometheus::MetricFamily>& out) : out_(out) {}

    prometheus::MetricFamily& family(const char* name, const char* help, prometheus::MetricType type) {
        out_.push_back(prometheus::MetricFamily{name, help, type, {}});
        return out_.back();
    }
    // One unlabelled sample (or one with `labels`).
    void gauge(const char* name, const char* help, double v, std::vector<prometheus::ClientMetric::Label> labels = {}) {
        prometheus::ClientMetric& m = family(name, help, prometheus::MetricType::Gauge).metric.emplace_back();
        m.label = std::move(labels);
        m.gauge.value = v;
    }
    void counter(const char* name, const char* help, double v,
                 std::vector<prometheus::ClientMetric::Label> labels = {}) {
        prometheus::ClientMetric& m = family(name, help, prometheus::MetricType::Counter).metric.emplace_back();
        m.label = std::move(labels);
        m.counter.value = v;
    }
    // An info-style series: value 1, the facts in its labels (untyped, as
    // rabbitmq_prometheus exports build_info and identity_info).
    void info(const char* name, const char* help, std::vector<prometheus::ClientMetric::Label> labels) {
        prometheus::ClientMetric& m = family(name, help, prometheus::MetricType::Untyped).metric.emplace_back();
        m.label = std::move(labels);
        m.untyped.value = 1;
    }
    // A histogram from per-bucket counts (not cumulative); bounds and sum are
    // divided by `unit` (1e6: µs → s).
    template <size_t N>
    void histogram(const char* name, const char* help, const storage::BucketCounts<N>& b,
                   const std::array<uint64_t, N>& bounds, double unit) {
        prometheus::ClientMetric& m = family(name, help, prometheus::MetricType::Histogram).metric.emplace_back();
        uint64_t cumulative = 0;
        m.histogram.bucket.reserve(N + 1);
        for (size_t i = 0; i <= N; ++i) {
            cumulative += b.counts[i];
            double bound = i < N ? static_cast<double>(bounds[i]) / unit : std::numeric_limits<double>::infinity();
            m.histogram.bucket.push_back({cumulative, bound});
        }
        m.histogram.sample_count = cumulative;
        m.histogram.sample_sum = static_cast<double>(b.sum) / unit;
    }

private:
    std::vector<prometheus::MetricFamily>& out_;
};

// One pass over every queue: what the node-level series sum.
struct QueueTotals {
    uint64_t queues = 0, exchanges = 0, consumers = 0, ready = 0, unacked = 0, paged = 0, ram_bytes = 0;
    uint64_t delayed = 0;  // messages held by x-delayed-message exchanges
};
QueueTotals queue_totals(broker::Broker& broker);

// Figures both namings derive from the broker's counters.
inline uint64_t open_channels(const broker::BrokerStats& s) { return s.channels_opened - s.channels_closed; }
// Sessions gone (each opened one not open now).
inline uint64_t closed_connections(const broker::BrokerStats& s, uint64_t open) {
    return s.connections_opened - std::min(s.connections_opened, open);
}

uint64_t resident_bytes();  // RSS, from /proc/self/statm
uint64_t open_fds();
uint64_t max_fds();          // RLIMIT_NOFILE; 0 if unlimited
double uptime_seconds();     // since the process started
// Label values must be UTF-8; AMQP names may hold any byte (invalid
// sequences become U+FFFD).
std::string utf8_label(const std::string& s);

// RabbitMQ's names (metrics_rabbitmq.cpp), appended to `out`. The node-level
// ones for /metrics ...
void rabbitmq_node_families(broker::Broker& broker, const QueueTotals& totals,
                            std::vector<prometheus::MetricFamily>& out);
// ... and rabbitmq_prometheus's "info" pair, which both endpoints carry
// (`endpoint`: "aggregated" or "per-object").
void rabbitmq_identity_families(const std::string& node, const char* endpoint,
                                std::vector<prometheus::MetricFamily>& out);

}  // namespace sluice::net::metrics
