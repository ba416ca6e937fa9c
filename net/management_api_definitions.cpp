// /api/definitions[/{vhost}]: export and import of the topology in
// RabbitMQ's definitions format (users, vhosts, permissions, exchanges,
// queues, bindings, runtime parameters: shovels). Import checks the whole document before changing
// anything, then declares through the same VHost methods as AMQP; it answers
// once the durable declares are synced.
#include <algorithm>

#include "broker/access_control.hpp"
#include "broker/broker.hpp"
#include "broker/vhost.hpp"
#include "net/management_api_internal.hpp"
#include "net/shovel_definition.hpp"

namespace sluice::net::mgmt {

namespace {

bool exported_exchange(const broker::Exchange& e) { return !e.name().empty() && e.name().substr(0, 4) != "amq."; }

// One vhost's queues, exchanges and bindings, appended to the arrays.
void export_vhost(const broker::VHost& v, bool whole_broker, json::array& qa, json::array& ea, json::array& ba) {
    auto drop_vhost = [&](json::object o) {
        if (!whole_broker) o.erase("vhost");
        return o;
    };
    std::vector<const broker::Queue*> queues;
    for (const auto& [n, q] : v.queues())
        if (!q->exclusive()) queues.push_back(q.get());
    std::sort(queues.begin(), queues.end(), [](auto* a, auto* b) { return a->name() < b->name(); });
    std::vector<const broker::Exchange*> exchanges;
    for (const auto& [n, e] : v.exchanges()) exchanges.push_back(e.get());
    std::sort(exchanges.begin(), exchanges.end(), [](auto* a, auto* b) { return a->name() < b->name(); });

    for (const broker::Queue* q : queues) {
        json::object o;
        o["name"] = utf8(q->name());
        o["vhost"] = utf8(v.name());
        o["durable"] = q->durable();
        o["auto_delete"] = q->auto_delete();
        o["arguments"] = table_json(q->arguments());
        qa.push_back(drop_vhost(std::move(o)));
    }
    for (const broker::Exchange* e : exchanges) {
        if (exported_exchange(*e)) {
            json::object o = exchange_json(v, *e);
            ea.push_back(drop_vhost(std::move(o)));
        }
        if (e->name().empty()) continue;
        for (const broker::Binding& b : e->bindings()) {
            if (b.destination.queue && b.destination.queue->exclusive()) continue;
            json::object o = binding_json(v, *e, b);
            o.erase("properties_key");
            ba.push_back(drop_vhost(std::move(o)));
        }
    }
}

// The whole broker (path_vhost null: users, vhosts, permissions, limits and
// every vhost's topology) or one vhost's topology.
json::object export_definitions(State& s, const broker::VHost* path_vhost) {
    const bool whole_broker = path_vhost == nullptr;
    json::array qa, ea, ba, parameters;
    json::object d;
    d["product_name"] = "Sluice";
    d["product_version"] = SLUICE_VERSION;
    if (whole_broker) {
        json::array users, vhosts, permissions;
        for (const auto& [name, u] : s.broker.access_control().users()) users.push_back(user_json(u));
        for (broker::VHost* v : s.broker.vhosts()) {
            json::object vh = vhost_json(s, *v);
            json::object o;
            o["name"] = vh["name"];
            o["description"] = vh["description"];
            o["tags"] = vh["tags"];
            o["default_queue_type"] = "classic";
            o["metadata"] = json::object{{"description", vh["description"]}, {"tags", vh["tags"]}};
            vhosts.push_back(std::move(o));
            json::object limits = vhost_limits_json(s, v->name());
            if (!limits.empty()) {
                // RabbitMQ exports vhost limits as a "vhost-limits" runtime parameter.
                json::object p;
                p["vhost"] = utf8(v->name());
                p["component"] = "vhost-limits";
                p["name"] = "limits";
                p["value"] = std::move(limits);
                parameters.push_back(std::move(p));
            }
            export_vhost(*v, true, qa, ea, ba);
        }
        s.broker.access_control().for_each_permission([&](const std::string& vhost, const std::string& user, const auto& p) {
            permissions.push_back(permission_json(vhost, user, p.patterns()));
        });
        d["users"] = std::move(users);
        d["vhosts"] = std::move(vhosts);
        d["permissions"] = std::move(permissions);
        d["topic_permissions"] = json::array();
        d["global_parameters"] = json::array();
    } else {
        export_vhost(*path_vhost, false, qa, ea, ba);
    }
    for (const broker::RuntimeParameter* p : s.broker.parameters().list({}, path_vhost ? path_vhost->name() : ""))
        parameters.push_back(parameter_json(*p));
    d["parameters"] = std::move(parameters);
    d["policies"] = json::array();
    d["queues"] = std::move(qa);
    d["exchanges"] = std::move(ea);
    d["bindings"] = std::move(ba);
    return d;
}

struct QueueDef {
    std::string vhost;
    std::string name;
    broker::QueueOptions options;
};
struct ExchangeDef {
    std::string vhost;
    std::string name;
    broker::ExchangeOptions options;
};
struct BindingDef {
    std::string vhost;
    std::string source, destination, key;
    bool to_queue;
    amqp::FieldTable arguments;
};
struct VHostDef {
    std::string name, description;
    std::vector<std::string> tags;
};
struct PermissionDef {
    std::string vhost, user;
    broker::PermissionPatterns patterns;
};
struct LimitsDef {
    std::string vhost;
    broker::VHostLimits limits;
};

// Checks one section's items and collects them; false with `error` set.
class Importer {
public:
    Importer(State& s, broker::VHost* path_vhost) : s_(s), path_vhost_(path_vhost) {}

