// What sluice-perf prints: the progress line each second, the final summary
// (human-readable and one JSON line), and the process figures it needs for
// them (a broker's CPU time and memory from /proc, its own CPU time).
//
// Thread-safety: stateless functions; called from the main thread only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "cli/perf/options.hpp"
#include "cli/perf/stats.hpp"

namespace sluice::perf {

// utime + stime of a process (all its threads), microseconds; nullopt if unreadable.
std::optional<uint64_t> process_cpu_us(int pid);
// VmRSS of a process in KiB; nullopt if unreadable.
std::optional<uint64_t> process_rss_kib(int pid);
// This process's user + system CPU, microseconds.
uint64_t self_cpu_us();

struct LatencySummary {
    double p50_us = 0, p95_us = 0, p99_us = 0, max_us = 0;
    static LatencySummary from(const HistogramSnapshot& h, uint64_t exact_max_ns);
};

struct Summary {
    double duration_s = 0;
    uint64_t sent = 0, confirmed = 0, nacked = 0, returned = 0, received = 0, rpc_calls = 0;
    double publish_rate = 0, consume_rate = 0, confirm_rate = 0, rpc_calls_per_s = 0;
    LatencySummary latency;
    // backlog mode
    bool backlog = false;
    double fill_s = 0, drain_s = 0, fill_rate = 0, drain_rate = 0;
    // processes
    std::optional<double> broker_cpu_us_per_msg;
    std::optional<double> broker_cpu_percent;   // of one core, over the measured span
    std::optional<uint64_t> broker_peak_rss_kib;  // sampled while running
    double tool_cpu_percent = 0;
    uint64_t missing = 0;  // messages expected but never consumed (--pmessages)
    std::optional<uint64_t> queue_depth;  // messages left in the queues at the end (passive declares)
};

// "[  3.0s] sent 123,456 msg/s | ..." for one interval.
void print_progress(const PerfOptions& o, double at_s, double interval_s, const StatsSnapshot& now,
                    const StatsSnapshot& before, const char* phase);
void print_summary(const PerfOptions& o, const Summary& s);
std::string summary_json(const PerfOptions& o, const Summary& s);

}  // namespace sluice::perf
