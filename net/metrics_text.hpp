// Prometheus text exposition of the broker's metrics (prometheus-cpp's
// registry and TextSerializer), in RabbitMQ's split:
//
//   metrics_text             GET /metrics: node-level series only. Its cost
//                            does not grow with the number of queues beyond
//                            one pass summing their depths (no per-queue
//                            series), so it stays cheap with 100k queues.
//   per_object_metrics_text  GET /metrics/per-object: one series per queue
//                            and family (labels vhost, queue). Opt-in: with
//                            10k queues it is ~10 families × 10k series.
//
// Both read the broker's plain counters (BrokerStats, Queue::counters,
// storage::StoreStats) at scrape time through prometheus::Collectable
// implementations; nothing on the message path touches prometheus-cpp.
//
// Thread-safety: call on the broker thread (the HTTP server runs there).
#pragma once

#include <string>

namespace sluice::broker {
class Broker;
}

namespace sluice::net {

// Content-Type of both texts.
inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

std::string metrics_text(broker::Broker& broker);
std::string per_object_metrics_text(broker::Broker& broker);

}  // namespace sluice::net
