#include "net/metrics_text.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <algorithm>
#include <cstdio>
#include <limits>
#include <optional>
#include <prometheus/collectable.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <vector>

#include "broker/broker.hpp"
#include "broker/delayed_messages.hpp"
#include "broker/queue.hpp"
#include "broker/vhost.hpp"
#include "net/metrics_families.hpp"
#include "storage/store.hpp"

namespace sluice::net {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using metrics::Families;

// Taken during static initialisation, i.e. as the process starts.
const auto kStartSteady = std::chrono::steady_clock::now();
const auto kStartWall = std::chrono::system_clock::now();

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

// --- reading /proc ------------------------------------------------------

namespace metrics {

uint64_t resident_bytes() {
    FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    int n = std::fscanf(f, "%llu %llu", &size, &resident);
    std::fclose(f);
    if (n != 2) return 0;
    return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

uint64_t open_fds() {
    DIR* d = opendir("/proc/self/fd");
    if (!d) return 0;
    uint64_t n = 0;
    while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') ++n;
    closedir(d);
    return n > 0 ? n - 1 : 0;  // not the directory's own descriptor
}

uint64_t max_fds() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 0;
    return rl.rlim_cur;
}

double uptime_seconds() { return seconds_since(kStartSteady); }

std::string utf8_label(const std::string& s) {
    auto valid_at = [&](size_t i, size_t& len) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) return len = 1, true;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
        else return false;
        if (i + len > s.size()) return false;
        for (size_t k = 1; k < len; ++k) {
            auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
        return cp >= kMin[len] && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
    };
    std::string out;
    size_t i = 0, len = 0;
    while (i < s.size() && valid_at(i, len)) i += len;
    if (i == s.size()) return s;  // the usual case: no copy beyond the return
    out.assign(s, 0, i);
    while (i < s.size()) {
        if (valid_at(i, len)) {
            out.append(s, i, len);
            i += len;
        } else {
            out += "\xEF\xBF\xBD";
            ++i;
        }
    }
    return out;
}

QueueTotals queue_totals(broker::Broker& broker) {
    QueueTotals t;
    for (broker::VHost* v : broker.vhosts()) {
        t.exchanges += v->exchanges().size();
        for (const auto& [name, ex] : v->exchanges())
            if (const broker::DelayedMessages* d = ex->delayed()) t.delayed += d->count();
        t.queues += v->queues().size();
        for (const auto& [name, q] : v->queues()) {
            t.consumers += q->consumer_count();
            t.ready += q->ready_count();
            t.unacked += q->unacked_count();
            t.paged += q->paged_count();
            t.ram_bytes += q->memory_bytes();
        }
    }
    return t;
}

}  // namespace metrics

namespace {

using metrics::utf8_label;

// Node-level series in Sluice's names: O(1) families from the queue totals
// (nothing per queue in the output).
class NodeCollector : public prometheus::Collectable {
public:
    NodeCollector(broker::Broker& broker, const metrics::QueueTotals& totals) : broker_(broker), totals_(totals) {}

