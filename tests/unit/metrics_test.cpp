// net/metrics_text: the Prometheus texts, driven through sans-IO sessions
// (no socket): node-level totals, per-queue series and their labels, and the
// cost of both with 10,000 queues. When promtool (Debian's prometheus) is on
// PATH, both texts must pass `promtool check metrics`.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "broker/vhost.hpp"
#include "net/metrics_text.hpp"
#include "tests/unit/session_harness.hpp"

namespace sluice::test {
namespace {

namespace m = amqp::method;

// The value of the sample whose line starts with `series` ("name" or
// name{labels}), or -1 when absent.
double sample(const std::string& text, const std::string& series) {
    size_t pos = 0;
    while ((pos = text.find(series + " ", pos)) != std::string::npos) {
        if (pos == 0 || text[pos - 1] == '\n') return std::stod(text.substr(pos + series.size() + 1));
        pos += series.size();
    }
    return -1;
}

bool have_promtool() { return std::system("command -v promtool >/dev/null 2>&1") == 0; }

// promtool's output ("" when it is happy) and exit status.
std::pair<int, std::string> promtool_check(const std::string& text) {
    char path[] = "/tmp/sluice-metrics-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return {-1, "mkstemp failed"};
    FILE* f = fdopen(fd, "w");
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    std::string cmd = std::string("promtool check metrics < ") + path + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[512];
    while (p && std::fgets(buf, sizeof buf, p)) out += buf;
    int status = p ? pclose(p) : -1;
    std::remove(path);
    return {status, out};
}

class MetricsTest : public SessionTest {};

TEST_F(MetricsTest, NodeTotalsMoveByWhatWasDone) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "work");
    ASSERT_TRUE(c.confirm_select(1));
    const std::string before = net::metrics_text(broker());
    for (int i = 0; i < 7; ++i) c.publish(1, "", q, "body-" + std::to_string(i));
    c.publish(1, "", "no-such-queue", "lost");
    c.clear();
    const std::string after = net::metrics_text(broker());
    auto delta = [&](const char* name) { return sample(after, name) - sample(before, name); };
    EXPECT_EQ(delta("sluice_messages_published_total"), 8);
    EXPECT_EQ(delta("sluice_messages_routed_total"), 7);
    EXPECT_EQ(delta("sluice_messages_unroutable_total"), 1);
    EXPECT_EQ(delta("sluice_messages_confirmed_total"), 8);  // no store: confirmed at once
    EXPECT_EQ(sample(after, "sluice_queue_messages_ready"), 7);
    EXPECT_EQ(sample(after, "sluice_queues"), 1);
    EXPECT_EQ(sample(after, "sluice_connections"), 1);
    EXPECT_EQ(sample(after, "sluice_channels"), 1);
    EXPECT_GT(sample(after, "sluice_connection_incoming_bytes_total"), 0);
    EXPECT_GT(sample(after, "sluice_process_resident_memory_bytes"), 0);
    EXPECT_GT(sample(after, "sluice_process_open_fds"), 0);
    EXPECT_EQ(sample(after, "sluice_message_memory_bytes"), 7 * 6);
    // No store attached: no storage series.
    EXPECT_EQ(after.find("sluice_storage_"), std::string::npos);
    // Nothing per queue in the aggregated text.
    EXPECT_EQ(after.find("queue=\""), std::string::npos);
}

