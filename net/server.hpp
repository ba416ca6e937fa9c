// The network front: AMQP listeners (IPv4 and IPv6; plain and TLS), the HTTP
// listeners (plain and TLS), and the event loop that runs them. Asio stays behind this header (pimpl), so
// only net/*.cpp compile it.
//
// Threads: run() drives one io_context on the calling thread; every
// connection and the broker live on it (DESIGN.md: on this 2-core machine one
// broker thread next to the load tool wins; a thread-per-core mode is future
// work).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <vector>

#include "net/cluster_status.hpp"
#include "net/metrics_text.hpp"
#include "net/tls_context.hpp"

namespace sluice::broker {
class Broker;
class Executor;
}

namespace sluice::net {

struct ServerConfig {
    std::string amqp_bind = "";  // "" = every address, IPv4 and IPv6
    uint16_t amqp_port = 5672;
    uint16_t amqps_port = 0;     // AMQP over TLS on amqp_bind; 0 = none (RabbitMQ uses 5671)
    std::string http_bind = "";
    uint16_t http_port = 15672;  // 0 = no HTTP listener
    uint16_t https_port = 0;     // HTTPS on http_bind; 0 = none (RabbitMQ uses 15671)
    // Prometheus scrapes (/metrics, /metrics/per-object) on http_bind; 0 = none.
    uint16_t prometheus_port = 15692;
    // The names the Prometheus port serves: Sluice's (sluice_*), RabbitMQ's
    // (rabbitmq_prometheus's rabbitmq_*) or both. The management port's
    // /metrics keeps Sluice's.
    PrometheusNames prometheus_names = PrometheusNames::sluice;
    TlsConfig tls;               // for both TLS listeners
    // Free space is checked here every second; below the limit the disk alarm
    // blocks publishers. Empty path = no check.
    std::string disk_path;
    uint64_t disk_free_limit = 50u << 20;
    // Resident memory is checked every second; above it the memory alarm
    // blocks publishers.
    uint64_t memory_limit = UINT64_MAX;
    // An AMQP connection that has not finished its handshake (protocol header
    // to connection.open) after this long is closed (RabbitMQ's handshake_timeout).
    uint32_t handshake_timeout_ms = 10000;
    // At most this many AMQP connections before connection.open at once
    // (TLS handshake included); a new one past it is closed. 0 = no limit.
    uint32_t max_handshaking_connections = 1000;
    // HTTP: at most this many connections (past it, the one idle longest is
    // closed to make room), and a request (headers and body) must arrive
    // within request_timeout_s of the connection becoming ready for it.
    size_t http_max_connections = 1024;
    uint32_t http_request_timeout_s = 20;
    // The management API's rates are sampled this often (ms; RabbitMQ's
    // collect_statistics_interval).
    uint32_t stats_interval_ms = 5000;
    // Once the event loop runs out of work, it keeps polling the sockets for
    // up to this long before sleeping in epoll_wait (0 = sleep at once); the
    // window adapts to the gaps seen (net/spin_window.hpp).
    uint32_t busy_poll_us = 100;
};

class Server {
public:
    Server(broker::Broker& broker, ServerConfig config);
    ~Server();

    // Binds the listeners. Returns "" or a description of what failed.
    std::string listen();
    // Runs until SIGINT/SIGTERM or stop(), which shut down gracefully: the
    // listeners close, every AMQP connection gets connection.close 320
    // CONNECTION_FORCED, and run() returns once all have closed (at most 5 s
    // later). A second SIGINT/SIGTERM exits the process at once (status 128 +
    // signal number).
    void run();
    void stop();
    // Runs work on the server's (= the broker's) thread.
    broker::Executor& executor();
    // Called on the server's thread when the process gets SIGHUP.
    void on_reload(std::function<void()> fn);
    // Cluster mode: what /api/nodes shows of every node (any thread may
    // call it; it is called on the server's).
    void set_cluster_view(std::function<std::vector<ClusterNodeStatus>()> view);
    // New alarm thresholds (server's thread); applied at the next check.
    void set_resource_limits(uint64_t memory_limit, uint64_t disk_free_limit);
    uint16_t amqp_port() const;
    uint16_t amqps_port() const;  // 0 = none
    uint16_t http_port() const;
    uint16_t https_port() const;  // 0 = none
    uint16_t prometheus_port() const;  // 0 = none

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::net