    std::vector<MetricFamily> Collect() const override {
        std::vector<MetricFamily> out;
        out.reserve(64);
        Families f(out);
        const broker::BrokerStats& s = broker_.stats();
        const auto [queues, exchanges, consumers, ready, unacked, paged, ram_bytes, delayed] = totals_;
        const uint64_t connections = broker_.session_count();

        f.gauge("sluice_connections", "Open AMQP connections.", double(connections));
        f.gauge("sluice_channels", "Open AMQP channels.", double(metrics::open_channels(s)));
        f.gauge("sluice_consumers", "Consumers on all queues.", double(consumers));
        f.gauge("sluice_queues", "Queues.", double(queues));
        f.gauge("sluice_exchanges", "Exchanges, the built-in ones included.", double(exchanges));
        f.gauge("sluice_messages_delayed", "Messages held by x-delayed-message exchanges until they are due.",
                double(delayed));
        f.counter("sluice_connections_opened_total", "AMQP connections opened.", double(s.connections_opened));
        f.counter("sluice_connections_closed_total", "AMQP connections closed.",
                  double(metrics::closed_connections(s, connections)));
        f.counter("sluice_channels_opened_total", "AMQP channels opened.", double(s.channels_opened));
        f.counter("sluice_channels_closed_total", "AMQP channels closed.", double(s.channels_closed));

        f.counter("sluice_messages_published_total", "Messages published (basic.publish) by clients.",
                  double(s.messages_published));
        f.counter("sluice_messages_routed_total", "Published messages routed to at least one queue.",
                  double(s.messages_routed));
        f.counter("sluice_messages_unroutable_total", "Published messages routed to no queue (dropped or returned).",
                  double(s.messages_unroutable));
        f.counter("sluice_messages_deduplicated_total",
                  "Messages dropped by a deduplication window: by an exchange's (also counted unroutable) or a "
                  "queue's (that queue did not take it).",
                  double(s.messages_deduplicated));
        f.counter("sluice_messages_delivered_total", "Messages delivered to consumers or by basic.get.",
                  double(s.messages_delivered));
        f.counter("sluice_messages_redelivered_total", "Deliveries flagged redelivered.", double(s.messages_redelivered));
        f.counter("sluice_messages_acked_total", "Deliveries acknowledged (basic.ack).", double(s.messages_acked));
        f.counter("sluice_messages_nacked_total", "Deliveries negatively acknowledged (basic.nack).",
                  double(s.messages_nacked));
        f.counter("sluice_messages_rejected_total", "Deliveries rejected (basic.reject).", double(s.messages_rejected));
        f.counter("sluice_messages_confirmed_total", "Publishes confirmed to publishers (publisher confirms).",
                  double(s.messages_confirmed));
        f.counter("sluice_messages_returned_total", "Messages returned to publishers (basic.return).",
                  double(s.messages_returned));
        f.counter("sluice_messages_expired_total", "Messages that expired in a queue (message or queue TTL).",
                  double(s.messages_expired));
        f.counter("sluice_messages_dropped_maxlen_total",
                  "Messages dropped from a queue's head by x-max-length / x-max-length-bytes.",
                  double(s.messages_dropped_maxlen));
        f.counter("sluice_messages_dead_lettered_total", "Messages re-published to a dead-letter exchange.",
                  double(s.messages_dead_lettered));
        f.counter("sluice_connection_incoming_bytes_total", "Bytes read from AMQP connections.", double(s.bytes_in));
        f.counter("sluice_connection_outgoing_bytes_total", "Bytes written to AMQP connections.", double(s.bytes_out));

        f.gauge("sluice_queue_messages_ready", "Messages ready for delivery, all queues.", double(ready));
        f.gauge("sluice_queue_messages_unacked", "Messages delivered and not yet acknowledged, all queues.",
                double(unacked));
        f.gauge("sluice_queue_messages", "Ready and unacknowledged messages, all queues.", double(ready + unacked));
        f.gauge("sluice_queue_messages_paged_out", "Ready messages held only in the store (paged out), all queues.",
                double(paged));
        f.gauge("sluice_queue_messages_ram_bytes", "Bytes of ready message bodies held in memory, all queues.",
                double(ram_bytes));

        f.gauge("sluice_process_resident_memory_bytes", "Resident set size of the broker process.",
                double(metrics::resident_bytes()));
        f.gauge("sluice_message_memory_bytes", "Bytes of message bodies the queues hold in memory (broker's account).",
                double(broker_.message_memory()));
        f.gauge("sluice_message_memory_limit_bytes",
                "Message memory past which every queue pages new messages out (--message-memory-limit).",
                double(broker_.config().message_memory_limit));
        f.gauge("sluice_process_open_fds", "Open file descriptors.", double(metrics::open_fds()));
        f.gauge("sluice_process_max_fds", "Open file descriptor limit.", double(metrics::max_fds()));
        f.gauge("sluice_process_start_time_seconds", "Start time of the process since the Unix epoch, seconds.",
                std::chrono::duration<double>(kStartWall.time_since_epoch()).count());
        f.gauge("sluice_uptime_seconds", "Seconds since the broker process started.", metrics::uptime_seconds());

        f.gauge("sluice_alarms_free_disk_space_watermark",
                "1 while free disk space is below --disk-free-limit (publishers are blocked).",
                broker_.alarm_active(broker::Alarm::disk) ? 1 : 0);
        f.gauge("sluice_alarms_memory_used_watermark",
                "1 while resident memory is above the memory high watermark (publishers are blocked).",
                broker_.alarm_active(broker::Alarm::memory) ? 1 : 0);
        const broker::ResourceReadings& res = broker_.resources();
        if (res.memory_limit != 0 && res.memory_limit != UINT64_MAX)
            f.gauge("sluice_resident_memory_limit_bytes", "The memory high watermark (--vm-memory-high-watermark).",
                    double(res.memory_limit));
        if (res.disk_free_limit != 0) {
            f.gauge("sluice_disk_space_available_limit_bytes", "Free disk space below which publishers are blocked.",
                    double(res.disk_free_limit));
            f.gauge("sluice_disk_space_available_bytes", "Free disk space on the data directory's volume.",
                    double(res.disk_free));
        }

        const broker::RecoveryStats& r = broker_.recovery_stats();
        f.gauge("sluice_recovery_duration_seconds", "Time the last start spent recovering durable data.", r.seconds);
        f.gauge("sluice_recovered_messages", "Messages recovered from the store at start.", double(r.messages));
        f.gauge("sluice_recovered_queues", "Durable queues recovered at start.", double(r.queues));
        f.gauge("sluice_recovered_exchanges", "Durable exchanges recovered at start.", double(r.exchanges));
        f.gauge("sluice_recovered_bindings", "Durable bindings recovered at start.", double(r.bindings));
        f.gauge("sluice_recovery_missing_bodies",
                "Stored messages found at start whose shared body was missing (each lost, and logged).",
                double(r.missing_bodies));

        if (const storage::Store* store = broker_.durability().store()) {
            const storage::StoreStats st = store->stats();
            f.gauge("sluice_storage_disk_bytes", "Bytes of RocksDB table files on disk.", double(store->disk_bytes()));
            f.counter("sluice_storage_written_bytes_total", "Bytes written to the store (batches).",
                      double(st.bytes_written));
            f.counter("sluice_storage_batches_total", "Batches committed to the store (group commits).",
                      double(st.batches));
            f.counter("sluice_storage_write_errors_total", "Store writes that failed.", double(st.write_errors));
            f.counter("sluice_storage_rewritten_batches_total",
                      "Failed batches written again ahead of a later one (after a failed write or sync).",
                      double(st.rewritten_batches));
            f.counter("sluice_storage_wal_syncs_total", "Write-ahead log syncs.", double(st.syncs));
            f.histogram("sluice_storage_wal_sync_duration_seconds",
                        "Duration of a write-ahead log sync (with its write, in sync mode).", st.sync_micros,
                        storage::kLatencyBucketMicros, 1e6);
            f.histogram("sluice_storage_commit_duration_seconds",
                        "From handing a batch to the commit thread to its completion (queueing, write, sync): "
                        "what a publisher confirm waits for once its batch is closed.",
                        st.commit_micros, storage::kLatencyBucketMicros, 1e6);
            f.histogram("sluice_storage_batch_writes", "Writes (puts and deletes) per committed batch.",
                        st.batch_writes, storage::kBatchWriteBuckets, 1.0);
        }
        return out;
    }

private:
    broker::Broker& broker_;
    const metrics::QueueTotals& totals_;
};

// Per-queue series, labels vhost and queue.
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
double capacity_value(const broker::QueueCapacity& c, const std::optional<double>& v) {
    if (!c.known) return kNaN;
    return v ? *v : std::numeric_limits<double>::infinity();
}
    struct Spec {
        const char* name;
        const char* help;
        MetricType type;
        double (*value)(const broker::Queue&, const broker::QueueCapacity&);
    };
    constexpr Spec kSpecs[] = {
        {"sluice_queue_messages_ready", "Messages ready for delivery.", MetricType::Gauge,
         [](const broker::Queue& q, const broker::QueueCapacity&) { return double(q.ready_count()); }},
        {"sluice_queue_messages_unacked", "Messages delivered and not yet acknowledged.", MetricType::Gauge,
         [](const broker::Queue& q, const broker::QueueCapacity&) { return double(q.unacked_count()); }},
        {"sluice_queue_messages", "Ready and unacknowledged messages.", MetricType::Gauge,
         [](const broker::Queue& q, const broker::QueueCapacity&) { return double(q.ready_count() + q.unacked_count()); }},
        {"sluice_queue_messages_paged_out", "Ready messages held only in the store (paged out).", MetricType::Gauge,
         [](const broker::Queue& q, const broker::QueueCapacity&) { return double(q.paged_count()); }},
        {"sluice_queue_messages_ram_bytes", "Bytes of ready message bodies held in memory.", MetricType::Gauge,
         [](const broker::Queue& q, const broker::QueueCapacity&) { return double(q.memory_bytes()); }},
        {"sluice_queue_consumers", "Consumers on the queue.", MetricType::Gauge,
         [](const broker::Queue& q, const broker::QueueCapacity&) { return double(q.consumer_count()); }},
        {"sluice_queue_head_message_age_seconds",
         "Seconds the oldest ready message in memory has waited (0 if none).", MetricType::Gauge,
         [](const broker::Queue& q, const broker::QueueCapacity&) { return double(q.head_age_s(q.vhost().broker().now_s())); }},
        {"sluice_queue_messages_published_total", "Messages that entered the queue.", MetricType::Counter,
         [](const broker::Queue& q, const broker::QueueCapacity&) { return double(q.counters.published); }},
        {"sluice_queue_messages_delivered_total", "Messages delivered from the queue (consumers and basic.get).",
         MetricType::Counter, [](const broker::Queue& q, const broker::QueueCapacity&) { return double(q.counters.delivered); }},
        {"sluice_queue_messages_redelivered_total", "Deliveries from the queue flagged redelivered.",
         MetricType::Counter, [](const broker::Queue& q, const broker::QueueCapacity&) { return double(q.counters.redelivered); }},
        {"sluice_queue_messages_acked_total", "Deliveries from the queue acknowledged.", MetricType::Counter,
         [](const broker::Queue& q, const broker::QueueCapacity&) { return double(q.counters.acked); }},
        {"sluice_queue_messages_expired_total", "Messages that expired in the queue.", MetricType::Counter,
         [](const broker::Queue& q, const broker::QueueCapacity&) { return double(q.counters.expired); }},
        {"sluice_queue_messages_dead_lettered_total", "Messages the queue dead-lettered.", MetricType::Counter,
         [](const broker::Queue& q, const broker::QueueCapacity&) { return double(q.counters.dead_lettered); }},
        // The capacity figures (broker/queue_flow.hpp): +Inf when the queue
        // does not drain (or nothing consumes) at the present rates, NaN
        // before the first two samples.
        {"sluice_queue_drain_seconds",
         "Seconds until the queue is empty at the present rates: depth / (consume rate - publish rate); "
         "+Inf if it is not draining.",
         MetricType::Gauge, [](const broker::Queue&, const broker::QueueCapacity& c) { return capacity_value(c, c.drain_seconds); }},
        {"sluice_queue_expected_wait_seconds",
         "Expected wait of a message published now: depth / consume rate (Little's law); +Inf if nothing consumes.",
         MetricType::Gauge,
         [](const broker::Queue&, const broker::QueueCapacity& c) { return capacity_value(c, c.expected_wait_seconds); }},
        {"sluice_queue_consume_rate", "Messages leaving the queue per second (acks, no-ack deliveries, expiries, drops).",
         MetricType::Gauge, [](const broker::Queue&, const broker::QueueCapacity& c) { return c.known ? c.consume_rate : kNaN; }},
    };
constexpr size_t kQueueFamilies = sizeof kSpecs / sizeof kSpecs[0];

constexpr size_t spec_index(std::string_view name) {
    for (size_t i = 0; i < kQueueFamilies; ++i)
        if (name == kSpecs[i].name) return i;
    throw "no such Sluice family";  // at compile time: a build error
}

// The per-queue families of rabbitmq_prometheus's /metrics/per-object that
// Sluice has (labels vhost, queue), each a Sluice family under RabbitMQ's
// name and help. docs/metrics.md lists the ones it lacks.
struct RabbitSpec {
    const char* name;
    const char* help;
    size_t sluice;  // index in kSpecs
};
constexpr RabbitSpec kRabbitSpecs[] = {
    {"rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers",
     spec_index("sluice_queue_messages_ready")},
    {"rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged",
     spec_index("sluice_queue_messages_unacked")},
    {"rabbitmq_queue_messages", "Sum of ready and unacknowledged messages - total queue depth",
     spec_index("sluice_queue_messages")},
    {"rabbitmq_queue_consumers", "Consumers on a queue", spec_index("sluice_queue_consumers")},
    {"rabbitmq_queue_messages_redelivered_total", "Total number of messages redelivered from a queue to consumers",
     spec_index("sluice_queue_messages_redelivered_total")},
    {"rabbitmq_queue_messages_acked_total", "Total number of messages acknowledged by consumers on a queue",
     spec_index("sluice_queue_messages_acked_total")},
};

}  // namespace

