// sluiced: the Sluice broker server.
//
//   sluiced [--amqp-port N] [--http-port N] [--data-dir DIR] [--config FILE] ...
//
// Every option can also be set in the --config file, one `key = value` per
// line with the same names (amqp-port = 5672).
#include <sys/resource.h>

#include <boost/program_options.hpp>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>

#include "broker/broker.hpp"
#include "net/cluster.hpp"
#include "net/management_api.hpp"
#include "net/resource_monitor.hpp"
#include "net/server.hpp"
#include "storage/store.hpp"

namespace po = boost::program_options;

namespace {

// Raise the open-file soft limit to the hard limit: every connection is a
// file descriptor.
rlim_t raise_fd_limit() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

// "1073741824", "512MiB", "2GB", "100kB": bytes (RabbitMQ's units: kB/MB/GB
// are powers of 1000, KiB/MiB/GiB of 1024). nullopt if malformed.
std::optional<uint64_t> parse_bytes(const std::string& text) {
    size_t used = 0;
    unsigned long long n = 0;
    try {
        n = std::stoull(text, &used);
    } catch (const std::exception&) {
        return std::nullopt;
    }
    std::string unit = text.substr(used);
    static const std::pair<const char*, uint64_t> kUnits[] = {
        {"", 1},          {"B", 1},          {"k", 1000},       {"kB", 1000},    {"KB", 1000},
        {"KiB", 1u << 10}, {"M", 1000000},   {"MB", 1000000},   {"MiB", 1u << 20}, {"G", 1000000000},
        {"GB", 1000000000}, {"GiB", 1u << 30}};
    for (auto [name, factor] : kUnits)
        if (unit == name) return n * factor;
    return std::nullopt;
}

// The memory alarm's threshold from the two watermark options: the absolute
// one wins when given; otherwise a fraction of total memory.
std::optional<uint64_t> memory_limit(const po::variables_map& vm, std::string& error) {
    if (vm.count("vm-memory-high-watermark-absolute") &&
        !vm["vm-memory-high-watermark-absolute"].as<std::string>().empty()) {  // empty: unset
        auto n = parse_bytes(vm["vm-memory-high-watermark-absolute"].as<std::string>());
        if (!n) error = "--vm-memory-high-watermark-absolute: expected bytes, e.g. 1073741824 or 1GiB";
        return n;
    }
    const double fraction = vm["vm-memory-high-watermark"].as<double>();
    if (!(fraction >= 0)) {
        error = "--vm-memory-high-watermark must be a fraction of memory, e.g. 0.4";
        return std::nullopt;
    }
    return static_cast<uint64_t>(fraction * double(sluice::net::total_memory_bytes()));
}

// A leader that lost its lease starts again as a follower: the same
// program with the same arguments (its data dir resyncs from the new
// leader). Every descriptor but stdio closes on the exec: listeners, the
// store's lock.
// SIGINT/SIGTERM while following (the server, which handles them later,
// is not running yet): stop following and exit cleanly.
sluice::net::ClusterNode* g_following = nullptr;
extern "C" void stop_following(int) {
    if (g_following) g_following->request_stop();
}

[[noreturn]] void restart_as_follower(char** argv) {
    if (DIR* d = opendir("/proc/self/fd")) {
        const int own = dirfd(d);
        while (dirent* e = readdir(d)) {
            const int fd = atoi(e->d_name);
            if (fd > 2 && fd != own) fcntl(fd, F_SETFD, FD_CLOEXEC);
        }
        closedir(d);
    }
    execv("/proc/self/exe", argv);
    std::cerr << "sluiced: cluster: cannot restart (" << std::strerror(errno) << "); exiting" << std::endl;
    std::_Exit(75);
}

std::vector<std::string> split_endpoints(const std::string& list) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= list.size()) {
        size_t comma = list.find(',', start);
        if (comma == std::string::npos) comma = list.size();
        std::string e = list.substr(start, comma - start);
        for (const char* scheme : {"http://", "https://"})
            if (e.rfind(scheme, 0) == 0) e = e.substr(std::strlen(scheme));
        while (!e.empty() && e.back() == '/') e.pop_back();
        if (!e.empty()) out.push_back(e);
        start = comma + 1;
    }
    return out;
}