    bool read(const json::object& doc, HttpResponse& error) {
        for (const auto& kv : doc) {
            std::string_view k = kv.key();
            if (k == "queues" || k == "exchanges" || k == "bindings" || k == "users" || k == "vhosts" ||
                k == "permissions" || k == "policies" || k == "parameters" || k == "global_parameters" ||
                k == "topic_permissions") {
                if (!kv.value().is_array()) {
                    error = bad_request("'" + std::string(k) + "' must be an array");
                    return false;
                }
            }
        }
        auto items = [&](std::string_view key) -> const json::array* {
            auto it = doc.find(key);
            return it == doc.end() ? nullptr : &it->value().get_array();
        };
        for (std::string_view k : {"policies", "global_parameters", "topic_permissions"})
            if (const json::array* a = items(k); a && !a->empty())
                warnings_.push_back(std::string(k) + " are not supported yet and were ignored");
        if (const json::array* a = items("vhosts"))
            for (const auto& v : *a)
                if (!read_vhost(v, error)) return false;
        if (const json::array* a = items("users"))
            for (const auto& u : *a) {
                if (!u.is_object()) return fail(error, "users");
                std::string name;
                broker::User user;
                if (!get_string(u.get_object(), "name", name, error) ||
                    !user_from_json(u.get_object(), name, user, error))
                    return false;
                if (name.empty()) {
                    error = bad_request("a user without a 'name'");
                    return false;
                }
                users_.push_back(std::move(user));
            }
        if (const json::array* a = items("permissions"))
            for (const auto& p : *a)
                if (!read_permission(p, error)) return false;
        if (const json::array* a = items("parameters"))
            for (const auto& p : *a)
                if (!read_parameter(p, error)) return false;
        if (const json::array* a = items("exchanges"))
            for (const auto& e : *a)
                if (!read_exchange(e, error)) return false;
        if (const json::array* a = items("queues"))
            for (const auto& q : *a)
                if (!read_queue(q, error)) return false;
        if (const json::array* a = items("bindings"))
            for (const auto& b : *a)
                if (!read_binding(b, error)) return false;
        return true;
    }

