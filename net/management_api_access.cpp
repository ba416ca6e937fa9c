// /api/users, /api/vhosts, /api/permissions, /api/vhost-limits and
// /api/whoami, and who may do what through the API (authorize): the same
// users, tags and permissions as AMQP connections.
#include <algorithm>

#include "broker/access_control.hpp"
#include "broker/broker.hpp"
#include "broker/vhost.hpp"
#include "net/management_api_internal.hpp"

namespace sluice::net::mgmt {

namespace {

using broker::Permission;
using broker::ResourceKind;

HttpResponse not_authorised(std::string_view reason) { return error_response(403, "not_authorised", reason); }

HttpResponse created_or_updated(bool created) {
    HttpResponse r = no_content();
    if (created) r.status = 201;
    return r;
}

json::array tags_json(const std::vector<std::string>& tags) {
    json::array a;
    for (const auto& t : tags) a.push_back(utf8(t));
    return a;
}

// A change of a vhost's queue, exchange or binding needs what AMQP needs.
std::optional<HttpResponse> check_resource_change(State& s, const Request& r) {
    const auto& p = r.path;
    const std::string& vhost = p[1];
    if (!s.broker.find_vhost(vhost)) return std::nullopt;  // the handler answers 404
    broker::PermissionsPtr perms = s.broker.access_control().permissions(r.user, vhost);
    if (!perms) return not_authorised("access to vhost '" + vhost + "' refused for user '" + r.user + "'");
    auto need = [&](Permission what, ResourceKind kind, std::string_view name) -> std::optional<HttpResponse> {
        if (perms->allows(what, broker::resource_name(kind, name))) return std::nullopt;
        return error_response(403, "access_refused", broker::access_refused_text(kind, name, vhost, r.user));
    };
    if (p[0] == "queues" && p.size() >= 3) {
        if (p.size() == 3) return need(Permission::configure, ResourceKind::queue, p[2]);
        return need(Permission::read, ResourceKind::queue, p[2]);  // contents (purge), get
    }
    if (p[0] == "exchanges" && p.size() >= 3) {
        std::string_view name = exchange_from_path(p[2]);
        if (p.size() == 3) return need(Permission::configure, ResourceKind::exchange, name);
        return need(Permission::write, ResourceKind::exchange, name);  // publish
    }
    if (p[0] == "bindings" && p.size() >= 6) {
        ResourceKind dest = p[4] == "q" ? ResourceKind::queue : ResourceKind::exchange;
        if (auto refused = need(Permission::write, dest, p[4] == "q" ? std::string_view(p[5]) : exchange_from_path(p[5])))
            return refused;
        return need(Permission::read, ResourceKind::exchange, exchange_from_path(p[3]));
    }
    return std::nullopt;
}

std::vector<std::string> split_tags(std::string_view s) {
    std::vector<std::string> out;
    while (!s.empty()) {
        size_t comma = s.find(',');
        std::string_view t = s.substr(0, comma);
        while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
        while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
        if (!t.empty()) out.emplace_back(t);
        if (comma == std::string_view::npos) break;
        s.remove_prefix(comma + 1);
    }
    return out;
}

json::array user_permissions(State& s, std::string_view user) {
    json::array a;
    s.broker.access_control().for_each_permission([&](const std::string& vhost, const std::string& u, const auto& p) {
        if (u == user) a.push_back(permission_json(vhost, u, p.patterns()));
    });
    return a;
}

json::array vhost_permissions(State& s, std::string_view vhost) {
    json::array a;
    s.broker.access_control().for_each_permission([&](const std::string& v, const std::string& u, const auto& p) {
        if (v == vhost) a.push_back(permission_json(v, u, p.patterns()));
    });
    return a;
}

json::object limits_item(State& s, const broker::VHost& v) {
    json::object o;
    o["vhost"] = utf8(v.name());
    o["value"] = vhost_limits_json(s, v.name());
    return o;
}

}  // namespace

// --- who may do what -------------------------------------------------------------------

CallerPermissions caller_in(State& s, const Request& r, std::string_view vhost) {
    CallerPermissions c;
    c.permissions = s.broker.access_control().permissions(r.user, vhost);
    c.caller = broker::Caller{r.user, vhost, c.permissions.get(), 0};
    return c;
}

bool sees_vhost(State& s, const Request& r, std::string_view vhost) {
    return r.administrator || r.monitoring || s.broker.access_control().permissions(r.user, vhost) != nullptr;
}

bool sees_connection(const Request& r, std::string_view connection_user) {
    return r.administrator || r.monitoring || connection_user == r.user;
}

std::optional<HttpResponse> authorize(State& s, const Request& r) {
    const auto& p = r.path;
    if (p.empty()) return std::nullopt;
    const std::string& what = p[0];
    const bool get = r.method == "GET" || r.method == "HEAD";
    if (what == "users" || what == "permissions" || what == "definitions" ||
        (what == "vhosts" && (!get || p.size() > 2)) || (what == "vhost-limits" && !get)) {
        if (!r.administrator) return not_authorised("Not administrator user");
        return std::nullopt;
    }
    if (what == "nodes" && !r.administrator && !r.monitoring) return not_authorised("Not monitor user");
    // RabbitMQ: runtime parameters are for policymakers (and administrators)
    // with access to the vhost; shovel status for monitoring users, who see
    // the vhosts they may; a restart changes a shovel, as a parameter does.
    const bool shovel_restart = what == "shovels" && r.method == "DELETE";
    if (what == "parameters" || shovel_restart) {
        if (!r.policymaker) return not_authorised("Not policymaker user");
        constexpr size_t vhost_at = 2;  // parameters/{component}/{vhost}, shovels/vhost/{vhost}
        if (!r.administrator && p.size() > vhost_at && s.broker.find_vhost(p[vhost_at]) &&
            !s.broker.access_control().permissions(r.user, p[vhost_at]))
            return not_authorised("access to vhost '" + p[vhost_at] + "' refused for user '" + r.user + "'");
        return std::nullopt;
    }
    if (what == "shovels" && !r.administrator && !r.monitoring) return not_authorised("Not monitor user");
    const bool vhost_scoped = what == "queues" || what == "exchanges" || what == "bindings" || what == "consumers" ||
                              what == "aliveness-test" || what == "vhosts" || what == "vhost-limits";
    if (vhost_scoped && p.size() >= 2) {
        if (!sees_vhost(s, r, p[1]) && s.broker.find_vhost(p[1]))
            return not_authorised("access to vhost '" + p[1] + "' refused for user '" + r.user + "'");
        if (!get && (what == "queues" || what == "exchanges" || what == "bindings")) return check_resource_change(s, r);
    }
    return std::nullopt;
}

// --- JSON ------------------------------------------------------------------------------

json::object user_json(const broker::User& u) {
    json::object o;
    o["name"] = utf8(u.name);
    o["password_hash"] = u.password_hash;
    o["hashing_algorithm"] = std::string(broker::hash_algorithm_name(u.algorithm));
    o["tags"] = tags_json(u.tags);
    o["limits"] = json::object();
    return o;
}

json::object permission_json(std::string_view vhost, std::string_view user, const broker::PermissionPatterns& p) {
    json::object o;
    o["user"] = utf8(user);
    o["vhost"] = utf8(vhost);
    o["configure"] = utf8(p.configure);
    o["write"] = utf8(p.write);
    o["read"] = utf8(p.read);
    return o;
}

json::object vhost_limits_json(State& s, std::string_view vhost) {
    json::object o;
    if (const broker::VHostSettings* st = s.broker.vhost_settings(vhost)) {
        if (st->limits.max_connections >= 0) o["max-connections"] = st->limits.max_connections;
        if (st->limits.max_queues >= 0) o["max-queues"] = st->limits.max_queues;
    }
    return o;
}

json::object vhost_json(State& s, const broker::VHost& v) {
    uint64_t ready = 0, unacked = 0;
    for (const auto& [name, q] : v.queues()) {
        ready += q->ready_count();
        unacked += q->unacked_count();
    }
    const broker::VHostSettings* st = s.broker.vhost_settings(v.name());
    json::object o;
    o["name"] = utf8(v.name());
    o["description"] = utf8(st ? st->description : std::string());
    o["tags"] = tags_json(st ? st->tags : std::vector<std::string>{});
    o["default_queue_type"] = "classic";
    o["tracing"] = false;
    o["messages"] = ready + unacked;
    o["messages_ready"] = ready;
    o["messages_unacknowledged"] = unacked;
    json::object cs;
    cs[s.node] = "running";
    o["cluster_state"] = std::move(cs);
    return o;
}

bool tags_from_json(const json::object& o, std::vector<std::string>& out, HttpResponse& error) {
    auto it = o.find("tags");
    if (it == o.end() || it->value().is_null()) return true;
    out.clear();
    if (it->value().is_string()) {
        out = split_tags(it->value().get_string().subview());
        return true;
    }
    if (it->value().is_array()) {
        for (const auto& t : it->value().get_array()) {
            if (!t.is_string()) {
                error = bad_request("'tags' must be a list of strings or a comma-separated string");
                return false;
            }
            for (auto& each : split_tags(t.get_string().subview())) out.push_back(std::move(each));
        }
        return true;
    }
    error = bad_request("'tags' must be a list of strings or a comma-separated string");
    return false;
}

bool user_from_json(const json::object& o, std::string_view name, broker::User& out, HttpResponse& error) {
    std::string password, hash, algorithm = "rabbit_password_hashing_sha256";
    if (!get_string(o, "password", password, error) || !get_string(o, "password_hash", hash, error) ||
        !get_string(o, "hashing_algorithm", algorithm, error) || !tags_from_json(o, out.tags, error))
        return false;
    const bool has_password = o.contains("password") && !o.at("password").is_null();
    const bool has_hash = o.contains("password_hash") && !o.at("password_hash").is_null();
    if (has_password && has_hash) {
        error = bad_request("both 'password' and 'password_hash' are given; use one");
        return false;
    }
    auto alg = broker::parse_hash_algorithm(algorithm);
    if (!alg) {
        error = bad_request("unknown hashing_algorithm '" + algorithm +
                            "' (rabbit_password_hashing_sha256, _sha512 or _md5)");
        return false;
    }
    out.name = std::string(name);
    out.algorithm = *alg;
    if (has_password) {
        out.password_hash = broker::hash_password(password, *alg);
    } else if (has_hash && !hash.empty()) {
        if (!broker::valid_password_hash(hash, *alg)) {
            error = bad_request("'password_hash' is not a base64 salted " + algorithm + " hash");
            return false;
        }
        out.password_hash = hash;
    } else {
        out.password_hash.clear();  // RabbitMQ: no password login (another mechanism may do)
    }
    return true;
}

bool permissions_from_json(const json::object& o, broker::PermissionPatterns& out, HttpResponse& error) {
    for (const char* key : {"configure", "write", "read"})
        if (!o.contains(key) || !o.at(key).is_string()) {
            error = bad_request(std::string("'") + key + "' (a regular expression string) is required");
            return false;
        }
    out.configure = o.at("configure").get_string().subview();
    out.write = o.at("write").get_string().subview();
    out.read = o.at("read").get_string().subview();
    return true;
}

// --- handlers ----------------------------------------------------------------------------

void handle_users(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    const std::string& m = r.method;
    const bool get = m == "GET" || m == "HEAD";
    broker::AccessControl& ac = s.broker.access_control();
    if (p.size() == 1) {
        if (!get) return reply(method_not_allowed("GET, HEAD"));
        json::array a;
        for (const auto& [name, u] : ac.users()) a.push_back(user_json(u));
        return reply(list_response(r, std::move(a)));
    }
    const std::string& name = p[1];
    if (p.size() == 3 && p[2] == "permissions") {
        if (!get) return reply(method_not_allowed("GET, HEAD"));
        if (!ac.find_user(name)) return reply(not_found("no user '" + name + "'"));
        return reply(list_response(r, user_permissions(s, name)));
    }
    if (p.size() != 2) return reply(not_found("Not Found"));
    if (m == "PUT") {
        json::object body;
        HttpResponse error;
        broker::User u;
        if (!parse_body(r, body, error) || !user_from_json(body, name, u, error)) return reply(error);
        if (name.empty()) return reply(bad_request("a user needs a name"));
        bool created = !ac.find_user(name);
        ac.put_user(std::move(u));
        return reply_when_synced(s, true, created_or_updated(created), reply);
    }
    if (m == "DELETE") {
        if (!s.broker.delete_user(name)) return reply(not_found("no user '" + name + "'"));
        return reply_when_synced(s, true, no_content(), reply);
    }
    if (!get) return reply(method_not_allowed("GET, HEAD, PUT, DELETE"));
    const broker::User* u = ac.find_user(name);
    if (!u) return reply(not_found("no user '" + name + "'"));
    return reply(json_response(200, user_json(*u)));
}

void handle_vhosts(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    const std::string& m = r.method;
    const bool get = m == "GET" || m == "HEAD";
    if (p.size() == 1) {
        if (!get) return reply(method_not_allowed("GET, HEAD"));
        json::array a;
        for (broker::VHost* v : s.broker.vhosts())
            if (sees_vhost(s, r, v->name())) a.push_back(vhost_json(s, *v));
        return reply(list_response(r, std::move(a)));
    }
    const std::string& name = p[1];
    broker::VHost* v = s.broker.find_vhost(name);
    if (p.size() == 3 && p[2] == "permissions") {
        if (!get) return reply(method_not_allowed("GET, HEAD"));
        if (!v) return reply(not_found("no vhost '" + name + "'"));
        return reply(list_response(r, vhost_permissions(s, name)));
    }
    if (p.size() != 2) return reply(not_found("Not Found"));
    if (m == "PUT") {
        json::object body;
        HttpResponse error;
        std::string description;
        std::vector<std::string> tags;
        if (!parse_body(r, body, error) || !get_string(body, "description", description, error) ||
            !tags_from_json(body, tags, error))
            return reply(error);
        if (name.empty()) return reply(bad_request("a vhost needs a name"));
        if (v) {  // keep what the body does not say
            const broker::VHostSettings* st = s.broker.vhost_settings(name);
            if (!body.contains("description")) description = st->description;
            if (!body.contains("tags")) tags = st->tags;
        }
        s.broker.put_vhost(name, std::move(description), std::move(tags));
        // As RabbitMQ's management API: whoever creates a vhost gets full permissions in it.
        if (!v && !s.broker.access_control().permissions(r.user, name))
            s.broker.access_control().set_permissions(r.user, name, {".*", ".*", ".*"});
        return reply_when_synced(s, true, created_or_updated(!v), reply);
    }
    if (m == "DELETE") {
        if (!s.broker.delete_vhost(name)) return reply(not_found("no vhost '" + name + "'"));
        return reply_when_synced(s, true, no_content(), reply);
    }
    if (!get) return reply(method_not_allowed("GET, HEAD, PUT, DELETE"));
    if (!v) return reply(not_found("no vhost '" + name + "'"));
    return reply(json_response(200, vhost_json(s, *v)));
}

void handle_permissions(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    const std::string& m = r.method;
    const bool get = m == "GET" || m == "HEAD";
    broker::AccessControl& ac = s.broker.access_control();
    if (p.size() == 1) {
        if (!get) return reply(method_not_allowed("GET, HEAD"));
        json::array a;
        ac.for_each_permission([&](const std::string& vhost, const std::string& user, const auto& perms) {
            a.push_back(permission_json(vhost, user, perms.patterns()));
        });
        return reply(list_response(r, std::move(a)));
    }
    if (p.size() != 3) return reply(not_found("Not Found"));
    const std::string& vhost = p[1];
    const std::string& user = p[2];
    if (m == "PUT") {
        if (!s.broker.find_vhost(vhost)) return reply(bad_request("no vhost '" + vhost + "'"));
        if (!ac.find_user(user)) return reply(bad_request("no user '" + user + "'"));
        json::object body;
        HttpResponse error;
        broker::PermissionPatterns patterns;
        if (!parse_body(r, body, error) || !permissions_from_json(body, patterns, error)) return reply(error);
        bool created = !ac.permissions(user, vhost);
        if (auto bad = ac.set_permissions(user, vhost, std::move(patterns))) return reply(bad_request(*bad));
        return reply_when_synced(s, true, created_or_updated(created), reply);
    }
    if (m == "DELETE") {
        if (!ac.clear_permissions(user, vhost))
            return reply(not_found("no permissions of user '" + user + "' in vhost '" + vhost + "'"));
        return reply_when_synced(s, true, no_content(), reply);
    }
    if (!get) return reply(method_not_allowed("GET, HEAD, PUT, DELETE"));
    broker::PermissionsPtr perms = ac.permissions(user, vhost);
    if (!perms) return reply(not_found("no permissions of user '" + user + "' in vhost '" + vhost + "'"));
    return reply(json_response(200, permission_json(vhost, user, perms->patterns())));
}

void handle_vhost_limits(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    const std::string& m = r.method;
    const bool get = m == "GET" || m == "HEAD";
    if (p.size() <= 2) {
        if (!get) return reply(method_not_allowed("GET, HEAD"));
        json::array a;
        if (p.size() == 2) {
            broker::VHost* v = s.broker.find_vhost(p[1]);
            if (!v) return reply(not_found("no vhost '" + p[1] + "'"));
            if (!vhost_limits_json(s, v->name()).empty()) a.push_back(limits_item(s, *v));
        } else {
            for (broker::VHost* v : s.broker.vhosts())
                if (sees_vhost(s, r, v->name()) && !vhost_limits_json(s, v->name()).empty())
                    a.push_back(limits_item(s, *v));
        }
        return reply(json_response(200, a));
    }
    if (p.size() != 3) return reply(not_found("Not Found"));
    if (m != "PUT" && m != "DELETE") return reply(method_not_allowed("PUT, DELETE"));
    const std::string& vhost = p[1];
    const std::string& name = p[2];
    const broker::VHostSettings* st = s.broker.vhost_settings(vhost);
    if (!st) return reply(not_found("no vhost '" + vhost + "'"));
    if (name != "max-connections" && name != "max-queues")
        return reply(bad_request("unknown vhost limit '" + name + "' (max-connections or max-queues)"));
    int64_t value = -1;
    if (m == "PUT") {
        json::object body;
        HttpResponse error;
        if (!parse_body(r, body, error) || !get_int(body, "value", value, error)) return reply(error);
        if (!body.contains("value")) return reply(bad_request("'value' (an integer, -1 for no limit) is required"));
    }
    broker::VHostLimits limits = st->limits;
    (name == "max-connections" ? limits.max_connections : limits.max_queues) = value < 0 ? -1 : value;
    s.broker.set_vhost_limits(vhost, limits);
    return reply_when_synced(s, true, no_content(), reply);
}

}  // namespace sluice::net::mgmt
