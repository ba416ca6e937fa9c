// /api/connections, /api/channels and /api/consumers: what the AMQP sessions
// hold, and DELETE /api/connections/{name} (close with 320 CONNECTION_FORCED).
#include "broker/broker.hpp"
#include "broker/channel.hpp"
#include "broker/session.hpp"
#include "broker/vhost.hpp"
#include "net/management_api_internal.hpp"

namespace sluice::net::mgmt {

namespace {

broker::Session* find_session(State& s, std::string_view name) {
    for (broker::Session* sess : s.broker.sessions())
        if (connection_name(*sess) == name) return sess;
    return nullptr;
}

json::array channels_of(State& s, const broker::Session& sess) {
    json::array a;
    for (const auto& c : sess.channels())
        if (c) a.push_back(channel_json(s, *c));
    return a;
}

}  // namespace

void handle_connections(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    const std::string& m = r.method;
    const bool get = m == "GET" || m == "HEAD";
    if (p.size() == 1) {
        if (!get) return reply(method_not_allowed("GET, HEAD"));
        json::array a;
        for (const broker::Session* sess : s.broker.sessions())
            if (sees_connection(r, *sess)) a.push_back(connection_json(s, *sess));
        return reply(list_response(r, std::move(a)));
    }
    if (p.size() > 3 || (p.size() == 3 && p[2] != "channels")) return reply(not_found("Not Found"));
    if (p.size() == 2 && !get && m != "DELETE") return reply(method_not_allowed("GET, HEAD, DELETE"));
    if (p.size() == 3 && !get) return reply(method_not_allowed("GET, HEAD"));
    broker::Session* sess = find_session(s, p[1]);
    if (!sess || !sees_connection(r, *sess)) return reply(not_found("no connection '" + p[1] + "'"));
    if (p.size() == 3) return reply(list_response(r, channels_of(s, *sess)));
    if (m == "DELETE") {
        // Monitoring users see every connection but, as in RabbitMQ, only
        // administrators close other users' connections.
        if (!r.administrator && sess->user() != r.user)
            return reply(error_response(403, "not_authorised", "Not administrator user"));
        std::string reason = r.raw->reason.empty() ? "Closed via management API" : r.raw->reason;
        broker::close_connection(*sess, reason);
        return reply(no_content());
    }
    return reply(json_response(200, connection_json(s, *sess)));
}

void handle_channels(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    if (r.method != "GET" && r.method != "HEAD") return reply(method_not_allowed("GET, HEAD"));
    if (p.size() == 1) {
        json::array a;
        for (const broker::Session* sess : s.broker.sessions())
            if (sees_connection(r, *sess))
                for (auto& c : channels_of(s, *sess)) a.push_back(std::move(c));
        return reply(list_response(r, std::move(a)));
    }
    if (p.size() != 2) return reply(not_found("Not Found"));
    for (const broker::Session* sess : s.broker.sessions())
        for (const auto& c : sess->channels())
            if (c && sees_connection(r, *sess) && channel_name(*c) == p[1]) return reply(json_response(200, channel_json(s, *c)));
    return reply(not_found("no channel '" + p[1] + "'"));
}

void handle_consumers(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    if (r.method != "GET" && r.method != "HEAD") return reply(method_not_allowed("GET, HEAD"));
    if (p.size() > 2) return reply(not_found("Not Found"));
    if (p.size() == 2 && !s.broker.find_vhost(p[1])) return reply(not_found("no vhost '" + p[1] + "'"));
    json::array a;
    for (const broker::Session* sess : s.broker.sessions())
        for (const auto& c : sess->channels()) {
            if (!c || !sees_vhost(s, r, c->vhost().name())) continue;
            if (p.size() == 2 && c->vhost().name() != p[1]) continue;
            for (const broker::ConsumerPtr& consumer : c->consumers()) a.push_back(consumer_json(*consumer));
        }
    return reply(list_response(r, std::move(a)));
}

}  // namespace sluice::net::mgmt