// What the per-object text shows, read on the broker thread: one row per
// queue (its labels and values). Copying it is O(queues) but cheap; turning
// it into text (prometheus-cpp's families, then the serializer) is the
// expensive part and needs no broker state.
struct PerObjectSnapshot {
    struct Row {
        std::string queue, vhost;  // label values, valid UTF-8
        double value[kQueueFamilies];
    };
    std::vector<Row> rows;
    PrometheusNaming naming;
};

std::shared_ptr<const PerObjectSnapshot> per_object_snapshot(broker::Broker& broker,
                                                             std::chrono::milliseconds sample_interval,
                                                             const PrometheusNaming& naming) {
    auto snap = std::make_shared<PerObjectSnapshot>();
    snap->naming = naming;
    const int64_t now_ms = broker::flow_clock_ms();
    for (broker::VHost* vh : broker.vhosts()) {
        broker::VHost& v = *vh;
        std::string vhost = utf8_label(v.name());
        snap->rows.reserve(snap->rows.size() + v.queues().size());
        for (const auto& [name, q] : v.queues()) {
            PerObjectSnapshot::Row& row = snap->rows.emplace_back();
            row.queue = utf8_label(name);
            row.vhost = vhost;
            const broker::QueueCapacity capacity = q->capacity(now_ms, sample_interval.count());
            for (size_t i = 0; i < kQueueFamilies; ++i) row.value[i] = kSpecs[i].value(*q, capacity);
        }
    }
    return snap;
}

