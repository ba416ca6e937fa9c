#include "cli/perf/report.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace sluice::perf {

std::optional<uint64_t> process_cpu_us(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!in || !std::getline(in, line)) return std::nullopt;
    // the command name may hold spaces and parentheses: fields start after the last ')'
    const auto close = line.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream fields(line.substr(close + 2));
    std::string f;
    uint64_t utime = 0, stime = 0;
    for (int i = 3; i <= 15 && fields >> f; ++i) {  // field 3 is the state
        if (i == 14) utime = std::stoull(f);
        if (i == 15) stime = std::stoull(f);
    }
    const long ticks = sysconf(_SC_CLK_TCK);
    if (ticks <= 0) return std::nullopt;
    return (utime + stime) * 1000000ull / static_cast<uint64_t>(ticks);
}

std::optional<uint64_t> process_rss_kib(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
    }
    return std::nullopt;
}

uint64_t self_cpu_us() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto us = [](const timeval& t) { return static_cast<uint64_t>(t.tv_sec) * 1000000u + static_cast<uint64_t>(t.tv_usec); };
    return us(ru.ru_utime) + us(ru.ru_stime);
}

LatencySummary LatencySummary::from(const HistogramSnapshot& h, uint64_t exact_max_ns) {
    LatencySummary l;
    l.p50_us = static_cast<double>(h.percentile(0.50)) / 1000.0;
    l.p95_us = static_cast<double>(h.percentile(0.95)) / 1000.0;
    l.p99_us = static_cast<double>(h.percentile(0.99)) / 1000.0;
    l.max_us = static_cast<double>(exact_max_ns ? exact_max_ns : h.max()) / 1000.0;
    // a bucket reports its upper bound, which may lie above the exact maximum
    l.p50_us = std::min(l.p50_us, l.max_us);
    l.p95_us = std::min(l.p95_us, l.max_us);
    l.p99_us = std::min(l.p99_us, l.max_us);
    return l;
}

namespace {

// 1234567.8 -> "1,234,568"
std::string grouped(double v) {
    char raw[32];
    std::snprintf(raw, sizeof raw, "%.0f", v);
    std::string s(raw), out;
    const size_t start = (s[0] == '-') ? 1 : 0;
    for (size_t i = 0; i < s.size(); ++i) {
        if (i > start && (s.size() - i) % 3 == 0) out.push_back(',');
        out.push_back(s[i]);
    }
    return out;
}

std::string micros(double us) {
    char buf[32];
    if (us < 10) std::snprintf(buf, sizeof buf, "%.1f", us);
    else std::snprintf(buf, sizeof buf, "%.0f", us);
    return buf;
}

}  // namespace

void print_progress(const PerfOptions& o, double at_s, double dt, const StatsSnapshot& now,
                    const StatsSnapshot& before, const char* phase) {
    if (dt <= 0) return;
    const HistogramSnapshot lat = now.latency.minus(before.latency);
    const double p50 = static_cast<double>(lat.percentile(0.5)) / 1000.0;
    const double p99 = static_cast<double>(lat.percentile(0.99)) / 1000.0;
    auto rate = [&](uint64_t a, uint64_t b) { return grouped(static_cast<double>(a - b) / dt); };
    if (o.rpc) {
        std::printf("[%6.1fs] calls %s/s | latency p50 %s µs, p99 %s µs\n", at_s,
                    rate(now.rpc_calls, before.rpc_calls).c_str(), micros(p50).c_str(), micros(p99).c_str());
    } else {
        std::printf("[%6.1fs]%s%s sent %s msg/s | received %s msg/s | confirmed %s msg/s | latency p50 %s µs, p99 %s µs\n",
                    at_s, phase[0] ? " " : "", phase, rate(now.sent, before.sent).c_str(),
                    rate(now.received, before.received).c_str(), rate(now.confirmed, before.confirmed).c_str(),
                    micros(p50).c_str(), micros(p99).c_str());
    }
    std::fflush(stdout);
}

