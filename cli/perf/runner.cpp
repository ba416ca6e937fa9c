#include "cli/perf/runner.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <thread>

#include "cli/perf/message_stamp.hpp"
#include "cli/perf/report.hpp"
#include "cli/perf/roles.hpp"

namespace sluice::perf {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kConnectDeadline = std::chrono::seconds(30);
constexpr auto kTick = std::chrono::milliseconds(100);
constexpr double kStallSeconds = 3.0;  // --pmessages: give up on missing messages after this long

struct Worker {
    asio::io_context ioc{1};
    asio::executor_work_guard<asio::io_context::executor_type> guard{ioc.get_executor()};
    std::unique_ptr<ThreadStats> stats = std::make_unique<ThreadStats>();
    std::thread thread;
};

class Runner {
public:
    explicit Runner(const PerfOptions& o) : o_(o) {}
    int run();

private:
    bool resolve();
    bool topology(TopologySetup::Mode mode, uint64_t* depth = nullptr);
    template <typename T, typename... Args>
    T* add_client(Args&&... args);
    void add_producers(uint64_t total_or_zero);
    void add_consumers();
    bool connect_pending();
    void start(const std::vector<AmqpClient*>& clients);
    StatsSnapshot snapshot() const;
    void sample_broker_rss();
    void progress(double at_s, const char* phase);
    void shutdown_all();
    int fail_exit();

    const PerfOptions& o_;
    asio::ip::tcp::endpoint endpoint_;
    RunControl ctl_;
    std::vector<std::unique_ptr<Worker>> workers_;
    std::vector<std::unique_ptr<AmqpClient>> clients_;
    std::vector<AmqpClient*> producers_, consumers_, pending_;
    size_t next_worker_ = 0;