namespace {

// One family with a series per queue: column `i` of the snapshot's rows.
void per_queue_family(const PerObjectSnapshot& snap, size_t i, const char* name, const char* help,
                      std::vector<MetricFamily>& out) {
    MetricFamily& fam = out.emplace_back();
    fam.name = name;
    fam.help = help;
    fam.type = kSpecs[i].type;
    fam.metric.resize(snap.rows.size());
    for (size_t k = 0; k < snap.rows.size(); ++k) {
        ClientMetric& m = fam.metric[k];
        m.label = {{"queue", snap.rows[k].queue}, {"vhost", snap.rows[k].vhost}};
        if (fam.type == MetricType::Counter) m.counter.value = snap.rows[k].value[i];
        else m.gauge.value = snap.rows[k].value[i];
    }
}

std::vector<MetricFamily> per_object_families(const PerObjectSnapshot& snap) {
    std::vector<MetricFamily> out;
    out.reserve(kQueueFamilies + std::size(kRabbitSpecs) + 2);
    if (snap.naming.sluice())
        for (size_t i = 0; i < kQueueFamilies; ++i) per_queue_family(snap, i, kSpecs[i].name, kSpecs[i].help, out);
    if (snap.naming.rabbitmq()) {
        for (const RabbitSpec& r : kRabbitSpecs) per_queue_family(snap, r.sluice, r.name, r.help, out);
        metrics::rabbitmq_identity_families(snap.naming.node, "per-object", out);
    }
    return out;
}

// The exporter's own metrics live in a prometheus-cpp registry: they are
// observed once per scrape, never on the message path.
struct ScrapeMetrics {
    prometheus::Registry registry;
    prometheus::Family<prometheus::Histogram>& family = prometheus::BuildHistogram()
        .Name("sluice_metrics_scrape_duration_seconds")
        .Help("Time spent collecting and rendering a metrics endpoint (on the broker thread).")
        .Register(registry);
    const prometheus::Histogram::BucketBoundaries bounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                         0.05,   0.1,   0.25,   0.5,   1,    2.5};
    prometheus::Histogram& aggregated = family.Add({{"endpoint", "aggregated"}}, bounds);
    prometheus::Histogram& per_object = family.Add({{"endpoint", "per_object"}}, bounds);
};