void print_summary(const PerfOptions& o, const Summary& s) {
    std::printf("\nsluice-perf summary: %.2f s, %d %s, %d %s, %d queue%s, %u B, %s%s%s%s, %s exchange%s\n",
                s.duration_s, o.producers, o.rpc ? "client(s)" : "producer(s)", o.consumers,
                o.rpc ? "server(s)" : "consumer(s)", o.queues, o.queues == 1 ? "" : "s", o.size,
                o.persistent ? "persistent" : "transient", o.autoack ? ", autoack" : ", manual ack",
                o.confirm ? (", confirm window " + std::to_string(o.confirm)).c_str() : "",
                o.prefetch ? (", prefetch " + std::to_string(o.prefetch)).c_str() : "",
                o.rpc ? "default" : (o.exchange.empty() ? "default" : o.exchange_type_name()),
                o.rpc ? (o.rpc_direct           ? ", RPC with direct reply-to"
                                : o.rpc_queue_per_call ? ", RPC with a reply queue per call"
                                                       : ", RPC")
                      : "");
    std::printf("  sent         %s msgs   publish rate  %s msg/s\n", grouped(static_cast<double>(s.sent)).c_str(),
                grouped(s.publish_rate).c_str());
    std::printf("  received     %s msgs   consume rate  %s msg/s\n", grouped(static_cast<double>(s.received)).c_str(),
                grouped(s.consume_rate).c_str());
    if (o.confirm)
        std::printf("  confirmed    %s msgs (%s nacked)   confirm rate %s msg/s\n",
                    grouped(static_cast<double>(s.confirmed)).c_str(), grouped(static_cast<double>(s.nacked)).c_str(),
                    grouped(s.confirm_rate).c_str());
    if (s.returned) std::printf("  returned     %s msgs\n", grouped(static_cast<double>(s.returned)).c_str());
    if (o.rpc) std::printf("  RPC          %s calls/s\n", grouped(s.rpc_calls_per_s).c_str());
    if (s.backlog)
        std::printf("  backlog      fill %s msg/s (%.2f s), drain %s msg/s (%.2f s)\n", grouped(s.fill_rate).c_str(),
                    s.fill_s, grouped(s.drain_rate).c_str(), s.drain_s);
    std::printf("  latency      p50 %s µs, p95 %s µs, p99 %s µs, max %s µs%s\n", micros(s.latency.p50_us).c_str(),
                micros(s.latency.p95_us).c_str(), micros(s.latency.p99_us).c_str(), micros(s.latency.max_us).c_str(),
                o.rpc ? " (round trip)" : (s.backlog ? " (includes time queued in the backlog)" : " (end to end)"));
    if (s.queue_depth)
        std::printf("  queue depth  %s msgs left at the end (the broker's count once every client had closed)\n",
                    grouped(static_cast<double>(*s.queue_depth)).c_str());
    if (s.missing) std::printf("  WARNING: %s messages were never consumed\n", grouped(static_cast<double>(s.missing)).c_str());
    if (s.broker_cpu_us_per_msg)
        std::printf("  broker CPU µs/msg: %.3f (%sbroker at %.0f%% of one core%s)\n", *s.broker_cpu_us_per_msg,
                    o.rpc ? "a call is 2 messages; " : "", s.broker_cpu_percent.value_or(0),
                    s.broker_peak_rss_kib ? (", peak RSS " + std::to_string(*s.broker_peak_rss_kib / 1024) + " MiB").c_str() : "");
    std::printf("  sluice-perf CPU: %.0f%% of one core\n", s.tool_cpu_percent);
    std::fflush(stdout);
}

std::string summary_json(const PerfOptions& o, const Summary& s) {
    char buf[2048];
    std::string broker = "null", broker_pct = "null", rss = "null", depth = "null";
    if (s.queue_depth) depth = std::to_string(*s.queue_depth);
    if (s.broker_cpu_us_per_msg) {
        char b[64];
        std::snprintf(b, sizeof b, "%.4f", *s.broker_cpu_us_per_msg);
        broker = b;
        std::snprintf(b, sizeof b, "%.1f", s.broker_cpu_percent.value_or(0));
        broker_pct = b;
    }
    if (s.broker_peak_rss_kib) rss = std::to_string(*s.broker_peak_rss_kib);
    std::snprintf(buf, sizeof buf,
                  "{\"publish_rate\":%.1f,\"consume_rate\":%.1f,"
                  "\"latency_us\":{\"p50\":%.1f,\"p95\":%.1f,\"p99\":%.1f,\"max\":%.1f},"
                  "\"sent\":%" PRIu64 ",\"received\":%" PRIu64 ",\"confirmed\":%" PRIu64 ",\"nacked\":%" PRIu64
                  ",\"returned\":%" PRIu64 ",\"rpc_calls\":%" PRIu64 ",\"rpc_calls_per_s\":%.1f,"
                  "\"duration_s\":%.3f,\"fill_rate\":%.1f,\"drain_rate\":%.1f,\"missing\":%" PRIu64 ",\"queue_depth\":%s,"
                  "\"broker_cpu_us_per_msg\":%s,\"broker_cpu_percent\":%s,\"broker_peak_rss_kib\":%s,"
                  "\"tool_cpu_percent\":%.1f,"
                  "\"config\":{\"producers\":%d,\"consumers\":%d,\"queues\":%d,\"size\":%u,\"persistent\":%s,"
                  "\"confirm\":%u,\"prefetch\":%u,\"autoack\":%s,\"exchange_type\":\"%s\",\"rpc\":%s,"
                  "\"rpc_direct\":%s,\"backlog\":%" PRIu64 ",\"threads\":%d,\"consumer_delay_s\":%.3g,\"consumer_rate\":%.1f}}",
                  s.publish_rate, s.consume_rate, s.latency.p50_us, s.latency.p95_us, s.latency.p99_us,
                  s.latency.max_us, s.sent, s.received, s.confirmed, s.nacked, s.returned, s.rpc_calls,
                  s.rpc_calls_per_s, s.duration_s, s.fill_rate, s.drain_rate, s.missing, depth.c_str(), broker.c_str(),
                  broker_pct.c_str(), rss.c_str(), s.tool_cpu_percent, o.producers, o.consumers, o.queues, o.size,
                  o.persistent ? "true" : "false", o.confirm, static_cast<unsigned>(o.prefetch),
                  o.autoack ? "true" : "false", o.exchange_type_name(), o.rpc ? "true" : "false",
                  o.rpc_direct ? "true" : "false", o.backlog, o.threads, o.consumer_delay_s, o.consumer_rate);
    return buf;
}

}  // namespace sluice::perf