TEST_F(MetricsTest, PerQueueSeries) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "orders");
    c.declare_queue(1, "idle");
    for (int i = 0; i < 5; ++i) c.publish(1, "", q, "x");
    // Two to a consumer (one acked, one rejected with requeue), one by get.
    ASSERT_TRUE(c.qos(1, 2));
    std::string tag = c.consume(1, q);
    ServerFrame d1 = c.expect<m::BasicDeliver>(1);
    ServerFrame d2 = c.expect<m::BasicDeliver>(1);
    c.ack(1, d1.get<m::BasicDeliver>().delivery_tag);
    c.expect<m::BasicDeliver>(1);  // the freed credit brings the third
    c.reject(1, d2.get<m::BasicDeliver>().delivery_tag, true);
    c.expect<m::BasicDeliver>(1);  // the requeued one again, redelivered
    c.clear();

    const std::string text = net::per_object_metrics_text(broker());
    const std::string l = "{queue=\"orders\",vhost=\"/\"}";
    EXPECT_EQ(sample(text, "sluice_queue_messages_published_total" + l), 5);
    EXPECT_EQ(sample(text, "sluice_queue_messages_delivered_total" + l), 4);
    EXPECT_EQ(sample(text, "sluice_queue_messages_redelivered_total" + l), 1);
    EXPECT_EQ(sample(text, "sluice_queue_messages_acked_total" + l), 1);
    EXPECT_EQ(sample(text, "sluice_queue_messages_ready" + l), 2);
    EXPECT_EQ(sample(text, "sluice_queue_messages_unacked" + l), 2);
    EXPECT_EQ(sample(text, "sluice_queue_messages" + l), 4);
    EXPECT_EQ(sample(text, "sluice_queue_messages_ram_bytes" + l), 2);
    EXPECT_EQ(sample(text, "sluice_queue_consumers" + l), 1);
    EXPECT_EQ(sample(text, "sluice_queue_messages_ready{queue=\"idle\",vhost=\"/\"}"), 0);
    // Only per-queue families here.
    EXPECT_EQ(text.find("sluice_connections"), std::string::npos);

    const std::string node = net::metrics_text(broker());
    EXPECT_EQ(sample(node, "sluice_consumers"), 1);
    EXPECT_EQ(sample(node, "sluice_queue_messages_unacked"), 2);
    EXPECT_GE(sample(node, "sluice_messages_redelivered_total"), 1);
    EXPECT_EQ(sample(node, "sluice_messages_acked_total"), 1);
    EXPECT_EQ(sample(node, "sluice_messages_rejected_total"), 1);

}

// --prometheus-names rabbitmq: rabbitmq_prometheus's names and labels carry
// the same figures as Sluice's, and no sluice_ series; "both" carries each.
TEST_F(MetricsTest, RabbitMqNamesCarryTheSameFigures) {
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "jobs");
    ASSERT_TRUE(c.confirm_select(1));
    for (int i = 0; i < 6; ++i) c.publish(1, "", q, "x");
    c.publish(1, "", "nowhere", "lost");
    c.clear();  // the confirms
    ASSERT_TRUE(c.qos(1, 2));
    c.consume(1, q);
    ServerFrame d = c.expect<m::BasicDeliver>(1);
    c.expect<m::BasicDeliver>(1);
    c.ack(1, d.get<m::BasicDeliver>().delivery_tag);
    c.expect<m::BasicDeliver>(1);
    c.clear();

    const net::PrometheusNaming rabbit{net::PrometheusNames::rabbitmq, "sluice@test"};
    const std::string text = net::metrics_text(broker(), rabbit);
    EXPECT_EQ(text.find("sluice_"), std::string::npos);
    const std::string p = "{protocol=\"amqp091\"}", pq = "{protocol=\"amqp091\",queue_type=\"rabbit_classic_queue\"}";
    const std::pair<std::string, double> node_expected[] = {
        {"rabbitmq_global_messages_received_total" + p, 7},
        {"rabbitmq_global_messages_routed_total" + p, 6},
        {"rabbitmq_global_messages_unroutable_dropped_total" + p, 1},
        {"rabbitmq_global_messages_unroutable_returned_total" + p, 0},
        {"rabbitmq_global_messages_confirmed_total" + p, 7},
        {"rabbitmq_global_messages_delivered_total" + pq, 3},
        {"rabbitmq_global_messages_acknowledged_total" + pq, 1},
        {"rabbitmq_queue_messages_ready", 3},
        {"rabbitmq_queue_messages_unacked", 2},
        {"rabbitmq_queue_messages", 5},
        {"rabbitmq_queues", 1},
        {"rabbitmq_consumers", 1},
        {"rabbitmq_connections", 1},
        {"rabbitmq_channels", 1},
    };
    for (const auto& [series, value] : node_expected) EXPECT_EQ(sample(text, series), value) << series;
    EXPECT_EQ(sample(text, "rabbitmq_identity_info{rabbitmq_cluster=\"sluice\",rabbitmq_endpoint=\"aggregated\","
                           "rabbitmq_node=\"sluice@test\"}"),
              1);
    EXPECT_EQ(text.find("queue=\""), std::string::npos);

    const std::string per_object = net::per_object_metrics_text(broker(), net::kDefaultCapacityInterval, rabbit);
    EXPECT_EQ(per_object.find("sluice_"), std::string::npos);
    const std::string l = "{queue=\"jobs\",vhost=\"/\"}";
    const std::pair<const char*, double> queue_expected[] = {
        {"rabbitmq_queue_messages_ready", 3}, {"rabbitmq_queue_messages_unacked", 2}, {"rabbitmq_queue_messages", 5},
        {"rabbitmq_queue_consumers", 1},      {"rabbitmq_queue_messages_acked_total", 1},
    };
    for (const auto& [name, value] : queue_expected) EXPECT_EQ(sample(per_object, name + l), value) << name;
    EXPECT_NE(per_object.find("rabbitmq_endpoint=\"per-object\""), std::string::npos);

    const net::PrometheusNaming both{net::PrometheusNames::both, "sluice@test"};
    const std::string all = net::metrics_text(broker(), both);
    EXPECT_EQ(sample(all, "sluice_queue_messages_ready"), 3);
    EXPECT_EQ(sample(all, "rabbitmq_queue_messages_ready"), 3);
    // Sluice's names by default, and no rabbitmq_ ones.
    EXPECT_EQ(net::metrics_text(broker()).find("rabbitmq_"), std::string::npos);
    if (have_promtool())
        for (const std::string& t : {text, per_object, all}) {
            auto [status, out] = promtool_check(t);
            EXPECT_EQ(status, 0) << out;
            EXPECT_EQ(out, "");
        }
    EXPECT_EQ(net::parse_prometheus_names("both"), net::PrometheusNames::both);
    EXPECT_FALSE(net::parse_prometheus_names("RabbitMQ"));
}

