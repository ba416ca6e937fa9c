// The node-level series under rabbitmq_prometheus's names and labels (its
// aggregated /metrics), so RabbitMQ's Grafana dashboards (RabbitMQ-Overview)
// read Sluice unchanged. Each is a figure Sluice already keeps, under the
// name RabbitMQ gives the same figure; where Sluice keeps no such figure the
// series is left out rather than made up (docs/metrics.md lists them).
//
// Labels as RabbitMQ sets them: the rabbitmq_global_* counters carry
// protocol="amqp091", and the delivery-side ones queue_type too (every
// Sluice queue counts as a classic queue).
#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>

#include "broker/broker.hpp"
#include "net/metrics_families.hpp"

namespace sluice::net::metrics {

namespace {

using Labels = std::vector<prometheus::ClientMetric::Label>;

const Labels& amqp091() {
    static const Labels l{{"protocol", "amqp091"}};
    return l;
}
const Labels& amqp091_classic() {
    static const Labels l{{"protocol", "amqp091"}, {"queue_type", "rabbit_classic_queue"}};
    return l;
}

struct GlobalCounter {
    const char* name;
    const char* help;
    uint64_t broker::BrokerStats::*field;
    bool per_queue_type;  // labelled queue_type too (the delivery side)
};
constexpr GlobalCounter kGlobalCounters[] = {
    {"rabbitmq_global_messages_received_total", "Total number of messages received from publishers",
     &broker::BrokerStats::messages_published, false},
    {"rabbitmq_global_messages_routed_total", "Total number of messages routed to queues or streams",
     &broker::BrokerStats::messages_routed, false},
    {"rabbitmq_global_messages_unroutable_returned_total",
     "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
     &broker::BrokerStats::messages_returned, false},
    {"rabbitmq_global_messages_confirmed_total", "Total number of messages confirmed to publishers",
     &broker::BrokerStats::messages_confirmed, false},
    {"rabbitmq_global_messages_delivered_total", "Total number of messages delivered to consumers",
     &broker::BrokerStats::messages_delivered, true},
    {"rabbitmq_global_messages_redelivered_total", "Total number of messages redelivered to consumers",
     &broker::BrokerStats::messages_redelivered, true},
    {"rabbitmq_global_messages_acknowledged_total", "Total number of messages acknowledged by consumers",
     &broker::BrokerStats::messages_acked, true},
    {"rabbitmq_global_messages_delivered_consume_manual_ack_total",
     "Total number of messages delivered to consumers using basic.consume with manual acknowledgment",
     &broker::BrokerStats::delivered_consume_ack, true},
    {"rabbitmq_global_messages_delivered_consume_auto_ack_total",
     "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment",
     &broker::BrokerStats::delivered_consume_no_ack, true},
    {"rabbitmq_global_messages_delivered_get_manual_ack_total",
     "Total number of messages delivered to consumers using basic.get with manual acknowledgment",
     &broker::BrokerStats::delivered_get_ack, true},
    {"rabbitmq_global_messages_delivered_get_auto_ack_total",
     "Total number of messages delivered to consumers using basic.get with automatic acknowledgment",
     &broker::BrokerStats::delivered_get_no_ack, true},
    {"rabbitmq_global_messages_get_empty_total",
     "Total number of times basic.get operations fetched no message", &broker::BrokerStats::gets_empty, true},
};

}  // namespace

void rabbitmq_identity_families(const std::string& node, const char* endpoint,
                                std::vector<prometheus::MetricFamily>& out) {
    Families f(out);
    // No RabbitMQ and no Erlang here: the product labels say what it is
    // (RabbitMQ 3.13+ adds product_name/product_version the same way).
    f.info("rabbitmq_build_info", "RabbitMQ & Erlang/OTP version info",
           {{"product_name", "Sluice"}, {"product_version", SLUICE_VERSION}});
    // The management API's cluster_name is "sluice" too.
    f.info("rabbitmq_identity_info", "RabbitMQ node & cluster identity info",
           {{"rabbitmq_cluster", "sluice"}, {"rabbitmq_endpoint", endpoint}, {"rabbitmq_node", node}});
}

void rabbitmq_node_families(broker::Broker& broker, const QueueTotals& t, std::vector<prometheus::MetricFamily>& out) {
    Families f(out);
    const broker::BrokerStats& s = broker.stats();
    const uint64_t connections = broker.session_count();

    // rabbitmq_prometheus's totals.
    f.gauge("rabbitmq_connections", "Connections currently open", double(connections));
    f.gauge("rabbitmq_channels", "Channels currently open", double(open_channels(s)));
    f.gauge("rabbitmq_consumers", "Consumers currently connected", double(t.consumers));
    f.gauge("rabbitmq_queues", "Queues available", double(t.queues));
    f.counter("rabbitmq_queues_declared_total", "Total number of queues declared", double(s.queues_declared));
    f.counter("rabbitmq_queues_created_total", "Total number of queues created", double(s.queues_created));
    f.counter("rabbitmq_queues_deleted_total", "Total number of queues deleted", double(s.queues_deleted));

    // connection_churn_metrics.
    f.counter("rabbitmq_connections_opened_total", "Total number of connections opened", double(s.connections_opened));
    f.counter("rabbitmq_connections_closed_total", "Total number of connections closed or terminated",
              double(closed_connections(s, connections)));
    f.counter("rabbitmq_channels_opened_total", "Total number of channels opened", double(s.channels_opened));
    f.counter("rabbitmq_channels_closed_total", "Total number of channels closed", double(s.channels_closed));

    // queue_coarse_metrics and queue_consumer_count, summed over the queues.
    f.gauge("rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers", double(t.ready));
    f.gauge("rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged",
            double(t.unacked));
    f.gauge("rabbitmq_queue_messages", "Sum of ready and unacknowledged messages - total queue depth",
            double(t.ready + t.unacked));
    f.gauge("rabbitmq_queue_consumers", "Consumers on a queue", double(t.consumers));

    // connection_coarse_metrics, summed over the connections.
    f.counter("rabbitmq_connection_incoming_bytes_total", "Total number of bytes received on a connection",
              double(s.bytes_in));
    f.counter("rabbitmq_connection_outgoing_bytes_total", "Total number of bytes sent on a connection",
              double(s.bytes_out));

    // rabbit_global_counters, each a BrokerStats counter.
    for (const GlobalCounter& c : kGlobalCounters)
        f.counter(c.name, c.help, double(s.*c.field), c.per_queue_type ? amqp091_classic() : amqp091());
    // Every unroutable message is either returned (mandatory) or dropped.
    f.counter("rabbitmq_global_messages_unroutable_dropped_total",
              "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
              double(s.messages_unroutable - std::min(s.messages_unroutable, s.messages_returned)), amqp091());
    f.gauge("rabbitmq_global_consumers", "Current number of consumers", double(t.consumers), amqp091());

    // node_coarse_metrics and node_metrics.
    f.gauge("rabbitmq_process_open_fds", "Open file descriptors", double(open_fds()));
    if (const uint64_t max = max_fds()) f.gauge("rabbitmq_process_max_fds", "Open file descriptors limit", double(max));
    f.gauge("rabbitmq_process_resident_memory_bytes", "Memory used in bytes", double(resident_bytes()));
    const broker::ResourceReadings& res = broker.resources();
    if (res.memory_limit != 0 && res.memory_limit != UINT64_MAX)
        f.gauge("rabbitmq_resident_memory_limit_bytes", "Memory high watermark in bytes", double(res.memory_limit));
    if (res.disk_free_limit != 0) {
        f.gauge("rabbitmq_disk_space_available_bytes", "Disk space available in bytes", double(res.disk_free));
        f.gauge("rabbitmq_disk_space_available_limit_bytes", "Free disk space low watermark in bytes",
                double(res.disk_free_limit));
    }
    // Sluice's runtime is its process: the node's uptime is the process's.
    f.gauge("rabbitmq_erlang_uptime_seconds", "Node uptime", uptime_seconds());

    // prometheus_rabbitmq_alarm_metrics_collector (no file descriptor alarm in Sluice).
    f.gauge("rabbitmq_alarms_free_disk_space_watermark", "is 1 if free disk space watermark alarm is in effect",
            broker.alarm_active(broker::Alarm::disk) ? 1 : 0);
    f.gauge("rabbitmq_alarms_memory_used_watermark", "is 1 if VM memory watermark alarm is in effect",
            broker.alarm_active(broker::Alarm::memory) ? 1 : 0);
}

}  // namespace sluice::net::metrics
