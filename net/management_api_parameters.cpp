// /api/parameters (RabbitMQ's runtime parameters; the component Sluice acts
// on is "shovel") and /api/shovels (the shovels' status, RabbitMQ's shovel
// management plugin).
#include <algorithm>

#include "broker/broker.hpp"
#include "net/management_api_internal.hpp"
#include "net/shovel_definition.hpp"
#include "net/shovels.hpp"

namespace sluice::net::mgmt {

namespace {

constexpr std::string_view kShovel = "shovel";

bool may_see(State& s, const Request& r, std::string_view vhost) { return sees_vhost(s, r, vhost); }

HttpResponse validation_failed(std::string_view why) {
    return bad_request("Validation failed\n\n" + std::string(why) + "\n");
}

void put_parameter(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;  // parameters component vhost name
    if (p[1] != kShovel) return reply(validation_failed("component " + p[1] + " not found"));
    json::object body;
    HttpResponse error;
    if (!parse_body(r, body, error)) return reply(error);
    auto value = body.find("value");
    if (value == body.end()) return reply(bad_request("a parameter needs a 'value'"));
    broker::RuntimeParameter param{p[1], p[2], p[3], json::serialize(value->value())};
    ShovelDefinition def;
    if (std::string why = parse_shovel_definition(param.value, def); !why.empty())
        return reply(validation_failed(why));
    const bool created = s.broker.parameters().put(std::move(param));
    HttpResponse ok = no_content();
    if (created) ok.status = 201;
    reply_when_synced(s, true, std::move(ok), reply);
}

void shovel_status_list(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;  // shovels [vhost] | shovels vhost {vhost} {name} [restart]
    std::string_view vhost = p.size() == 2 ? std::string_view(p[1]) : std::string_view();
    if (!vhost.empty() && !s.broker.find_vhost(vhost)) return reply(not_found("no vhost '" + std::string(vhost) + "'"));
    json::array a;
    if (s.shovels)
        for (const ShovelStatus& st : s.shovels->status())
            if ((vhost.empty() || st.vhost == vhost) && may_see(s, r, st.vhost)) a.push_back(shovel_status_json(s, st));
    reply(list_response(r, std::move(a)));
}

}  // namespace

json::object parameter_json(const broker::RuntimeParameter& p) {
    json::object o;
    boost::system::error_code ec;
    json::value v = json::parse(p.value, ec);
    o["value"] = ec ? json::value(utf8(p.value)) : std::move(v);
    o["vhost"] = utf8(p.vhost);
    o["component"] = utf8(p.component);
    o["name"] = utf8(p.name);
    return o;
}

json::object shovel_status_json(State& s, const ShovelStatus& st) {
    json::object o;
    o["node"] = s.node;
    o["timestamp"] = st.timestamp;
    o["name"] = utf8(st.name);
    o["vhost"] = utf8(st.vhost);
    o["type"] = "dynamic";
    o["state"] = st.state;
    if (st.state == "terminated") {
        o["reason"] = utf8(st.reason);
        return o;
    }
    if (st.state != "running" || !st.definition) return o;
    const ShovelDefinition& d = *st.definition;
    o["blocked_status"] = st.blocked_status;
    o["src_uri"] = utf8(st.src_uri);
    o["src_protocol"] = "amqp091";
    o["dest_protocol"] = "amqp091";
    o["dest_uri"] = utf8(st.dest_uri);
    if (d.src_is_exchange) {
        o["src_exchange"] = utf8(d.src_exchange);
        o["src_exchange_key"] = utf8(d.src_exchange_key);
    } else {
        o["src_queue"] = utf8(d.src_queue);
    }
    if (!d.dest_queue.empty()) o["dest_queue"] = utf8(d.dest_queue);
    if (d.dest_exchange) o["dest_exchange"] = utf8(*d.dest_exchange);
    if (d.dest_exchange_key) o["dest_exchange_key"] = utf8(*d.dest_exchange_key);
    o["messages_forwarded"] = st.forwarded;
    return o;
}

void handle_parameters(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    const bool get = r.method == "GET" || r.method == "HEAD";
    if (p.size() > 4) return reply(not_found("Not Found"));
    if (p.size() >= 3 && !s.broker.find_vhost(p[2])) return reply(not_found("no vhost '" + p[2] + "'"));
    if (p.size() < 4) {
        if (!get) return reply(method_not_allowed("GET, HEAD"));
        json::array a;
        for (const broker::RuntimeParameter* param :
             s.broker.parameters().list(p.size() >= 2 ? std::string_view(p[1]) : std::string_view(),
                                        p.size() >= 3 ? std::string_view(p[2]) : std::string_view()))
            if (may_see(s, r, param->vhost)) a.push_back(parameter_json(*param));
        return reply(list_response(r, std::move(a)));
    }
    if (get) {
        const broker::RuntimeParameter* param = s.broker.parameters().find(p[1], p[2], p[3]);
        if (!param) return reply(not_found("Not Found"));
        return reply(json_response(200, parameter_json(*param)));
    }
    if (r.method == "PUT") return put_parameter(s, r, reply);
    if (r.method == "DELETE") {
        if (!s.broker.parameters().clear(p[1], p[2], p[3])) return reply(not_found("Not Found"));
        return reply_when_synced(s, true, no_content(), reply);
    }
    reply(method_not_allowed("GET, HEAD, PUT, DELETE"));
}

void handle_shovels(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    const bool get = r.method == "GET" || r.method == "HEAD";
    if (p.size() <= 2) {
        if (!get) return reply(method_not_allowed("GET, HEAD"));
        return shovel_status_list(s, r, reply);
    }
    // /api/shovels/vhost/{vhost}/{name}[/restart]
    if (p[1] != "vhost" || p.size() < 4 || p.size() > 5 || (p.size() == 5 && p[4] != "restart"))
        return reply(not_found("Not Found"));
    if (!s.broker.find_vhost(p[2])) return reply(not_found("no vhost '" + p[2] + "'"));
    if (p.size() == 5) {
        if (r.method != "DELETE") return reply(method_not_allowed("DELETE"));
        if (!s.shovels || !s.shovels->restart(p[2], p[3])) return reply(not_found("Not Found"));
        return reply(no_content());
    }
    if (!get) return reply(method_not_allowed("GET, HEAD"));
    if (s.shovels)
        for (const ShovelStatus& st : s.shovels->status())
            if (st.vhost == p[2] && st.name == p[3]) return reply(json_response(200, shovel_status_json(s, st)));
    reply(not_found("Not Found"));
}

}  // namespace sluice::net::mgmt
