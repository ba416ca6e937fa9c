// Shared by the management API's .cpp files only (it includes Boost.JSON):
// the parsed request, response builders, JSON encoders of broker objects,
// conversions between JSON and AMQP field tables / properties, and the rate
// sampler.
#pragma once

#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/amqp_error.hpp"
#include "net/base64.hpp"
#include "broker/broker_stats.hpp"
#include "broker/introspection.hpp"
#include "broker/operations.hpp"
#include "broker/queue_flow.hpp"
#include "net/amqp/field_table.hpp"
#include "net/amqp/properties.hpp"
#include "net/management_api.hpp"

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "0.1.0"
#endif

namespace sluice::broker {
class Broker;
struct User;
struct PermissionPatterns;
class Exchange;
class Queue;
class VHost;
struct Binding;
struct RuntimeParameter;
}  // namespace sluice::broker

namespace sluice::net {
class Shovels;
struct ShovelStatus;
}  // namespace sluice::net

namespace sluice::net::mgmt {

namespace json = boost::json;
using Reply = std::function<void(HttpResponse)>;

// A request under /api/, decoded.
struct Request {
    std::string method;
    std::vector<std::string> path;  // percent-decoded segments after "api"
    std::vector<std::pair<std::string, std::string>> query;
    const HttpRequest* raw = nullptr;
    std::string user;  // authenticated
    bool administrator = false;  // its tags
    bool monitoring = false;
    bool policymaker = false;  // runtime parameters (shovels); administrators are too

    const std::string* param(std::string_view name) const;
    bool flag(std::string_view name) const;  // ?name=true
};

// Counters sampled every ManagementApi::sample_interval(); rates are the
// difference of the last two samples over the time between them.
class RateSampler {
public:
    struct QueueSample {
        uint64_t published = 0, delivered = 0, redelivered = 0, acked = 0, messages = 0;
        double publish_rate = 0, deliver_rate = 0, redeliver_rate = 0, ack_rate = 0, messages_rate = 0;
        std::chrono::steady_clock::time_point time{};  // when the counters above were read
        uint64_t epoch = 0;
    };
    struct NodeSample {
        broker::BrokerStats stats;
        uint64_t ready = 0, unacked = 0;
    };

    void sample(broker::Broker& broker);
    // Samples closer together than half of this keep the older baseline.
    void set_interval(std::chrono::milliseconds interval) { min_gap_s_ = double(interval.count()) / 2000.0; }
    // Samples every queue's counters (done by sample() while the API is used).
    void sample_queues(broker::Broker& broker);
    // Rate of a node-level counter (per second), 0 before two samples.
    double node_rate(uint64_t broker::BrokerStats::*field) const;
    double ready_rate() const;
    double unacked_rate() const;
    const QueueSample* queue(uint64_t queue_id) const;
    // The API was used: keep sampling per-queue counters for a while.
    // True if it had not been used for a while (no per-queue samples yet).
    bool touch() {
        auto now = std::chrono::steady_clock::now();
        bool idle = !watched(now);
        last_used_ = now;
        return idle;
    }

private:
    bool watched(std::chrono::steady_clock::time_point now) const {
        return last_used_.time_since_epoch().count() != 0 && now - last_used_ < std::chrono::seconds(60);
    }
    double per_second(uint64_t now, uint64_t before) const;
    NodeSample prev_, cur_;
    int samples_ = 0;
    double dt_ = 0;  // seconds between prev_ and cur_
    double min_gap_s_ = 2.5;
    std::chrono::steady_clock::time_point cur_time_{};
    std::chrono::steady_clock::time_point last_used_{};
    std::unordered_map<uint64_t, QueueSample> queues_;
    uint64_t epoch_ = 0;
};

}  // namespace sluice::net::mgmt