// Past 10 ms a busy-poll saves nothing (a wake-up costs tens of µs) and
// burns a core after every event.
constexpr uint32_t kMaxBusyPollUs = 10'000;

}  // namespace

int main(int argc, char** argv) {
    sluice::broker::BrokerConfig bc;
    sluice::net::ServerConfig sc;
    std::string data_dir, config_file, durability = "sync", definitions_file, prometheus_names = "sluice";
    unsigned sync_interval_ms = 200;
    sluice::storage::StoreOptions so;
    sluice::net::ClusterConfig cc;
    std::string cluster_etcd;
    po::options_description opts("sluiced options");
    opts.add_options()
        ("help,h", "show this help")
        ("config", po::value(&config_file), "read options from this file (key = value lines)")
        ("amqp-port", po::value(&sc.amqp_port)->default_value(5672), "AMQP port")
        ("amqp-bind", po::value(&sc.amqp_bind)->default_value(""), "AMQP address (default: all, IPv4 and IPv6)")
        ("http-port", po::value(&sc.http_port)->default_value(15672), "HTTP port (metrics, management)")
        ("http-bind", po::value(&sc.http_bind)->default_value(""), "HTTP address (default: all)")
        ("prometheus-port", po::value(&sc.prometheus_port)->default_value(sc.prometheus_port),
         "Prometheus port, on http-bind: /metrics and /metrics/per-object (RabbitMQ's 15692; 0 = none)")
        ("prometheus-names", po::value(&prometheus_names)->default_value(prometheus_names),
         "names on the Prometheus port: sluice, rabbitmq (rabbitmq_prometheus's, for RabbitMQ's Grafana "
         "dashboards; docs/metrics.md) or both")
        ("amqps-port", po::value(&sc.amqps_port), "AMQP over TLS port, on amqp-bind (RabbitMQ: 5671; default: none)")
        ("https-port", po::value(&sc.https_port), "HTTPS port, on http-bind (RabbitMQ: 15671; default: none)")
        ("tls-cert", po::value(&sc.tls.cert_file), "PEM file: the server's TLS certificate (and chain)")
        ("tls-key", po::value(&sc.tls.key_file), "PEM file: its private key")
        ("tls-ca", po::value(&sc.tls.ca_file), "PEM file: the CAs client certificates must chain to")
        ("tls-verify-peer", po::value(&sc.tls.verify_peer)->default_value(false),
         "ask clients for a certificate and verify it (needs tls-ca); a verified one allows EXTERNAL login")
        ("tls-fail-if-no-peer-cert", po::value(&sc.tls.fail_if_no_peer_cert)->default_value(false),
         "with tls-verify-peer: refuse clients that send no certificate")
        ("tls-cert-login-from", po::value(&sc.tls.login_from)->default_value(sc.tls.login_from),
         "the user name EXTERNAL takes from a client certificate: distinguished_name (as RabbitMQ) or common_name")
        ("tls-ciphers", po::value(&sc.tls.ciphers),
         "OpenSSL cipher list for TLS 1.2, e.g. ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384 "
         "(default: OpenSSL's)")
        ("tls-ciphersuites", po::value(&sc.tls.ciphersuites),
         "TLS 1.3 cipher suites, e.g. TLS_AES_256_GCM_SHA384 (default: OpenSSL's)")
        ("data-dir", po::value(&data_dir)->default_value("./sluice-data"), "where durable data lives")
        ("durability", po::value(&durability)->default_value("sync"),
         "sync: a confirm means the message is synced to disk; async: the WAL is synced every "
         "--sync-interval-ms, a power loss may drop that much confirmed data")
        ("disk-free-limit", po::value(&sc.disk_free_limit)->default_value(sc.disk_free_limit),
         "below this many free bytes on the data dir's volume, publishers are blocked (RabbitMQ's default: 50 MB)")
        ("vm-memory-high-watermark", po::value<double>()->default_value(0.4, "0.4"),
         "above this fraction of memory (RAM, or the cgroup's limit) resident, publishers are blocked "
         "(RabbitMQ's vm_memory_high_watermark)")
        ("vm-memory-high-watermark-absolute", po::value<std::string>(),
         "the same as bytes (1073741824, 1GiB, 800MB); wins over the fraction")
        ("max-connections", po::value(&bc.max_connections)->default_value(bc.max_connections),
         "most open AMQP connections; past it connection.open is refused with 530 (0 = no limit)")
        ("dedup-memory-keys", po::value(&bc.dedup_memory_keys)->default_value(bc.dedup_memory_keys),
         "keys a deduplication window keeps in memory (the most recent); a durable window looks older ones "
         "up on disk")
        ("consumer-timeout", po::value(&bc.consumer_timeout_ms)->default_value(bc.consumer_timeout_ms),
         "ms a delivery may stay unacknowledged before its channel is closed with 406 (0 = no limit)")
        ("handshake-timeout", po::value(&sc.handshake_timeout_ms)->default_value(sc.handshake_timeout_ms),
         "ms a new AMQP connection has to reach connection.open")
        ("max-handshaking-connections",
         po::value(&sc.max_handshaking_connections)->default_value(sc.max_handshaking_connections),
         "most AMQP connections still in their handshake (before connection.open) at once; a new one past it "
         "is closed at once, so half-open sockets cannot take every file descriptor (0 = no limit)")
        ("http-max-connections", po::value(&sc.http_max_connections)->default_value(sc.http_max_connections),
         "most HTTP connections; a new one past that closes the one idle longest")
        ("http-request-timeout", po::value(&sc.http_request_timeout_s)->default_value(sc.http_request_timeout_s),
         "seconds an HTTP request (headers and body) has to arrive")
        ("collect-statistics-interval", po::value(&sc.stats_interval_ms)->default_value(sc.stats_interval_ms),
         "ms between samples of the counters the management API's rates come from (RabbitMQ's "
         "collect_statistics_interval; at least 100)")
        ("busy-poll-us", po::value(&sc.busy_poll_us)->default_value(sc.busy_poll_us),
         "after the last event, poll the sockets up to this long before sleeping (adaptive; a reply "
         "that comes within it is read without a wake-up: lower request/reply latency for some CPU; "
         "0 = sleep at once)")
        ("sync-interval-ms", po::value(&sync_interval_ms)->default_value(200), "WAL sync period in async mode")
        ("store-write-buffer-bytes", po::value(&so.write_buffer_bytes)->default_value(so.write_buffer_bytes),
         "bytes of writes the store gathers in memory (a RocksDB memtable) before writing a table file; "
         "at most twice this is in memory: less memory, more table files to merge")
        ("store-block-cache-bytes", po::value(&so.block_cache_bytes)->default_value(so.block_cache_bytes),
         "the store's cache of table blocks (indexes and metadata; paged message bodies bypass it)")
        ("heartbeat", po::value(&bc.heartbeat)->default_value(bc.heartbeat), "heartbeat interval offered, seconds (0 = off)")
        ("frame-max", po::value(&bc.frame_max)->default_value(bc.frame_max), "largest frame offered, bytes")
        ("channel-max", po::value(&bc.channel_max)->default_value(bc.channel_max), "most channels per connection")
        ("queue-memory-messages", po::value(&bc.queue_memory_messages)->default_value(bc.queue_memory_messages),
         "messages a queue keeps in memory; past that (or queue-memory-bytes) new ones wait in the store")
        ("queue-memory-bytes", po::value(&bc.queue_memory_bytes)->default_value(bc.queue_memory_bytes),
         "message bytes a queue keeps in memory")
        ("message-memory-limit", po::value(&bc.message_memory_limit)->default_value(bc.message_memory_limit),
         "message bytes all queues together keep in memory; past it every queue pages new messages")
        ("max-message-size", po::value(&bc.max_message_size)->default_value(bc.max_message_size), "largest message body, bytes")
        ("default-user", po::value(&bc.default_user)->default_value(bc.default_user), "user created at first start")
        ("default-password", po::value(&bc.default_password)->default_value(bc.default_password), "its password")
        ("default-user-loopback-only", po::value(&bc.default_user_loopback_only)->default_value(true),
         "the default user may log in only from loopback (as RabbitMQ's guest)")
        ("cluster-etcd", po::value(&cluster_etcd),
         "cluster mode (docs/cluster.md): etcd's client endpoints, host:port[,host:port...]")
        ("cluster-name", po::value(&cc.name)->default_value(cc.name), "the cluster's name (its etcd key prefix)")
        ("node-id", po::value(&cc.node_id), "this node's id in the cluster (unique)")
        ("advertise-host", po::value(&cc.advertise_host)->default_value(cc.advertise_host),
         "the address the other nodes (and forwarded clients) reach this node at")
        ("replication-port", po::value(&cc.replication_port)->default_value(cc.replication_port),
         "the port the leader ships its log on, on amqp-bind")
        ("cluster-lease-ttl", po::value(&cc.lease_ttl_s)->default_value(cc.lease_ttl_s),
         "seconds the leader's etcd lease lasts unrenewed: the longest a dead leader is waited for")
        ("isr-max-lag-ms", po::value(&cc.isr_max_lag_ms)->default_value(cc.isr_max_lag_ms),
         "an in-sync replica whose oldest unacknowledged batch is older than this leaves the ISR")
        ("isr-max-lag-bytes", po::value(&cc.isr_max_lag_bytes)->default_value(cc.isr_max_lag_bytes),
         "or which is this many bytes behind")
        ("load-definitions", po::value(&definitions_file),
         "import this definitions file (RabbitMQ's JSON: users, vhosts, permissions, limits, exchanges, queues, "
         "bindings) at every start, as RabbitMQ's load_definitions");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, opts), vm);
        if (vm.count("config")) {
            std::ifstream in(vm["config"].as<std::string>());
            if (!in) {
                std::cerr << "sluiced: cannot read config file " << vm["config"].as<std::string>() << "\n";
                return 2;
            }
            po::store(po::parse_config_file(in, opts), vm);  // the command line wins
        }
        po::notify(vm);
    } catch (const std::exception& e) {
        std::cerr << "sluiced: " << e.what() << "\n" << opts << "\n";
        return 2;
    }
    if (vm.count("help")) {
        std::cout << opts << "\n";
        return 0;
    }
    std::string limit_error;
    auto mem_limit = memory_limit(vm, limit_error);
    if (!mem_limit) {
        std::cerr << "sluiced: " << limit_error << "\n";
        return 2;
    }
    sc.memory_limit = *mem_limit;
    if (sc.busy_poll_us > kMaxBusyPollUs) {
        std::cerr << "sluiced: busy-poll-us must be 0.." << kMaxBusyPollUs << "\n";
        return 2;
    }
    if (bc.frame_max < 4096) {
        std::cerr << "sluiced: frame-max must be at least 4096\n";
        return 2;
    }
    std::error_code ec;
    // RocksDB's own folder too: RocksDB logs an error when it must create it.
    std::filesystem::create_directories(std::filesystem::path(data_dir) / "rocksdb", ec);
    if (ec) {
        std::cerr << "sluiced: cannot create data dir " << data_dir << ": " << ec.message() << "\n";
        return 1;
    }
    if (auto names = sluice::net::parse_prometheus_names(prometheus_names)) {
        sc.prometheus_names = *names;
    } else {
        std::cerr << "sluiced: --prometheus-names must be sluice, rabbitmq or both\n";
        return 2;
    }
    if (durability != "sync" && durability != "async") {
        std::cerr << "sluiced: --durability must be sync or async\n";
        return 2;
    }
    rlim_t fds = raise_fd_limit();

    so.path = (std::filesystem::path(data_dir) / "rocksdb").string();
    so.durability = durability == "sync" ? sluice::storage::Durability::sync : sluice::storage::Durability::async;
    so.sync_interval = std::chrono::milliseconds(sync_interval_ms);
    // Replicas apply the leader's batches: in cluster mode the batches carry
    // chunks' bytes themselves, not pointers into this node's segment files.
    so.segments = cluster_etcd.empty();
    std::string err;
    bool io_error = false;
    auto store = sluice::storage::Store::open(so, err, &io_error);
    if (!store) {
        // A full or failing disk (often a leader that stepped down after a
        // failed write and restarted as a follower): EX_TEMPFAIL, as for a
        // store lost while serving, so that a supervisor tries again.
        if (!io_error) {
            std::cerr << "sluiced: " << err << "\n";
            return 1;
        }
        std::cerr << "sluiced: fatal: " << err << "; exiting (restart once the disk has space or is repaired)"
                  << std::endl;
        return 75;
    }
    // Cluster mode: follow the leader until this node is elected (then it
    // recovers from its replica and serves, as a single node would).
    std::unique_ptr<sluice::net::ClusterNode> cluster;
    uint64_t epoch = 0;
    if (!cluster_etcd.empty()) {
        cc.etcd_endpoints = split_endpoints(cluster_etcd);
        if (cc.node_id.empty() || cc.etcd_endpoints.empty()) {
            std::cerr << "sluiced: cluster mode needs --node-id and --cluster-etcd host:port\n";
            return 2;
        }
        cc.amqp_port = sc.amqp_port;
        cc.http_port = sc.http_port;
        cc.bind_host = sc.amqp_bind;
        cc.data_dir = data_dir;
        cluster = std::make_unique<sluice::net::ClusterNode>(cc);
        g_following = cluster.get();
        std::signal(SIGTERM, stop_following);
        std::signal(SIGINT, stop_following);
        err = cluster->join(*store);
        if (err == "stopped") return 0;  // SIGTERM while etcd was unreachable
        if (!err.empty()) {
            std::cerr << "sluiced: cluster: " << err << std::endl;
            return 1;
        }
        if (sluice::storage::has_segment_files(so.path)) {
            std::cerr << "sluiced: cluster mode: " << sluice::storage::segments_dir(so.path)
                      << " holds messages a single node stored in segment files, which replicas would not get; "
                         "start this node without --cluster-etcd and drain its queues (or start the cluster "
                         "with an empty data dir and move the messages with a shovel), then join "
                         "(docs/cluster.md)\n";
            cluster->stop();
            return 1;
        }
        epoch = cluster->run_follower(store, so);
        std::signal(SIGTERM, SIG_DFL);
        std::signal(SIGINT, SIG_DFL);
        g_following = nullptr;
        if (!epoch) {
            cluster->stop();
            std::cerr << "sluiced: stopped" << std::endl;
            return 0;
        }
    }
    sluice::broker::Broker broker(bc);
    sc.disk_path = data_dir;
    sluice::net::Server server(broker, sc);
    std::atomic<bool> leadership_lost{false};
    if (cluster) {
        // Replication starts before the epoch's first write, so every batch
        // of the epoch is in the ring for the followers to stream.
        err = cluster->lead(*store, epoch, [&](const std::string&) {
            leadership_lost = true;
            server.stop();  // every client gets 320 CONNECTION_FORCED
        });
        if (err.empty()) err = store->lead(epoch);
        if (!err.empty()) {
            std::cerr << "sluiced: cluster: cannot lead: " << err << std::endl;
            restart_as_follower(argv);
        }
        server.set_cluster_view([c = cluster.get()] { return c->nodes(); });
    }
    broker.attach_storage(store.get(), &server.executor());
    // After a failed write the store reopens its database; if that fails too,
    // nothing can be stored or read back. Serving on from memory would answer
    // gets from empty reads and acknowledge what cannot be kept: stop at once
    // (no graceful stop: it would write), and let the next start recover
    // what the disk holds. EX_TEMPFAIL: a supervisor restarts it.
    broker.durability().set_on_store_lost([](const std::string& why) {
        std::cerr << "sluiced: fatal: " << why << "; stopping without another write (restart to recover)" << std::endl;
        std::_Exit(75);
    });
    auto rec = broker.recover();
    std::cerr << "sluiced: recovered " << rec.exchanges << " exchanges, " << rec.queues << " queues, " << rec.bindings
              << " bindings, " << rec.messages << " messages in " << rec.seconds << " s" << std::endl;
    if (!definitions_file.empty()) {
        std::ifstream in(definitions_file, std::ios::binary);
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (!in.is_open() || in.bad()) {
            std::cerr << "sluiced: cannot read definitions file " << definitions_file << "\n";
            return 1;
        }
        std::vector<std::string> warnings;
        std::string problem = sluice::net::import_definitions(broker, text, warnings);
        if (!problem.empty()) {
            std::cerr << "sluiced: definitions file " << definitions_file << ": " << problem << "\n";
            return 1;
        }
        for (const auto& w : warnings) std::cerr << "sluiced: definitions file: " << w << "\n";
        std::cerr << "sluiced: imported definitions from " << definitions_file << std::endl;
    }
    // SIGHUP: read the config file again and apply what can change while
    // running (alarm thresholds, connection limit, consumer timeout).
    server.on_reload([&] {
        if (config_file.empty()) {
            std::cerr << "sluiced: SIGHUP: no --config file to reload" << std::endl;
            return;
        }
        po::variables_map fresh;
        std::string error;
        try {
            po::store(po::parse_command_line(argc, argv, opts), fresh);
            std::ifstream in(config_file);
            if (!in) throw std::runtime_error("cannot read " + config_file);
            po::store(po::parse_config_file(in, opts), fresh);
        } catch (const std::exception& e) {
            std::cerr << "sluiced: SIGHUP: config not reloaded: " << e.what() << std::endl;
            return;
        }
        auto limit = memory_limit(fresh, error);
        if (!limit) {
            std::cerr << "sluiced: SIGHUP: config not reloaded: " << error << std::endl;
            return;
        }
        const uint64_t disk_free_limit = fresh["disk-free-limit"].as<uint64_t>();
        server.set_resource_limits(*limit, disk_free_limit);
        broker.set_max_connections(fresh["max-connections"].as<uint32_t>());
        broker.set_consumer_timeout_ms(fresh["consumer-timeout"].as<uint32_t>());
        std::cerr << "sluiced: reloaded " << config_file << ": memory high watermark " << *limit
                  << " bytes, disk free limit " << disk_free_limit << " bytes, max connections "
                  << broker.config().max_connections << ", consumer timeout " << broker.config().consumer_timeout_ms
                  << " ms" << std::endl;
    });
    err = server.listen();
    if (!err.empty()) {
        std::cerr << "sluiced: " << err << "\n";
        return 1;
    }
    std::cerr << "sluiced: AMQP on port " << server.amqp_port();
    if (server.amqps_port()) std::cerr << ", AMQPS on port " << server.amqps_port();
    std::cerr << ", HTTP on port " << server.http_port();
    if (server.https_port()) std::cerr << ", HTTPS on port " << server.https_port();
    if (server.prometheus_port()) std::cerr << ", Prometheus on port " << server.prometheus_port();
    std::cerr
              << ", data in " << data_dir << ", open-file limit " << fds << " (about " << (fds > 64 ? fds - 64 : 0)
              << " connections), memory high watermark " << sc.memory_limit << " bytes" << std::endl;
    server.run();
    if (leadership_lost) restart_as_follower(argv);  // nothing more is written: the new leader decides
    broker.durability().shutdown();  // write what was gathering (shipped to the followers too); nothing after
    if (cluster) cluster->stop();    // then hand leadership over
    std::cerr << "sluiced: stopped" << std::endl;
    return 0;
}