ScrapeMetrics& scrape_metrics() {
    static ScrapeMetrics m;
    return m;
}

std::string render(const std::vector<MetricFamily>& families) { return prometheus::TextSerializer().Serialize(families); }

}  // namespace

std::optional<PrometheusNames> parse_prometheus_names(std::string_view s) {
    if (s == "sluice") return PrometheusNames::sluice;
    if (s == "rabbitmq") return PrometheusNames::rabbitmq;
    if (s == "both") return PrometheusNames::both;
    return std::nullopt;
}

std::string metrics_text(broker::Broker& broker, const PrometheusNaming& naming) {
    const auto start = std::chrono::steady_clock::now();
    ScrapeMetrics& sm = scrape_metrics();
    const metrics::QueueTotals totals = metrics::queue_totals(broker);
    std::vector<MetricFamily> families;
    if (naming.sluice()) {
        families = NodeCollector(broker, totals).Collect();
        for (auto& f : sm.registry.Collect()) families.push_back(std::move(f));
    }
    if (naming.rabbitmq()) {
        metrics::rabbitmq_node_families(broker, totals, families);
        metrics::rabbitmq_identity_families(naming.node, "aggregated", families);
    }
    std::string text = render(families);
    sm.aggregated.Observe(seconds_since(start));
    return text;
}