TEST_F(MetricsTest, AwkwardQueueNamesAreEscapedAndValidUtf8) {
    TestClient& c = connect();
    c.declare_queue(1, "q\"uote\\back\nline");  // the newline is stripped from the name, as RabbitMQ does
    c.declare_queue(1, std::string("bad\xff\xfeutf8"));
    c.declare_queue(1, "caf\xc3\xa9");
    const std::string text = net::per_object_metrics_text(broker());
    EXPECT_NE(text.find("queue=\"q\\\"uote\\\\backline\""), std::string::npos) << text;
    EXPECT_NE(text.find("queue=\"bad\xEF\xBF\xBD\xEF\xBF\xBDutf8\""), std::string::npos);
    EXPECT_NE(text.find("queue=\"caf\xc3\xa9\""), std::string::npos);
    if (have_promtool()) {
        auto [status, out] = promtool_check(text);
        EXPECT_EQ(status, 0) << out;
    }
}

TEST_F(MetricsTest, PromtoolAcceptsBothTexts) {
    if (!have_promtool()) GTEST_SKIP() << "promtool not on PATH (Debian package prometheus)";
    TestClient& c = connect();
    std::string q = c.declare_queue(1, "lint");
    c.publish(1, "", q, "x");
    for (const std::string& text : {net::metrics_text(broker()), net::per_object_metrics_text(broker())}) {
        auto [status, out] = promtool_check(text);
        EXPECT_EQ(status, 0) << out;
        EXPECT_EQ(out, "") << out;
    }
}

// With 10,000 queues the aggregated text stays small and quick; the
// per-object one is ~10 series per queue.
TEST_F(MetricsTest, TenThousandQueues) {
    broker::VHost& v = vhost();
    for (int i = 0; i < 10000; ++i) {
        bool created = false;
        auto r = v.declare_queue("q" + std::to_string(i), {}, 0, created);
        ASSERT_TRUE(std::holds_alternative<broker::QueuePtr>(r));
    }
    using clock = std::chrono::steady_clock;
    auto t0 = clock::now();
    std::string node = net::metrics_text(broker());
    auto t1 = clock::now();
    std::string per_object = net::per_object_metrics_text(broker());
    auto t2 = clock::now();
    double node_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    double per_object_ms = std::chrono::duration<double, std::milli>(t2 - t1).count();
    RecordProperty("aggregated_ms", std::to_string(node_ms));
    RecordProperty("per_object_ms", std::to_string(per_object_ms));
    std::printf("10k queues: /metrics %.2f ms (%zu bytes), per-object %.2f ms (%zu bytes)\n", node_ms, node.size(),
                per_object_ms, per_object.size());
    EXPECT_EQ(sample(node, "sluice_queues"), 10000);
    EXPECT_LT(node.size(), 32u * 1024);  // no per-queue series
    // Generous bounds (a shared 2-core machine, maybe a sanitizer build):
    // they catch an accidental O(n²), not a slow machine.
    EXPECT_LT(node_ms, 250);
    EXPECT_LT(per_object_ms, 5000);
    EXPECT_EQ(sample(per_object, "sluice_queue_messages_ready{queue=\"q9999\",vhost=\"/\"}"), 0);
}

}  // namespace
}  // namespace sluice::test