    // Declares everything; false (and `error`) at the first refusal.
    bool apply(HttpResponse& error, bool& durable) {
        durable = !vhosts_.empty() || !users_.empty() || !permissions_.empty() || !limits_.empty();
        for (VHostDef& v : vhosts_) s_.broker.put_vhost(v.name, std::move(v.description), std::move(v.tags));
        for (broker::User& u : users_) s_.broker.access_control().put_user(std::move(u));
        for (PermissionDef& p : permissions_)
            if (auto bad = s_.broker.access_control().set_permissions(p.user, p.vhost, std::move(p.patterns))) {
                error = bad_request(*bad);  // checked in read(); cannot happen
                return false;
            }
        for (const LimitsDef& l : limits_) s_.broker.set_vhost_limits(l.vhost, l.limits);
        durable |= !parameters_.empty();
        for (ExchangeDef& e : exchanges_) {
            auto r = vhost(e.vhost).declare_exchange(e.name, e.options);
            if (auto* err = std::get_if<broker::AmqpError>(&r)) return refused(error, *err, "exchange", e.name);
            durable |= e.options.durable;
        }
        for (QueueDef& q : queues_) {
            bool created = false, is_durable = q.options.durable;
            auto r = vhost(q.vhost).declare_queue(q.name, std::move(q.options), 0, created);
            if (auto* err = std::get_if<broker::AmqpError>(&r)) return refused(error, *err, "queue", q.name);
            durable |= is_durable;
        }
        for (BindingDef& b : bindings_) {
            broker::VHost& v = vhost(b.vhost);
            broker::Status st = b.to_queue ? v.bind_queue(b.destination, b.source, b.key, b.arguments)
                                           : v.bind_exchange(b.destination, b.source, b.key, b.arguments);
            if (st) return refused(error, *st, "binding from", b.source);
            durable = true;
        }
        // Last: a shovel may need the queues and exchanges above.
        for (broker::RuntimeParameter& p : parameters_) s_.broker.parameters().put(std::move(p));
        return true;
    }

    const std::vector<std::string>& warnings() const { return warnings_; }

private:
    bool fail(HttpResponse& error, std::string_view section) {
        error = bad_request("each item of '" + std::string(section) + "' must be an object");
        return false;
    }

    bool refused(HttpResponse& error, const broker::AmqpError& e, std::string_view what, const std::string& name) {
        HttpResponse r = from_amqp_error(e);
        error = error_response(r.status == 404 ? 400 : r.status, "bad_request",
                               "importing " + std::string(what) + " '" + name + "': " + e.text);
        return false;
    }

    // A vhost that exists, or that this document creates (checked in read()).
    broker::VHost& vhost(const std::string& name) { return *s_.broker.find_vhost(name); }

    bool known_vhost(const std::string& name) const {
        return s_.broker.find_vhost(name) ||
               std::any_of(vhosts_.begin(), vhosts_.end(), [&](const VHostDef& v) { return v.name == name; });
    }

    // The item's vhost: its "vhost" field, else the one in the path (or "/").
    bool item_vhost(const json::object& o, std::string& out, HttpResponse& error) {
        if (!get_string(o, "vhost", out, error)) return false;
        if (!o.contains("vhost")) {
            out = path_vhost_ ? path_vhost_->name() : "/";
            if (!known_vhost(out)) {
                error = bad_request("vhost '" + out + "' does not exist");
                return false;
            }
            return true;
        }
        if (!known_vhost(out)) {
            error = bad_request("vhost '" + out + "' does not exist and the definitions do not create it");
            return false;
        }
        if (path_vhost_ && out != path_vhost_->name()) {
            error = bad_request("an item names vhost '" + out + "', not the one in the path");
            return false;
        }
        return true;
    }

    bool read_vhost(const json::value& v, HttpResponse& error) {
        if (!v.is_object()) return fail(error, "vhosts");
        const json::object& o = v.get_object();
        VHostDef d;
        if (!read_name(o, "vhost", d.name, error) || !get_string(o, "description", d.description, error) ||
            !tags_from_json(o, d.tags, error))
            return false;
        // RabbitMQ 3.11+ exports put description and tags under "metadata" too.
        if (auto m = o.find("metadata"); m != o.end() && m->value().is_object()) {
            const json::object& md = m->value().get_object();
            if (!o.contains("description") && !get_string(md, "description", d.description, error)) return false;
            if (!o.contains("tags") && !tags_from_json(md, d.tags, error)) return false;
        }
        if (path_vhost_) {
            error = bad_request("vhosts can only be imported into the whole broker (/api/definitions)");
            return false;
        }
        vhosts_.push_back(std::move(d));
        return true;
    }

    bool read_permission(const json::value& v, HttpResponse& error) {
        if (!v.is_object()) return fail(error, "permissions");
        const json::object& o = v.get_object();
        PermissionDef d;
        if (!get_string(o, "user", d.user, error) || !get_string(o, "vhost", d.vhost, error) ||
            !permissions_from_json(o, d.patterns, error))
            return false;
        bool user_known = s_.broker.access_control().find_user(d.user) ||
                          std::any_of(users_.begin(), users_.end(), [&](const broker::User& u) { return u.name == d.user; });
        if (!user_known || !known_vhost(d.vhost)) {
            error = bad_request("permissions of user '" + d.user + "' in vhost '" + d.vhost +
                                "': the user or the vhost does not exist");
            return false;
        }
        auto compiled = broker::CompiledPermissions::compile(d.patterns);
        if (auto* bad = std::get_if<std::string>(&compiled)) {
            error = bad_request("permissions of user '" + d.user + "' in vhost '" + d.vhost + "': " + *bad);
            return false;
        }
        permissions_.push_back(std::move(d));
        return true;
    }