namespace sluice::net {

struct ManagementApi::State {
    explicit State(broker::Broker& b);
    broker::Broker& broker;
    mgmt::RateSampler rates;
    std::string node;  // "sluice@hostname"
    std::chrono::steady_clock::time_point started;
    std::chrono::milliseconds sample_interval = ManagementApi::kDefaultSampleInterval;
    // Connection names by id (exclusive queues' owners): filled when a
    // request first needs them, emptied before the next.
    std::optional<std::unordered_map<uint64_t, std::string>> connection_names;
    Shovels* shovels = nullptr;  // the shovels' status (null: none run here)
    ManagementApi::ClusterView cluster;  // every node of the cluster (empty: not clustered)
};

}  // namespace sluice::net

namespace sluice::net::mgmt {

using State = ManagementApi::State;

// --- responses ---------------------------------------------------------------
HttpResponse json_response(unsigned status, const json::value& v);
HttpResponse no_content();
// {"error": error, "reason": reason}
HttpResponse error_response(unsigned status, std::string_view error, std::string_view reason);
HttpResponse not_found(std::string_view reason);
HttpResponse bad_request(std::string_view reason);
HttpResponse method_not_allowed(std::string_view allow);
// An AMQP reply code as an HTTP status: 404→404, 403→403, 406→400, 405→409, …
HttpResponse from_amqp_error(const broker::AmqpError& e);
// A list endpoint's answer: ?name= filters (substring), ?sort=a.b and
// ?sort_reverse=true order, ?page=&page_size= paginate (RabbitMQ's paged
// object), ?columns=a,b.c keeps only those fields.
HttpResponse list_response(const Request& r, json::array items);
// Answers `response` once every durable write so far is synced (when
// `durable` and storage is on), else at once.
void reply_when_synced(State& s, bool durable, HttpResponse response, const Reply& reply);

// --- request bodies ----------------------------------------------------------
// Parses a JSON object body ("" = {}). On failure returns false and fills
// `error` with a 400 response saying what was wrong.
bool parse_body(const Request& r, json::object& out, HttpResponse& error);
// Reads optional typed fields of a body; false (and `error`) on a wrong type.
bool get_bool(const json::object& o, std::string_view key, bool& out, HttpResponse& error);
bool get_string(const json::object& o, std::string_view key, std::string& out, HttpResponse& error);
bool get_int(const json::object& o, std::string_view key, int64_t& out, HttpResponse& error);
bool get_table(const json::object& o, std::string_view key, amqp::FieldTable& out, HttpResponse& error);
// AMQP short strings (names, routing keys) are at most 255 bytes.
bool check_short(std::string_view what, std::string_view s, HttpResponse& error);

// The caller as broker/operations.hpp's checks see it: the API has no
// connection, so every exclusive queue is locked to it.
struct CallerPermissions {
    broker::PermissionsPtr permissions;
    broker::Caller caller;
};
CallerPermissions caller_in(State& s, const Request& r, std::string_view vhost);

// --- conversions -------------------------------------------------------------
json::string utf8(std::string_view s);  // invalid UTF-8 bytes become U+FFFD
// %XX → byte ('+' → ' ' too when `plus_is_space`: a query); false on a bad escape.
bool percent_decode(std::string_view in, std::string& out, bool plus_is_space);
bool valid_utf8(std::string_view s);
std::string url_encode(std::string_view in);  // every byte but A-Z a-z 0-9 - _ . ~
using net::base64_decode;
using net::base64_encode;
// {"rate": r} rounded to 0.1 (an integer when whole: Boost.JSON writes 0.0 as 0E0).
json::object rate_json(double r);
json::value field_value_json(const amqp::FieldValue& v);
json::object table_json(const amqp::FieldTable& t);
// JSON → field table (ints as 'l', floats as 'd', strings as 'S', objects as
// 'F', arrays as 'A', null as 'V'). False with `error` on what cannot be one.
bool json_table(const json::value& v, amqp::FieldTable& out, std::string& error);
json::object properties_json(const amqp::BasicProperties& p);
bool json_properties(const json::object& o, amqp::BasicProperties& out, std::string& error);

// --- broker objects as RabbitMQ's management API shows them ------------------
json::object queue_json(State& s, const broker::Queue& q);
// A queue's "capacity" object (broker/queue_flow.hpp; docs/management-api.md).
json::object capacity_json(const broker::QueueCapacity& c);
json::object exchange_json(const broker::VHost& v, const broker::Exchange& e);
json::object binding_json(const broker::VHost& v, const broker::Exchange& source, const broker::Binding& b);
// Default-exchange binding every queue has (RabbitMQ lists it).
json::object default_binding_json(const broker::VHost& v, const broker::Queue& q);
std::string properties_key(std::string_view key, const amqp::FieldTable& args);
json::object connection_json(State& s, const broker::ConnectionSummary& c);
json::object channel_json(State& s, const broker::ChannelSummary& c);
json::object consumer_json(const broker::ConsumerSummary& c);
// The name RabbitMQ's paths use for the default exchange ("amq.default").
inline std::string_view exchange_path_name(std::string_view n) { return n.empty() ? "amq.default" : n; }
inline std::string_view exchange_from_path(std::string_view n) { return n == "amq.default" ? "" : n; }

// --- users, vhosts, permissions (management_api_access.cpp) --------------------
// Whether the authenticated user may make this request, RabbitMQ's way:
// users, permissions, definitions and changes of vhosts and limits are for
// administrators; a vhost's objects are visible to administrators, to
// monitoring users and to users with permissions in it; a change of a queue,
// exchange or binding needs the permission AMQP would need (configure,
// write, read). The refusal (403) if not.
std::optional<HttpResponse> authorize(State& s, const Request& r);
// The user may see this vhost's objects.
bool sees_vhost(State& s, const Request& r, std::string_view vhost);
// The user may see this connection (administrators and monitoring users
// see all, others their own).
bool sees_connection(const Request& r, std::string_view connection_user);
json::object user_json(const broker::User& u);
json::object permission_json(std::string_view vhost, std::string_view user, const broker::PermissionPatterns& p);
json::object vhost_json(State& s, const broker::VHost& v);
// {"max-connections": N, …}: the limits set on a vhost.
json::object vhost_limits_json(State& s, std::string_view vhost);
// Creates or updates a user from a PUT body or a definitions item
// ("password", or "password_hash" + "hashing_algorithm"; "tags" as a list
// or a comma-separated string). False (and `error`) on a bad body.
bool user_from_json(const json::object& o, std::string_view name, broker::User& out, HttpResponse& error);
bool tags_from_json(const json::object& o, std::vector<std::string>& out, HttpResponse& error);
bool permissions_from_json(const json::object& o, broker::PermissionPatterns& out, HttpResponse& error);
void handle_vhosts(State& s, const Request& r, const Reply& reply);
void handle_users(State& s, const Request& r, const Reply& reply);
void handle_permissions(State& s, const Request& r, const Reply& reply);
void handle_vhost_limits(State& s, const Request& r, const Reply& reply);

// --- handlers (one per resource family) ---------------------------------------
void handle_queues(State& s, const Request& r, const Reply& reply);
void handle_exchanges(State& s, const Request& r, const Reply& reply);
void handle_bindings(State& s, const Request& r, const Reply& reply);
void handle_connections(State& s, const Request& r, const Reply& reply);
void handle_channels(State& s, const Request& r, const Reply& reply);
void handle_consumers(State& s, const Request& r, const Reply& reply);
void handle_definitions(State& s, const Request& r, const Reply& reply);
// --- runtime parameters and shovels (management_api_parameters.cpp) -------------
void handle_parameters(State& s, const Request& r, const Reply& reply);
void handle_shovels(State& s, const Request& r, const Reply& reply);
// {"value", "vhost", "component", "name"}, as RabbitMQ's API and definitions show one.
json::object parameter_json(const broker::RuntimeParameter& p);
// One shovel as RabbitMQ's GET /api/shovels shows it.
json::object shovel_status_json(State& s, const ShovelStatus& st);
// Publishes a message through the broker's routing, as a channel would;
// `stored` says whether it went to the durable store. False if unroutable.
bool publish_message(broker::VHost& v, const broker::Exchange& ex, std::string_view routing_key,
                     const std::string& properties, std::string_view payload, bool& stored);

}  // namespace sluice::net::mgmt
