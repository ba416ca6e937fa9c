// The management HTTP API under /api/ (JSON), modelled on RabbitMQ's
// management plugin: same paths, same field names where the concept is the
// same, so its users' scripts and monitoring work against Sluice.
//
// The HTTP server (http_server.cpp) parses requests and hands the ones under
// /api/ here; this class authenticates them (basic auth with broker users),
// routes them by path and answers with JSON. Handlers call the broker
// directly: they run on the broker thread. An answer may come later than the
// call (a durable declare answers once it is synced), so it goes through a
// callback that is called exactly once.
//
// Boost.JSON stays inside the .cpp files (management_api_*.cpp).
//
// Thread-safety: the broker thread only.
#pragma once

#include <chrono>
#include <functional>
#include <vector>

#include "net/cluster_status.hpp"
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::broker {
class Broker;
}

namespace sluice::net {

class Shovels;

struct HttpRequest {
    std::string method;          // "GET", "PUT", …
    std::string target;          // "/api/queues/%2F/q1?columns=name"
    std::string body;
    std::string authorization;   // the Authorization header, as sent
    std::string reason;          // X-Reason (DELETE /api/connections/…)
    bool ajax = false;           // X-Requested-With is set (the dashboard)
    std::string host;            // the Host header
    std::string origin;          // the Origin header ("" = none sent)
    std::string fetch_site;      // Sec-Fetch-Site ("" = none sent)
    bool from_loopback = false;  // the peer's address is a loopback one
};

struct HttpResponse {
    unsigned status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

class ManagementApi {
public:
    explicit ManagementApi(broker::Broker& broker);
    ~ManagementApi();

    // Answers a request whose path starts with /api/ through `reply`
    // (exactly once, maybe after this returns).
    void handle(const HttpRequest& request, std::function<void(HttpResponse)> reply);

    // Takes a sample of the broker's counters for the rates the API reports
    // (message_stats.*_details.rate); the HTTP server calls it every
    // sample_interval() (RabbitMQ's collect_statistics_interval, 5 s).
    void sample();
    std::chrono::milliseconds sample_interval() const;
    void set_sample_interval(std::chrono::milliseconds interval);
    // The shovels whose status /api/shovels shows (null: none).
    void set_shovels(Shovels* shovels);
    // Cluster mode: every node as the coordinator sees it (/api/nodes).
    using ClusterView = std::function<std::vector<ClusterNodeStatus>()>;
    void set_cluster_view(ClusterView view);
    static constexpr std::chrono::milliseconds kDefaultSampleInterval{5000};

    struct State;  // shared with the handlers in management_api_*.cpp

private:
    std::unique_ptr<State> state_;
};

// Imports a definitions document (RabbitMQ's format: users, vhosts,
// permissions, vhost limits, exchanges, queues, bindings) into the broker, as
// POST /api/definitions does: sluiced's --load-definitions at start. Returns
// "" or what was wrong (then nothing was changed); `warnings` gets what was
// ignored.
std::string import_definitions(broker::Broker& broker, std::string_view json_text, std::vector<std::string>& warnings);

}  // namespace sluice::net