    // Runtime parameters: "shovel" and "vhost-limits" (RabbitMQ's form of
    // vhost limits).
    bool read_parameter(const json::value& v, HttpResponse& error) {
        if (!v.is_object()) return fail(error, "parameters");
        const json::object& o = v.get_object();
        std::string component;
        if (!get_string(o, "component", component, error)) return false;
        if (component == "shovel") return read_shovel(o, error);
        if (component != "vhost-limits") {
            warnings_.push_back("parameter of component '" + component + "' is not supported yet and was ignored");
            return true;
        }
        LimitsDef d;
        if (!item_vhost(o, d.vhost, error)) return false;
        auto value = o.find("value");
        if (value == o.end() || !value->value().is_object()) {
            error = bad_request("vhost-limits parameter without an object 'value'");
            return false;
        }
        int64_t n = -1;
        const json::object& limits = value->value().get_object();
        if (!get_int(limits, "max-connections", n, error)) return false;
        d.limits.max_connections = limits.contains("max-connections") && n >= 0 ? n : -1;
        n = -1;
        if (!get_int(limits, "max-queues", n, error)) return false;
        d.limits.max_queues = limits.contains("max-queues") && n >= 0 ? n : -1;
        limits_.push_back(std::move(d));
        return true;
    }

    bool read_shovel(const json::object& o, HttpResponse& error) {
        broker::RuntimeParameter p;
        p.component = "shovel";
        if (!item_vhost(o, p.vhost, error) || !get_string(o, "name", p.name, error)) return false;
        auto value = o.find("value");
        if (p.name.empty() || value == o.end()) {
            error = bad_request("a shovel parameter needs a 'name' and a 'value'");
            return false;
        }
        p.value = json::serialize(value->value());
        ShovelDefinition def;
        if (std::string why = parse_shovel_definition(p.value, def); !why.empty()) {
            error = bad_request("shovel '" + p.name + "' in vhost '" + p.vhost + "': " + why);
            return false;
        }
        parameters_.push_back(std::move(p));
        return true;
    }

    bool read_name(const json::object& o, std::string_view what, std::string& name, HttpResponse& error) {
        if (!get_string(o, "name", name, error)) return false;
        if (!o.contains("name")) {
            error = bad_request(std::string(what) + " without a 'name'");
            return false;
        }
        return check_short(std::string(what) + " name", name, error);
    }

    bool read_exchange(const json::value& v, HttpResponse& error) {
        if (!v.is_object()) return fail(error, "exchanges");
        const json::object& o = v.get_object();
        ExchangeDef d;
        std::string type = "direct";
        d.options.durable = true;
        if (!read_name(o, "exchange", d.name, error) || !item_vhost(o, d.vhost, error) ||
            !get_string(o, "type", type, error) || !get_bool(o, "durable", d.options.durable, error) ||
            !get_bool(o, "auto_delete", d.options.auto_delete, error) ||
            !get_bool(o, "internal", d.options.internal, error) ||
            !get_table(o, "arguments", d.options.arguments, error))
            return false;
        if (!broker::parse_exchange_type(type, d.options.type)) {
            error = bad_request("exchange '" + d.name + "': unknown type '" + type + "'");
            return false;
        }
        // Built-in exchanges exist already (RabbitMQ's exports never list them).
        static constexpr std::string_view kBuiltin[] = {"amq.direct", "amq.fanout", "amq.topic", "amq.headers",
                                                         "amq.match"};
        if (d.name.empty() || std::find(std::begin(kBuiltin), std::end(kBuiltin), d.name) != std::end(kBuiltin))
            return true;
        exchanges_.push_back(std::move(d));
        return true;
    }

