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
// Each in Sluice's names (sluice_*), RabbitMQ's (rabbitmq_prometheus's
// rabbitmq_* names and labels, so its Grafana dashboards work unchanged;
// metrics_rabbitmq.cpp, docs/metrics.md) or both: PrometheusNaming.
//
// Both read the broker's plain counters (BrokerStats, Queue::counters,
// storage::StoreStats) at scrape time through prometheus::Collectable
// implementations; nothing on the message path touches prometheus-cpp.
//
// Thread-safety: call on the broker thread (the HTTP server runs there),
// except render_per_object, which reads only its snapshot: the HTTP server
// renders the per-object text on a thread of its own, so a scrape of 100k
// queues does not stall the broker.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/cluster_status.hpp"

namespace sluice::broker {
class Broker;
}

namespace sluice::net {

// Content-Type of both texts.
inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// Which names the Prometheus texts carry (sluiced --prometheus-names).
enum class PrometheusNames { sluice, rabbitmq, both };
std::optional<PrometheusNames> parse_prometheus_names(std::string_view s);  // "sluice", "rabbitmq", "both"
struct PrometheusNaming {
    PrometheusNames names = PrometheusNames::sluice;
    std::string node = "sluice@localhost";  // rabbitmq_identity_info's rabbitmq_node
    bool sluice() const { return names != PrometheusNames::rabbitmq; }
    bool rabbitmq() const { return names != PrometheusNames::sluice; }
};

std::string metrics_text(broker::Broker& broker, const PrometheusNaming& naming = {});
// The capacity series (drain time, expected wait) come from rates over at
// least `sample_interval` (the management API's collect-statistics-interval).
inline constexpr std::chrono::milliseconds kDefaultCapacityInterval{5000};
// = render_per_object(per_object_snapshot())
std::string per_object_metrics_text(broker::Broker& broker,
                                    std::chrono::milliseconds sample_interval = kDefaultCapacityInterval,
                                    const PrometheusNaming& naming = {});

// The per-object text in two steps: a copy of what it shows (broker thread,
// O(queues), cheap), then the text (any thread).
struct PerObjectSnapshot;
std::shared_ptr<const PerObjectSnapshot> per_object_snapshot(
    broker::Broker& broker, std::chrono::milliseconds sample_interval = kDefaultCapacityInterval,
    const PrometheusNaming& naming = {});
std::string render_per_object(const PerObjectSnapshot& snapshot);

// Cluster mode (docs/cluster.md): one series per node and family, label
// `node` (the node id): sluice_cluster_leader (1 for the leader),
// sluice_cluster_in_sync, sluice_cluster_node_up (registered in etcd),
// sluice_cluster_replica_lag_batches, _lag_bytes, _lag_seconds (the leader's
// view of each follower), and sluice_cluster_epoch.
std::string cluster_metrics_text(const std::vector<ClusterNodeStatus>& nodes);

}  // namespace sluice::net