std::string render_per_object(const PerObjectSnapshot& snapshot) {
    const auto start = std::chrono::steady_clock::now();
    std::string text = render(per_object_families(snapshot));
    scrape_metrics().per_object.Observe(seconds_since(start));  // prometheus-cpp's metrics lock
    return text;
}

std::string per_object_metrics_text(broker::Broker& broker, std::chrono::milliseconds sample_interval,
                                    const PrometheusNaming& naming) {
    return render_per_object(*per_object_snapshot(broker, sample_interval, naming));
}

std::string cluster_metrics_text(const std::vector<ClusterNodeStatus>& nodes) {
    std::string out;
    auto label = [](const std::string& node) {
        std::string v;
        for (char c : node) {
            if (c == '\\' || c == '"') v.push_back('\\');
            if (c == '\n') {
                v += "\\n";
                continue;
            }
            v.push_back(c);
        }
        return v;
    };
    auto family = [&](const char* name, const char* help, auto value) {
        out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n";
        for (const auto& n : nodes)
            out += std::string(name) + "{node=\"" + label(n.node) + "\"} " + value(n) + "\n";
    };
    auto num = [](auto v) { return std::to_string(v); };
    family("sluice_cluster_leader", "1 for the node that leads the cluster",
           [&](const ClusterNodeStatus& n) { return num(n.role == "leader" ? 1 : 0); });
    family("sluice_cluster_in_sync", "1 for a member of the in-sync replica set (confirms wait for it)",
           [&](const ClusterNodeStatus& n) { return num(n.in_sync ? 1 : 0); });
    family("sluice_cluster_node_up", "1 while the node holds a live registration (lease) in etcd",
           [&](const ClusterNodeStatus& n) { return num(n.alive ? 1 : 0); });
    family("sluice_cluster_replica_lag_batches", "batches the leader wrote that the node has not acknowledged",
           [&](const ClusterNodeStatus& n) { return num(n.lag_batches); });
    family("sluice_cluster_replica_lag_bytes", "bytes of those batches (as far as the leader's ring holds them)",
           [&](const ClusterNodeStatus& n) { return num(n.lag_bytes); });
    family("sluice_cluster_replica_lag_seconds", "age of the oldest batch the node has not acknowledged",
           [&](const ClusterNodeStatus& n) {
               char b[32];
               std::snprintf(b, sizeof b, "%.3f", double(n.lag_ms) / 1000.0);
               return std::string(b);
           });
    uint64_t epoch = 0;
    for (const auto& n : nodes) epoch = std::max(epoch, n.epoch);
    out += "# HELP sluice_cluster_epoch the leader's epoch (its etcd key's create revision)\n"
           "# TYPE sluice_cluster_epoch gauge\nsluice_cluster_epoch " + std::to_string(epoch) + "\n";
    return out;
}

}  // namespace sluice::net
