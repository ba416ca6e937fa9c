// /api/definitions[/{vhost}]: export and import of the topology in
// RabbitMQ's definitions format (users, vhosts, permissions, exchanges,
// queues, bindings). Import checks the whole document before changing
// anything, then declares through the same VHost methods as AMQP; it answers
// once the durable declares are synced.
#include <algorithm>

#include "broker/broker.hpp"
#include "broker/vhost.hpp"
#include "net/management_api_internal.hpp"

namespace sluice::net::mgmt {

namespace {

bool exported_exchange(const broker::Exchange& e) { return !e.name().empty() && e.name().substr(0, 4) != "amq."; }

json::object export_definitions(State& s, const broker::VHost& v, bool whole_broker) {
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

    json::array qa, ea, ba;
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
    json::object d;
    d["product_name"] = "Sluice";
    d["product_version"] = SLUICE_VERSION;
    if (whole_broker) {
        json::object user;
        user["name"] = utf8(s.broker.config().default_user);
        user["password_hash"] = "";
        user["hashing_algorithm"] = "rabbit_password_hashing_sha256";
        user["tags"] = json::array{"administrator"};
        user["limits"] = json::object();
        d["users"] = json::array{user};
        json::object vh;
        vh["name"] = utf8(v.name());
        d["vhosts"] = json::array{vh};
        json::object perm;
        perm["user"] = utf8(s.broker.config().default_user);
        perm["vhost"] = utf8(v.name());
        perm["configure"] = ".*";
        perm["write"] = ".*";
        perm["read"] = ".*";
        d["permissions"] = json::array{perm};
        d["topic_permissions"] = json::array();
        d["global_parameters"] = json::array();
    }
    d["parameters"] = json::array();
    d["policies"] = json::array();
    d["queues"] = std::move(qa);
    d["exchanges"] = std::move(ea);
    d["bindings"] = std::move(ba);
    return d;
}

struct QueueDef {
    broker::VHost* vhost;
    std::string name;
    broker::QueueOptions options;
};
struct ExchangeDef {
    broker::VHost* vhost;
    std::string name;
    broker::ExchangeOptions options;
};
struct BindingDef {
    broker::VHost* vhost;
    std::string source, destination, key;
    bool to_queue;
    amqp::FieldTable arguments;
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
        for (std::string_view k : {"policies", "parameters", "global_parameters", "topic_permissions"})
            if (const json::array* a = items(k); a && !a->empty())
                warnings_.push_back(std::string(k) + " are not supported yet and were ignored");
        if (const json::array* a = items("vhosts"))
            for (const auto& v : *a) {
                std::string name;
                if (!v.is_object()) return fail(error, "vhosts");
                if (!get_string(v.get_object(), "name", name, error)) return false;
                if (!s_.broker.find_vhost(name)) {
                    error = bad_request("vhost '" + name + "' does not exist; Sluice has only '/'");
                    return false;
                }
            }
        const std::string& default_user = s_.broker.config().default_user;
        if (const json::array* a = items("users"))
            for (const auto& u : *a) {
                std::string name;
                if (!u.is_object()) return fail(error, "users");
                if (!get_string(u.get_object(), "name", name, error)) return false;
                if (name != default_user) warnings_.push_back("user '" + name + "' was not created (only '" +
                                                              default_user + "' exists for now)");
            }
        if (const json::array* a = items("permissions"))
            for (const auto& u : *a) {
                std::string user;
                if (!u.is_object()) return fail(error, "permissions");
                if (!get_string(u.get_object(), "user", user, error)) return false;
                if (user != default_user) warnings_.push_back("permissions of user '" + user + "' were ignored");
            }
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
        durable = false;
        for (ExchangeDef& e : exchanges_) {
            auto r = e.vhost->declare_exchange(e.name, e.options);
            if (auto* err = std::get_if<broker::AmqpError>(&r)) return refused(error, *err, "exchange", e.name);
            durable |= e.options.durable;
        }
        for (QueueDef& q : queues_) {
            bool created = false, is_durable = q.options.durable;
            auto r = q.vhost->declare_queue(q.name, std::move(q.options), 0, created);
            if (auto* err = std::get_if<broker::AmqpError>(&r)) return refused(error, *err, "queue", q.name);
            durable |= is_durable;
        }
        for (BindingDef& b : bindings_) {
            broker::Status st = b.to_queue ? b.vhost->bind_queue(b.destination, b.source, b.key, b.arguments)
                                           : b.vhost->bind_exchange(b.destination, b.source, b.key, b.arguments);
            if (st) return refused(error, *st, "binding from", b.source);
            durable = true;
        }
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

    // The item's vhost: its "vhost" field, else the one in the path.
    bool item_vhost(const json::object& o, broker::VHost*& out, HttpResponse& error) {
        std::string name;
        if (!get_string(o, "vhost", name, error)) return false;
        if (!o.contains("vhost")) {
            out = path_vhost_ ? path_vhost_ : s_.broker.find_vhost("/");
            return true;
        }
        out = s_.broker.find_vhost(name);
        if (!out) {
            error = bad_request("vhost '" + name + "' does not exist; Sluice has only '/'");
            return false;
        }
        if (path_vhost_ && out != path_vhost_) {
            error = bad_request("an item names vhost '" + name + "', not the one in the path");
            return false;
        }
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
        if (d.name.empty() || (d.name.substr(0, 4) == "amq." && d.vhost->find_exchange(d.name))) return true;
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
        broker::VHost* v = path_vhost ? path_vhost : s.broker.find_vhost("/");
        if (!v) return reply(not_found("no vhost '/'"));
        HttpResponse resp = json_response(200, export_definitions(s, *v, path_vhost == nullptr));
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