    bool read_queue(const json::value& v, HttpResponse& error) {
        if (!v.is_object()) return fail(error, "queues");
        const json::object& o = v.get_object();
        QueueDef d;
        d.options.durable = true;
        if (!read_name(o, "queue", d.name, error) || !item_vhost(o, d.vhost, error) ||
            !get_bool(o, "durable", d.options.durable, error) ||
            !get_bool(o, "auto_delete", d.options.auto_delete, error) ||
            !get_table(o, "arguments", d.options.arguments, error))
            return false;
        if (d.name.empty() || d.name.substr(0, 4) == "amq.") {
            error = bad_request("queue name '" + d.name + "' is empty or has the reserved prefix 'amq.'");
            return false;
        }
        queues_.push_back(std::move(d));
        return true;
    }

    bool read_binding(const json::value& v, HttpResponse& error) {
        if (!v.is_object()) return fail(error, "bindings");
        const json::object& o = v.get_object();
        BindingDef d;
        std::string type = "queue";
        if (!item_vhost(o, d.vhost, error) || !get_string(o, "source", d.source, error) ||
            !get_string(o, "destination", d.destination, error) || !get_string(o, "destination_type", type, error) ||
            !get_string(o, "routing_key", d.key, error) || !get_table(o, "arguments", d.arguments, error))
            return false;
        if (type != "queue" && type != "exchange") {
            error = bad_request("binding destination_type must be queue or exchange, not '" + type + "'");
            return false;
        }
        if (!check_short("routing_key", d.key, error) || !check_short("source", d.source, error) ||
            !check_short("destination", d.destination, error))
            return false;
        d.to_queue = type == "queue";
        if (d.source.empty()) return true;  // the default exchange's implicit bindings
        bindings_.push_back(std::move(d));
        return true;
    }

    State& s_;
    broker::VHost* path_vhost_;
    std::vector<VHostDef> vhosts_;
    std::vector<broker::User> users_;
    std::vector<PermissionDef> permissions_;
    std::vector<LimitsDef> limits_;
    std::vector<broker::RuntimeParameter> parameters_;
    std::vector<ExchangeDef> exchanges_;
    std::vector<QueueDef> queues_;
    std::vector<BindingDef> bindings_;
    std::vector<std::string> warnings_;
};

}  // namespace

void handle_definitions(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    if (p.size() > 2) return reply(not_found("Not Found"));
    broker::VHost* path_vhost = nullptr;
    if (p.size() == 2) {
        path_vhost = s.broker.find_vhost(p[1]);
        if (!path_vhost) return reply(not_found("no vhost '" + p[1] + "'"));
    }
    if (r.method == "GET" || r.method == "HEAD") {
        HttpResponse resp = json_response(200, export_definitions(s, path_vhost));
        if (r.flag("download"))
            resp.headers.emplace_back("Content-Disposition", "attachment; filename=\"sluice-definitions.json\"");
        return reply(std::move(resp));
    }
    if (r.method != "POST") return reply(method_not_allowed("GET, HEAD, POST"));
    json::object doc;
    HttpResponse error;
    if (!parse_body(r, doc, error)) return reply(error);
    Importer importer(s, path_vhost);
    if (!importer.read(doc, error)) return reply(error);
    bool durable = false;
    if (!importer.apply(error, durable)) return reply(error);
    HttpResponse ok = no_content();
    if (!importer.warnings().empty()) {
        json::object o;
        json::array w;
        for (const auto& text : importer.warnings()) w.push_back(utf8(text));
        o["warnings"] = std::move(w);
        ok = json_response(200, o);
    }
    reply_when_synced(s, durable, std::move(ok), reply);
}

}  // namespace sluice::net::mgmt

namespace sluice::net {

std::string import_definitions(broker::Broker& broker, std::string_view json_text, std::vector<std::string>& warnings) {
    using namespace mgmt;
    State s(broker);
    HttpRequest raw;
    raw.body = std::string(json_text);
    Request r;
    r.method = "POST";
    r.raw = &raw;
    json::object doc;
    HttpResponse error;
    Importer importer(s, nullptr);
    bool durable = false;
    if (!parse_body(r, doc, error) || !importer.read(doc, error) || !importer.apply(error, durable)) {
        boost::system::error_code ec;
        json::value v = json::parse(error.body, ec);
        if (!ec && v.is_object() && v.get_object().contains("reason") && v.at("reason").is_string())
            return std::string(v.at("reason").get_string());
        return error.body;
    }
    warnings = importer.warnings();
    return "";
}

}  // namespace sluice::net
