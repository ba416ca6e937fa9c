// The HTTP listener (Boost.Beast): /metrics, the management API under /api/
// (management_api.hpp) and the dashboard (net/dashboard/), over plain HTTP,
// HTTPS or both. Private to net/.
//
// Thread-safety: runs on the server's io_context thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <functional>
#include <vector>

#include "net/cluster_status.hpp"
#include "net/metrics_text.hpp"

namespace boost::asio {
class io_context;
}
namespace sluice::broker {
class Broker;
}

namespace sluice::net {

class TlsContext;
class Shovels;

class HttpServer {
public:
    // At most max_connections at once: a new one past that closes the
    // connection that has waited longest for its next request (a slow or
    // idle client), or, if every one is busy answering, is itself refused.
    // A request (headers and body) must arrive within request_timeout.
    // The API's rates are sampled every sample_interval, from construction on.
    // `prometheus_only`: the Prometheus listener (/metrics, /metrics/per-object;
    // no API, no dashboard).
    HttpServer(boost::asio::io_context& io, broker::Broker& broker, size_t max_connections = 1024,
               std::chrono::seconds request_timeout = std::chrono::seconds(20),
               std::chrono::milliseconds sample_interval = std::chrono::milliseconds(5000),
               bool prometheus_only = false);
    ~HttpServer();
    // Binds host:port ("" = every address). Returns "" or the error.
    std::string listen(const std::string& host, uint16_t port);
    // The same for HTTPS (`tls` outlives the server).
    std::string listen_tls(const std::string& host, uint16_t port, TlsContext& tls);
    void stop();
    // The names /metrics and /metrics/per-object carry (default: Sluice's).
    void set_prometheus_naming(PrometheusNaming naming);
    // The shovels the API shows (/api/shovels).
    void set_shovels(Shovels* shovels);
    void set_cluster_view(std::function<std::vector<ClusterNodeStatus>()> view);
    uint16_t port() const;
    uint16_t tls_port() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::net
