// /api/connections, /api/channels and /api/consumers: what the AMQP sessions
// hold (broker/introspection.hpp), and DELETE /api/connections/{name} (close
// with 320 CONNECTION_FORCED).
#include "broker/broker.hpp"
#include "net/management_api_internal.hpp"

namespace sluice::net::mgmt {

namespace {

json::array channels_json(State& s, const std::vector<broker::ChannelSummary>& channels) {
    json::array a;
    for (const broker::ChannelSummary& c : channels) a.push_back(channel_json(s, c));
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
        for (const broker::ConnectionSummary& c : broker::list_connections(s.broker))
            if (sees_connection(r, c.user)) a.push_back(connection_json(s, c));
        return reply(list_response(r, std::move(a)));
    }
    if (p.size() > 3 || (p.size() == 3 && p[2] != "channels")) return reply(not_found("Not Found"));
    if (p.size() == 2 && !get && m != "DELETE") return reply(method_not_allowed("GET, HEAD, DELETE"));
    if (p.size() == 3 && !get) return reply(method_not_allowed("GET, HEAD"));
    broker::ConnectionSummary conn;
    if (!broker::find_connection(s.broker, p[1], conn) || !sees_connection(r, conn.user))
        return reply(not_found("no connection '" + p[1] + "'"));
    if (p.size() == 3) return reply(list_response(r, channels_json(s, broker::list_channels(s.broker, conn.name))));
    if (m == "DELETE") {
        // Monitoring users see every connection but, as in RabbitMQ, only
        // administrators close other users' connections.
        if (!r.administrator && conn.user != r.user)
            return reply(error_response(403, "not_authorised", "Not administrator user"));
        std::string reason = r.raw->reason.empty() ? "Closed via management API" : r.raw->reason;
        broker::close_connection(s.broker, conn.id, reason);
        return reply(no_content());
    }
    return reply(json_response(200, connection_json(s, conn)));
}

void handle_channels(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    if (r.method != "GET" && r.method != "HEAD") return reply(method_not_allowed("GET, HEAD"));
    if (p.size() > 2) return reply(not_found("Not Found"));
    json::array a;
    for (const broker::ChannelSummary& c : broker::list_channels(s.broker)) {
        if (!sees_connection(r, c.user)) continue;
        if (p.size() == 1) a.push_back(channel_json(s, c));
        else if (broker::channel_name(c.connection, c.number) == p[1]) return reply(json_response(200, channel_json(s, c)));
    }
    if (p.size() == 2) return reply(not_found("no channel '" + p[1] + "'"));
    return reply(list_response(r, std::move(a)));
}

void handle_consumers(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    if (r.method != "GET" && r.method != "HEAD") return reply(method_not_allowed("GET, HEAD"));
    if (p.size() > 2) return reply(not_found("Not Found"));
    if (p.size() == 2 && !s.broker.find_vhost(p[1])) return reply(not_found("no vhost '" + p[1] + "'"));
    json::array a;
    for (const broker::ConsumerSummary& c : broker::list_consumers(s.broker)) {
        if (!sees_vhost(s, r, c.vhost)) continue;
        if (p.size() == 2 && c.vhost != p[1]) continue;
        a.push_back(consumer_json(c));
    }
    return reply(list_response(r, std::move(a)));
}

}  // namespace sluice::net::mgmt
