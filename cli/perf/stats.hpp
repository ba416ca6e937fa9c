// Measurement for sluice-perf: per-thread counters and a latency histogram
// that the owning event-loop thread updates without locked instructions and
// the reporting thread reads at any time.
//
// LatencyHistogram: HDR-style log-linear buckets over nanoseconds — values
// below 128 ns exact, above that 64 sub-buckets per power of two (<= 1.6 %
// relative error), up to 2^40 ns (~18 min). Counts only grow; the reporter
// takes snapshots and subtracts them for per-interval percentiles.
//
// Thread-safety: one writer (the thread that owns the ThreadStats), any
// number of readers; every field is a relaxed atomic, written by load+store
// (single writer), so a hot-path increment is a plain add, never a lock.
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <vector>

namespace sluice::perf {

// A single-writer counter: relaxed load + store, no read-modify-write.
class Counter {
public:
    void add(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
    void set(uint64_t n) { v_.store(n, std::memory_order_relaxed); }
    void raise_to(uint64_t n) {
        if (n > v_.load(std::memory_order_relaxed)) v_.store(n, std::memory_order_relaxed);
    }
    uint64_t get() const { return v_.load(std::memory_order_relaxed); }

private:
    std::atomic<uint64_t> v_{0};
};

inline constexpr int kSubBucketBits = 6;                       // 64 sub-buckets per octave
inline constexpr uint64_t kHistogramMaxNs = (uint64_t{1} << 40) - 1;
inline constexpr size_t kHistogramBuckets = (40 - kSubBucketBits) * 64 + 64;  // 2240

inline size_t histogram_index(uint64_t ns) {
    if (ns > kHistogramMaxNs) ns = kHistogramMaxNs;
    if (ns < 128) return static_cast<size_t>(ns);
    const int msb = 63 - std::countl_zero(ns);
    const int shift = msb - kSubBucketBits;
    return static_cast<size_t>((shift + 1) * 64) + static_cast<size_t>((ns >> shift) - 64);
}

// The highest value that falls in bucket `index` (reports err on the high side).
inline uint64_t histogram_value(size_t index) {
    if (index < 128) return index;
    const int shift = static_cast<int>(index / 64) - 1;
    const uint64_t sub = index % 64 + 64;
    return ((sub + 1) << shift) - 1;
}

// A plain (non-atomic) copy of a histogram, for merging and percentiles.
struct HistogramSnapshot {
    std::vector<uint64_t> counts = std::vector<uint64_t>(kHistogramBuckets, 0);
    uint64_t total = 0;

    void add(const HistogramSnapshot& o) {
        for (size_t i = 0; i < kHistogramBuckets; ++i) counts[i] += o.counts[i];
        total += o.total;
    }
    // this - earlier (both cumulative snapshots of the same histograms)
    HistogramSnapshot minus(const HistogramSnapshot& earlier) const {
        HistogramSnapshot d;
        for (size_t i = 0; i < kHistogramBuckets; ++i) d.counts[i] = counts[i] - earlier.counts[i];
        d.total = total - earlier.total;
        return d;
    }
    // q in [0, 1]; 0 when empty. Nanoseconds.
    uint64_t percentile(double q) const {
        if (total == 0) return 0;
        uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(total) + 0.5);
        if (rank < 1) rank = 1;
        if (rank > total) rank = total;
        uint64_t seen = 0;
        for (size_t i = 0; i < kHistogramBuckets; ++i) {
            seen += counts[i];
            if (seen >= rank) return histogram_value(i);
        }
        return histogram_value(kHistogramBuckets - 1);
    }
    uint64_t max() const {
        for (size_t i = kHistogramBuckets; i-- > 0;)
            if (counts[i]) return histogram_value(i);
        return 0;
    }
};

class LatencyHistogram {
public:
    void record(uint64_t ns) {
        auto& c = counts_[histogram_index(ns)];
        c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        if (ns > max_.load(std::memory_order_relaxed)) max_.store(ns, std::memory_order_relaxed);
    }
    void snapshot_into(HistogramSnapshot& out) const {
        for (size_t i = 0; i < kHistogramBuckets; ++i) {
            uint64_t n = counts_[i].load(std::memory_order_relaxed);
            out.counts[i] += n;
            out.total += n;
        }
    }
    uint64_t exact_max() const { return max_.load(std::memory_order_relaxed); }

private:
    std::array<std::atomic<uint64_t>, kHistogramBuckets> counts_{};
    std::atomic<uint64_t> max_{0};
};

// Everything one event-loop thread counts. Aligned so two threads' stats
// never share a cache line.
struct alignas(64) ThreadStats {
    Counter sent;          // messages handed to the socket (RPC: requests)
    Counter confirmed;     // publisher confirms (basic.ack from the broker)
    Counter nacked;        // basic.nack from the broker
    Counter returned;      // basic.return
    Counter received;      // deliveries to consumers (RPC clients: replies)
    Counter rpc_calls;     // completed request/reply round trips
    Counter rpc_served;    // requests answered by RPC servers
    Counter last_receive_ns;  // steady ns of the latest delivery
    LatencyHistogram latency;  // end-to-end (RPC: round trip)
};

// A point-in-time sum over all threads.
struct StatsSnapshot {
    uint64_t sent = 0, confirmed = 0, nacked = 0, returned = 0, received = 0;
    uint64_t rpc_calls = 0, rpc_served = 0, last_receive_ns = 0, max_latency_ns = 0;
    HistogramSnapshot latency;
};

template <typename Range>
StatsSnapshot snapshot_stats(const Range& stats) {
    StatsSnapshot s;
    for (const auto& p : stats) {
        const ThreadStats& t = *p;
        s.sent += t.sent.get();
        s.confirmed += t.confirmed.get();
        s.nacked += t.nacked.get();
        s.returned += t.returned.get();
        s.received += t.received.get();
        s.rpc_calls += t.rpc_calls.get();
        s.rpc_served += t.rpc_served.get();
        if (t.last_receive_ns.get() > s.last_receive_ns) s.last_receive_ns = t.last_receive_ns.get();
        if (t.latency.exact_max() > s.max_latency_ns) s.max_latency_ns = t.latency.exact_max();
        t.latency.snapshot_into(s.latency);
    }
    return s;
}

}  // namespace sluice::perf