    Clock::time_point t0_;
    StatsSnapshot last_;
    Clock::time_point last_at_;
    std::optional<uint64_t> peak_rss_;
};

bool Runner::resolve() {
    try {
        asio::io_context ioc;
        asio::ip::tcp::resolver resolver(ioc);
        auto results = resolver.resolve(o_.broker.host, std::to_string(o_.broker.port));
        if (results.empty()) throw std::runtime_error("no address");
        endpoint_ = results.begin()->endpoint();
        return true;
    } catch (const std::exception& e) {
        std::cerr << "sluice-perf: cannot resolve " << o_.broker.host << ": " << e.what() << "\n";
        return false;
    }
}

// Declares (or removes) the topology on a connection of its own, on this thread.
bool Runner::topology(TopologySetup::Mode mode, uint64_t* depth) {
    asio::io_context ioc{1};
    ThreadStats stats;
    RunControl ctl;
    TopologySetup setup(ioc, o_.broker, endpoint_, stats, ctl, o_, mode);
    setup.connect();
    ioc.run_for(std::chrono::seconds(30));
    if (ctl.failed || !setup.done()) {
        const char* what = mode == TopologySetup::Mode::declare ? "setup"
                         : mode == TopologySetup::Mode::remove ? "cleanup" : "queue depth";
        std::cerr << "sluice-perf: " << what << " failed: " << (ctl.failed ? ctl.first_error() : "timed out") << "\n";
        return false;
    }
    if (depth) *depth = setup.queue_depth();
    return true;
}

template <typename T, typename... Args>
T* Runner::add_client(Args&&... args) {
    Worker& w = *workers_[next_worker_++ % workers_.size()];
    auto c = std::make_unique<T>(w.ioc, o_.broker, endpoint_, *w.stats, ctl_, std::forward<Args>(args)...);
    T* raw = c.get();
    clients_.push_back(std::move(c));
    pending_.push_back(raw);
    return raw;
}

void Runner::add_producers(uint64_t backlog_total) {
    const auto queues = o_.queue_names();
    for (int i = 0; i < o_.producers; ++i) {
        const std::string& q = queues[static_cast<size_t>(i) % queues.size()];
        uint64_t limit = o_.pmessages;
        if (backlog_total) {
            const uint64_t per = backlog_total / static_cast<uint64_t>(o_.producers);
            limit = per + (static_cast<uint64_t>(i) < backlog_total % static_cast<uint64_t>(o_.producers) ? 1 : 0);
            if (limit == 0) continue;
        }
        if (o_.rpc) {
            producers_.push_back(add_client<RpcClient>(o_, static_cast<uint32_t>(i + 1), q, limit));
            continue;
        }
        std::string key;
        if (o_.exchange.empty()) key = q;
        else if (o_.exchange_type == ExchangeType::fanout) key = o_.routing_key.value_or("");
        else key = o_.routing_key.value_or(q);
        producers_.push_back(add_client<Producer>(o_, static_cast<uint32_t>(i + 1), o_.exchange, key, limit));
    }
}

// Consumer j takes every queue q with q % consumers == j (so every queue is
// consumed); with more consumers than queues, queues get several consumers.
void Runner::add_consumers() {
    const auto queues = o_.queue_names();
    const size_t n = static_cast<size_t>(o_.consumers);
    for (size_t j = 0; j < n; ++j) {
        std::vector<std::string> mine;
        if (o_.stream) mine = queues;  // a stream is read whole by every reader
        else
            for (size_t q = j % queues.size(); q < queues.size(); q += n) mine.push_back(queues[q]);
        if (mine.empty()) mine.push_back(queues[j % queues.size()]);
        const std::string name = (o_.rpc ? "rpc-server-" : "consumer-") + std::to_string(j + 1);
        if (o_.rpc) consumers_.push_back(add_client<RpcServer>(o_, name, std::move(mine)));
        else consumers_.push_back(add_client<Consumer>(o_, name, std::move(mine)));
    }
}

// Connects every client added since the last call; waits until all are set up.
bool Runner::connect_pending() {
    const int target = ctl_.ready.load() + static_cast<int>(pending_.size());
    for (AmqpClient* c : pending_) asio::post(c->ioc_executor(), [c] { c->connect(); });
    pending_.clear();
    const auto deadline = Clock::now() + kConnectDeadline;
    while (ctl_.ready.load() < target) {
        if (ctl_.failed) return false;
        if (Clock::now() > deadline) {
            ctl_.report_error("connections not ready within 30 s (" + std::to_string(target - ctl_.ready.load()) +
                              " missing)");
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
}

void Runner::start(const std::vector<AmqpClient*>& clients) {
    for (AmqpClient* c : clients) asio::post(c->ioc_executor(), [c] { c->start(); });
}

StatsSnapshot Runner::snapshot() const {
    std::vector<const ThreadStats*> all;
    for (const auto& w : workers_) all.push_back(w->stats.get());
    return snapshot_stats(all);
}

void Runner::sample_broker_rss() {
    if (!o_.broker_pid) return;
    if (auto rss = process_rss_kib(o_.broker_pid); rss && (!peak_rss_ || *rss > *peak_rss_)) peak_rss_ = rss;
}

void Runner::progress(double at_s, const char* phase) {
    const auto now = Clock::now();
    StatsSnapshot s = snapshot();
    if (!o_.quiet)
        print_progress(o_, at_s, std::chrono::duration<double>(now - last_at_).count(), s, last_, phase);
    last_ = std::move(s);
    last_at_ = now;
}

void Runner::shutdown_all() {
    ctl_.stop = true;
    for (auto& c : clients_) {
        AmqpClient* raw = c.get();
        asio::post(raw->ioc_executor(), [raw] { raw->shutdown(); });
    }
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    while (ctl_.closed.load() < static_cast<int>(clients_.size()) && Clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    for (auto& w : workers_) {
        w->guard.reset();
        if (ctl_.closed.load() < static_cast<int>(clients_.size())) w->ioc.stop();
    }
    for (auto& w : workers_)
        if (w->thread.joinable()) w->thread.join();
    clients_.clear();  // sockets go before their io_contexts
}

int Runner::fail_exit() {
    const std::string err = ctl_.first_error();
    shutdown_all();
    std::cerr << "sluice-perf: " << (err.empty() ? "the run failed" : err) << "\n";
    return 1;
}

int Runner::run() {
    if (!resolve()) return 1;
    if (!topology(TopologySetup::Mode::declare)) return 1;

    for (int i = 0; i < o_.threads; ++i) {
        auto w = std::make_unique<Worker>();
        Worker* raw = w.get();
        w->thread = std::thread([raw] { raw->ioc.run(); });
        workers_.push_back(std::move(w));
    }

    const bool backlog = o_.backlog > 0;
    if (!backlog) add_consumers();
    add_producers(o_.backlog);
    if (!connect_pending()) return fail_exit();

    const int n_producers = static_cast<int>(producers_.size());
    const auto broker_cpu0 = o_.broker_pid ? process_cpu_us(o_.broker_pid) : std::nullopt;
    if (o_.broker_pid && !broker_cpu0)
        std::cerr << "sluice-perf: cannot read /proc/" << o_.broker_pid << "/stat: no broker CPU figures\n";
    const uint64_t self0 = self_cpu_us();
    const StatsSnapshot begin = snapshot();
    last_ = begin;
    t0_ = last_at_ = Clock::now();
    const uint64_t t0_ns = now_ns();
    sample_broker_rss();

    // With --consumer-delay the producers get a head start and the consumers start later (below).
    bool consumers_started = o_.consumer_delay_s <= 0;
    double consumers_started_at = 0;
    if (consumers_started) start(consumers_);
    start(producers_);

    Summary sum;
    sum.backlog = backlog;
    const double limit_s = o_.time_s;
    double next_progress = 1.0;
    auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - t0_).count(); };
    uint64_t last_received = 0;
    double last_received_change = 0, producers_done_at = -1;
    bool draining = false;
    double drain_started = 0;
    const char* phase = backlog ? "fill:" : "";

    for (;;) {
        std::this_thread::sleep_until(Clock::now() + kTick);
        if (ctl_.failed) return fail_exit();
        const double at = elapsed();
        sample_broker_rss();
        if (at >= next_progress) {
            progress(at, phase);
            next_progress += 1.0;
        }
        if (limit_s > 0 && at >= limit_s) break;
        if (!consumers_started && at >= o_.consumer_delay_s) {
            consumers_started = true;
            consumers_started_at = at;
            start(consumers_);
        }
        const StatsSnapshot s = snapshot();
        if (s.received != last_received) {
            last_received = s.received;
            last_received_change = at;
        }
        if (backlog) {
            if (!draining && ctl_.finished.load() >= n_producers) {
                sum.fill_s = static_cast<double>(ctl_.last_publish_ns.load() - t0_ns) / 1e9;
                draining = true;
                phase = "drain:";
                add_consumers();
                if (!connect_pending()) return fail_exit();
                drain_started = elapsed();
                start(consumers_);
                last_received_change = drain_started;
            }
            if (draining) {
                const uint64_t expected = s.confirmed * static_cast<uint64_t>(o_.deliveries_per_message());
                if (s.received >= expected) break;
                if (at - last_received_change > kStallSeconds) {
                    sum.missing = expected - s.received;
                    break;
                }
            }
            continue;
        }
        if (o_.pmessages && ctl_.finished.load() >= n_producers) {
            if (producers_done_at < 0) producers_done_at = at;
            if (o_.rpc || consumers_.empty()) break;
            if (!consumers_started) continue;
            const uint64_t expected = s.sent * static_cast<uint64_t>(o_.deliveries_per_message());
            if (s.received >= expected) break;
            if (at - std::max({last_received_change, producers_done_at, consumers_started_at}) > kStallSeconds) {
                sum.missing = expected - s.received;
                break;
            }
        }
    }

    const double duration = elapsed();
    const uint64_t end_ns = now_ns();
    const StatsSnapshot end = snapshot();
    const uint64_t self1 = self_cpu_us();
    const auto broker_cpu1 = o_.broker_pid ? process_cpu_us(o_.broker_pid) : std::nullopt;
    sample_broker_rss();
    ctl_.stop = true;
    shutdown_all();
    // A producer between batches when the run stopped may still have written one: count what went
    // out (the broker queued it), not what had gone out at the last look.
    const uint64_t sent_total = snapshot().sent;
    if (ctl_.failed) {
        std::cerr << "sluice-perf: " << ctl_.first_error() << "\n";
        return 1;
    }
    // What the producers left behind (with every client gone, unacked messages are back in the
    // queues): a growing queue shows here, as the broker counts it.
    if (!o_.rpc) {
        uint64_t depth = 0;
        if (topology(TopologySetup::Mode::inspect, &depth)) sum.queue_depth = depth;
    }
    if (o_.cleanup && !topology(TopologySetup::Mode::remove)) return 1;

    sum.duration_s = duration;
    sum.sent = sent_total - begin.sent;
    sum.confirmed = end.confirmed - begin.confirmed;
    sum.nacked = end.nacked - begin.nacked;
    sum.returned = end.returned - begin.returned;
    sum.received = end.received - begin.received;
    sum.rpc_calls = end.rpc_calls - begin.rpc_calls;
    // with a message count, rates run to the last publish / delivery, not to the stop
    const bool counted = o_.pmessages > 0 || backlog;
    auto span = [&](uint64_t last_ns) {
        const double s = counted && last_ns > t0_ns ? static_cast<double>(last_ns - t0_ns) / 1e9 : duration;
        return s > 0 ? s : duration;
    };
    const double pub_s = span(ctl_.last_publish_ns.load());
    // consumers that started late (--consumer-delay) are rated over their own time
    const double recv_s = std::max(span(end.last_receive_ns) - consumers_started_at, 1e-9);
    sum.publish_rate = static_cast<double>(sum.sent) / pub_s;
    sum.confirm_rate = static_cast<double>(sum.confirmed) / pub_s;
    sum.consume_rate = static_cast<double>(sum.received) / recv_s;
    sum.rpc_calls_per_s = static_cast<double>(sum.rpc_calls) / recv_s;
    if (backlog) {
        sum.fill_rate = sum.fill_s > 0 ? static_cast<double>(sum.confirmed) / sum.fill_s : 0;
        const double drain_end = end.last_receive_ns > t0_ns ? static_cast<double>(end.last_receive_ns - t0_ns) / 1e9 : duration;
        sum.drain_s = drain_end - drain_started;
        sum.drain_rate = sum.drain_s > 0 ? static_cast<double>(sum.received) / sum.drain_s : 0;
        sum.consume_rate = sum.drain_rate;
        sum.publish_rate = sum.fill_rate;
    }
    sum.latency = LatencySummary::from(end.latency.minus(begin.latency), end.max_latency_ns);
    const double wall_us = static_cast<double>(end_ns - t0_ns) / 1000.0;
    sum.tool_cpu_percent = wall_us > 0 ? 100.0 * static_cast<double>(self1 - self0) / wall_us : 0;
    if (broker_cpu0 && broker_cpu1) {
        const double cpu = static_cast<double>(*broker_cpu1 - *broker_cpu0);
        // messages through the broker: RPC requests and replies are two each; otherwise
        // whichever is more of enqueued (published x queues each reaches: fanout) and delivered,
        // so that a growing fanout is counted as a keeping-up one is
        const uint64_t msgs = o_.rpc ? sum.sent + (end.rpc_served - begin.rpc_served)
                                     : std::max(sum.sent * static_cast<uint64_t>(o_.deliveries_per_message()),
                                                sum.received);
        if (msgs) sum.broker_cpu_us_per_msg = cpu / static_cast<double>(msgs);
        sum.broker_cpu_percent = wall_us > 0 ? 100.0 * cpu / wall_us : 0;
        sum.broker_peak_rss_kib = peak_rss_;
    }

    if (!o_.quiet) print_summary(o_, sum);
    if (o_.json) {
        std::printf("%s\n", summary_json(o_, sum).c_str());
        std::fflush(stdout);
    }
    return 0;
}

}  // namespace

int run_perf(const PerfOptions& o) {
    Runner r(o);
    return r.run();
}

}  // namespace sluice::perf
