// /api/queues, /api/exchanges and /api/bindings: list, show, declare, delete,
// bind, unbind, purge, get and publish. Every change goes through the same
// VHost methods as AMQP's queue.declare & co., so validation, reply codes and
// durability are the same; a change to a durable entity answers only once it
// is synced, as the AMQP -ok methods do.
#include <algorithm>

#include "broker/broker.hpp"
#include "broker/durability.hpp"
#include "broker/operations.hpp"
#include "broker/vhost.hpp"
#include "net/amqp/properties.hpp"
#include "net/management_api_internal.hpp"

namespace sluice::net::mgmt {

namespace {

constexpr size_t kMaxGetCount = 10000;
constexpr size_t kMaxGetBytes = 16u << 20;  // stop fetching past this much payload

std::vector<const broker::Queue*> sorted_queues(const broker::VHost& v) {
    std::vector<const broker::Queue*> qs;
    qs.reserve(v.queues().size());
    for (const auto& [name, q] : v.queues()) qs.push_back(q.get());
    std::sort(qs.begin(), qs.end(), [](auto* a, auto* b) { return a->name() < b->name(); });
    return qs;
}

std::vector<const broker::Exchange*> sorted_exchanges(const broker::VHost& v) {
    std::vector<const broker::Exchange*> es;
    es.reserve(v.exchanges().size());
    for (const auto& [name, e] : v.exchanges()) es.push_back(e.get());
    std::sort(es.begin(), es.end(), [](auto* a, auto* b) { return a->name() < b->name(); });
    return es;
}

// Resolves path[1] to a vhost or answers 404.
broker::VHost* vhost_or_404(State& s, const Request& r, const Reply& reply) {
    broker::VHost* v = s.broker.find_vhost(r.path[1]);
    if (!v) reply(not_found("no vhost '" + r.path[1] + "'"));
    return v;
}

// The vhosts a list shows: the one in the path (empty and answered 404 if
// it does not exist), or every vhost the user sees.
std::vector<broker::VHost*> listed_vhosts(State& s, const Request& r, const Reply& reply) {
    std::vector<broker::VHost*> out;
    if (r.path.size() == 2) {
        if (broker::VHost* v = vhost_or_404(s, r, reply)) out.push_back(v);
        return out;
    }
    for (broker::VHost* v : s.broker.vhosts())
        if (sees_vhost(s, r, v->name())) out.push_back(v);
    return out;
}

// --- messages -------------------------------------------------------------------------

json::object message_json(const broker::QueuedMessage& qm, size_t remaining, bool base64, int64_t truncate) {
    const broker::Message& m = *qm.message;
    json::object o;
    o["payload_bytes"] = m.body_size();
    o["redelivered"] = qm.redelivered;
    o["exchange"] = utf8(m.exchange());
    o["routing_key"] = utf8(m.routing_key());
    o["message_count"] = remaining;
    amqp::BasicProperties props;
    o["properties"] = amqp::decode_properties(m.properties(), props) ? properties_json(props) : json::object();
    std::string_view body = m.body();
    if (truncate >= 0 && body.size() > size_t(truncate)) body = body.substr(0, size_t(truncate));
    if (!base64 && valid_utf8(body)) {
        o["payload"] = json::string(body);
        o["payload_encoding"] = "string";
    } else {
        o["payload"] = base64_encode(body);
        o["payload_encoding"] = "base64";
    }
    return o;
}

// POST /api/queues/{vhost}/{name}/get
void get_messages(State& s, const Request& r, const broker::QueuePtr& q, const Reply& reply) {
    json::object body;
    HttpResponse error;
    if (!parse_body(r, body, error)) return reply(error);
    int64_t count = 1, truncate = -1;
    std::string ackmode, encoding = "auto";
    if (!get_int(body, "count", count, error) || !get_string(body, "ackmode", ackmode, error) ||
        !get_string(body, "encoding", encoding, error) || !get_int(body, "truncate", truncate, error))
        return reply(error);
    if (count < 1 || size_t(count) > kMaxGetCount)
        return reply(bad_request("'count' must be from 1 to " + std::to_string(kMaxGetCount)));
    broker::GetAckMode mode;
    if (ackmode == "ack_requeue_true") mode = broker::GetAckMode::ack_requeue_true;
    else if (ackmode == "ack_requeue_false") mode = broker::GetAckMode::ack_requeue_false;
    else if (ackmode == "reject_requeue_true") mode = broker::GetAckMode::reject_requeue_true;
    else if (ackmode == "reject_requeue_false") mode = broker::GetAckMode::reject_requeue_false;
    else
        return reply(bad_request("'ackmode' must be ack_requeue_true, ack_requeue_false, reject_requeue_true or "
                                 "reject_requeue_false"));
    if (encoding != "auto" && encoding != "base64") return reply(bad_request("'encoding' must be auto or base64"));
    // The answer may come after a read of the queue's head from disk (the
    // broker thread does not wait for it).
    auto out = std::make_shared<json::array>();
    broker::get_messages(
        q, mode, size_t(count), kMaxGetBytes,
        [out, base64 = encoding == "base64", truncate](const broker::QueuedMessage& qm, size_t ready_left) {
            out->push_back(message_json(qm, ready_left, base64, truncate));
        },
        [&s, out, reply](bool removed_stored) { reply_when_synced(s, removed_stored, json_response(200, *out), reply); });
}

void publish_and_reply(State& s, broker::VHost& v, const broker::Exchange& ex, const broker::MessagePtr& msg,
                       const Reply& reply) {
    broker::PublishResult res = broker::publish_message(v, ex, msg);
    json::object o;
    o["routed"] = res.routed;
    reply_when_synced(s, res.stored, json_response(200, o), reply);
}

// POST /api/exchanges/{vhost}/{name}/publish
void publish(State& s, const Request& r, broker::VHost& v, const broker::Exchange& ex, const Reply& reply) {
    json::object body;
    HttpResponse error;
    if (!parse_body(r, body, error)) return reply(error);
    std::string routing_key, payload, encoding = "string";
    if (!get_string(body, "routing_key", routing_key, error) || !get_string(body, "payload", payload, error) ||
        !get_string(body, "payload_encoding", encoding, error))
        return reply(error);
    if (!body.contains("routing_key")) return reply(bad_request("'routing_key' is missing"));
    if (!body.contains("payload")) return reply(bad_request("'payload' is missing"));
    if (!check_short("routing_key", routing_key, error)) return reply(error);
    if (encoding == "base64") {
        std::string decoded;
        if (!base64_decode(payload, decoded)) return reply(bad_request("'payload' is not valid base64"));
        payload = std::move(decoded);
    } else if (encoding != "string") {
        return reply(bad_request("'payload_encoding' must be string or base64"));
    }
    if (payload.size() > s.broker.config().max_message_size)
        return reply(bad_request("payload larger than the configured max message size"));
    amqp::BasicProperties props;
    if (auto it = body.find("properties"); it != body.end() && !it->value().is_null()) {
        if (!it->value().is_object()) return reply(bad_request("'properties' must be an object"));
        std::string why;
        if (!json_properties(it->value().get_object(), props, why)) return reply(bad_request(why));
    }
    if (ex.internal())
        return reply(error_response(403, "access_refused", "cannot publish to internal exchange '" + ex.name() +
                                                              "' in vhost '" + v.name() + "'"));
    std::string raw;
    amqp::encode_properties(raw, props);
    auto built = std::make_shared<broker::Message>(ex.name(), routing_key, raw, payload.size());
    built->append_body(payload);
    // The checks basic.publish makes (user_id, expiration), the same code.
    if (broker::Status st = broker::prepare_message(r.user, built)) return reply(from_amqp_error(*st));
    broker::MessagePtr msg = std::move(built);
    // As basic.publish: a key that may be in the disk part of a durable
    // deduplication window is looked up off the broker thread first.
    std::shared_ptr<std::vector<broker::DedupLookup>> lookups;
    if (v.dedup_lookups(ex, msg, lookups)) {
        s.broker.durability().read_dedup_off_thread(
            lookups, [&s, vhost = v.name(), exchange = ex.name(), msg, lookups, reply] {
                broker::VHost* v = s.broker.find_vhost(vhost);
                const broker::Exchange* ex = v ? v->find_exchange(exchange) : nullptr;
                if (!ex) return reply(not_found("no exchange '" + exchange + "' in vhost '" + vhost + "'"));
                v->finish_dedup_lookups(*lookups);
                publish_and_reply(s, *v, *ex, msg, reply);
            });
        return;
    }
    publish_and_reply(s, v, ex, msg, reply);
}

// --- queues ----------------------------------------------------------------------------

void put_queue(State& s, const Request& r, broker::VHost& v, const std::string& name, const Reply& reply) {
    json::object body;
    HttpResponse error;
    if (!parse_body(r, body, error)) return reply(error);
    broker::QueueOptions o;
    o.durable = true;  // as RabbitMQ's management API
    bool exclusive = false;
    if (!get_bool(body, "durable", o.durable, error) || !get_bool(body, "auto_delete", o.auto_delete, error) ||
        !get_bool(body, "exclusive", exclusive, error) || !get_table(body, "arguments", o.arguments, error))
        return reply(error);
    if (exclusive) return reply(bad_request("an exclusive queue needs an AMQP connection to own it"));
    if (name.empty()) return reply(bad_request("the queue name is empty"));
    if (!check_short("queue name", name, error)) return reply(error);
    bool created = false;
    auto who = caller_in(s, r, v.name());
    auto res = broker::declare_queue(who.caller, v, name, std::move(o), false, created);
    if (auto* e = std::get_if<broker::AmqpError>(&res)) return reply(from_amqp_error(*e));
    const broker::QueuePtr& q = std::get<broker::QueuePtr>(res);
    HttpResponse ok = created ? json_response(201, queue_json(s, *q)) : no_content();
    reply_when_synced(s, q->durable(), std::move(ok), reply);
}

void delete_queue(State& s, const Request& r, broker::VHost& v, broker::QueuePtr q, const Reply& reply) {
    bool durable = q->durable();
    auto who = caller_in(s, r, v.name());
    auto res = broker::delete_queue(who.caller, v, q, r.flag("if-unused"), r.flag("if-empty"));
    if (auto* e = std::get_if<broker::AmqpError>(&res)) return reply(from_amqp_error(*e));
    reply_when_synced(s, durable, no_content(), reply);
}

json::array queue_bindings(const broker::VHost& v, const broker::Queue& q) {
    json::array a;
    a.push_back(default_binding_json(v, q));
    for (const broker::Exchange* e : sorted_exchanges(v))
        for (const broker::Binding& b : e->bindings())
            if (b.destination.queue == &q) a.push_back(binding_json(v, *e, b));
    return a;
}

json::array exchange_bindings(const broker::VHost& v, const broker::Exchange& ex, bool as_source) {
    json::array a;
    if (as_source) {
        if (ex.name().empty())
            for (const broker::Queue* q : sorted_queues(v)) a.push_back(default_binding_json(v, *q));
        for (const broker::Binding& b : ex.bindings()) a.push_back(binding_json(v, ex, b));
        return a;
    }
    for (const broker::Exchange* e : sorted_exchanges(v))
        for (const broker::Binding& b : e->bindings())
            if (b.destination.exchange == &ex) a.push_back(binding_json(v, *e, b));
    return a;
}

void put_exchange(State& s, const Request& r, broker::VHost& v, const std::string& name, const Reply& reply) {
    json::object body;
    HttpResponse error;
    if (!parse_body(r, body, error)) return reply(error);
    broker::ExchangeOptions o;
    o.durable = true;  // as RabbitMQ's management API
    std::string type;
    if (!get_string(body, "type", type, error) || !get_bool(body, "durable", o.durable, error) ||
        !get_bool(body, "auto_delete", o.auto_delete, error) || !get_bool(body, "internal", o.internal, error) ||
        !get_table(body, "arguments", o.arguments, error))
        return reply(error);
    if (type.empty()) return reply(bad_request("'type' is missing (direct, fanout, topic, headers, x-consistent-hash, x-delayed-message or x-message-deduplication)"));
    if (!broker::parse_exchange_type(type, o.type))
        return reply(bad_request("unknown exchange type '" + type + "' (direct, fanout, topic, headers, x-consistent-hash, x-delayed-message or x-message-deduplication)"));
    if (!check_short("exchange name", name, error)) return reply(error);
    auto who = caller_in(s, r, v.name());
    bool created = false;
    auto res = broker::declare_exchange(who.caller, v, name, o, created);
    if (auto* e = std::get_if<broker::AmqpError>(&res)) return reply(from_amqp_error(*e));
    const broker::Exchange* ex = std::get<broker::Exchange*>(res);
    HttpResponse ok = created ? json_response(201, exchange_json(v, *ex)) : no_content();
    reply_when_synced(s, ex->durable(), std::move(ok), reply);
}

}  // namespace

bool publish_message(broker::VHost& v, const broker::Exchange& ex, std::string_view routing_key,
                     const std::string& properties, std::string_view payload, bool& stored) {
    auto built = std::make_shared<broker::Message>(ex.name(), routing_key, properties, payload.size());
    built->append_body(payload);
    broker::PublishResult r = broker::publish_message(v, ex, std::move(built));
    stored = r.stored;
    return r.routed;
}

void handle_queues(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    const std::string& m = r.method;
    const bool get = m == "GET" || m == "HEAD";
    if (p.size() <= 2) {
        if (!get) return reply(method_not_allowed("GET, HEAD"));
        json::array a;
        for (broker::VHost* v : listed_vhosts(s, r, reply)) {
            a.reserve(a.size() + v->queues().size());
            for (const broker::Queue* q : sorted_queues(*v)) a.push_back(queue_json(s, *q));
        }
        return reply(list_response(r, std::move(a)));
    }
    broker::VHost* v = vhost_or_404(s, r, reply);
    if (!v) return;
    const std::string& name = p[2];
    broker::QueuePtr q = v->find_queue(name);
    if (p.size() == 3) {
        if (m == "PUT") return put_queue(s, r, *v, name, reply);
        if (!get && m != "DELETE") return reply(method_not_allowed("GET, HEAD, PUT, DELETE"));
        if (!q) return reply(not_found(v->not_found_queue(name)));
        if (m == "DELETE") return delete_queue(s, r, *v, q, reply);
        return reply(json_response(200, queue_json(s, *q)));
    }
    if (p.size() != 4) return reply(not_found("Not Found"));
    const std::string& what = p[3];
    const char* allowed = what == "bindings" ? "GET, HEAD" : what == "contents" ? "DELETE" : what == "get" ? "POST" : "";
    if (!*allowed) return reply(not_found("Not Found"));
    if ((what == "bindings" && !get) || (what == "contents" && m != "DELETE") || (what == "get" && m != "POST"))
        return reply(method_not_allowed(allowed));
    if (!q) return reply(not_found(v->not_found_queue(name)));
    if (what == "bindings") return reply(list_response(r, queue_bindings(*v, *q)));
    if (what == "contents") {
        auto who = caller_in(s, r, v->name());
        auto res = broker::purge_queue(who.caller, *v, name);
        if (auto* e = std::get_if<broker::AmqpError>(&res)) return reply(from_amqp_error(*e));
        return reply_when_synced(s, q->durable(), no_content(), reply);
    }
    // Get, as over AMQP, only on the owner's connection.
    if (broker::Status st = broker::check_exclusive_access(*q, 0)) return reply(from_amqp_error(*st));
    return get_messages(s, r, q, reply);
}

void handle_exchanges(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    const std::string& m = r.method;
    const bool get = m == "GET" || m == "HEAD";
    if (p.size() <= 2) {
        if (!get) return reply(method_not_allowed("GET, HEAD"));
        json::array a;
        for (broker::VHost* v : listed_vhosts(s, r, reply))
            for (const broker::Exchange* e : sorted_exchanges(*v)) a.push_back(exchange_json(*v, *e));
        return reply(list_response(r, std::move(a)));
    }
    broker::VHost* v = vhost_or_404(s, r, reply);
    if (!v) return;
    const std::string name(exchange_from_path(p[2]));
    broker::Exchange* ex = v->find_exchange(name);
    if (p.size() == 3) {
        if (m == "PUT") return put_exchange(s, r, *v, name, reply);
        if (!get && m != "DELETE") return reply(method_not_allowed("GET, HEAD, PUT, DELETE"));
        if (!ex) return reply(not_found(v->not_found_exchange(name)));
        if (m == "DELETE") {
            bool durable = ex->durable();
            auto who = caller_in(s, r, v->name());
            if (broker::Status st = broker::delete_exchange(who.caller, *v, name, r.flag("if-unused")))
                return reply(from_amqp_error(*st));
            return reply_when_synced(s, durable, no_content(), reply);
        }
        return reply(json_response(200, exchange_json(*v, *ex)));
    }
    if (p.size() == 4 && p[3] == "publish") {
        if (m != "POST") return reply(method_not_allowed("POST"));
        if (!ex) return reply(not_found(v->not_found_exchange(name)));
        return publish(s, r, *v, *ex, reply);
    }
    if (p.size() == 5 && p[3] == "bindings" && (p[4] == "source" || p[4] == "destination")) {
        if (!get) return reply(method_not_allowed("GET, HEAD"));
        if (!ex) return reply(not_found(v->not_found_exchange(name)));
        return reply(list_response(r, exchange_bindings(*v, *ex, p[4] == "source")));
    }
    return reply(not_found("Not Found"));
}

void handle_bindings(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    const std::string& m = r.method;
    const bool get = m == "GET" || m == "HEAD";
    if (p.size() <= 2) {
        if (!get) return reply(method_not_allowed("GET, HEAD"));
        json::array a;
        for (broker::VHost* v : listed_vhosts(s, r, reply)) {
            for (const broker::Queue* q : sorted_queues(*v)) a.push_back(default_binding_json(*v, *q));
            for (const broker::Exchange* e : sorted_exchanges(*v))
                for (const broker::Binding& b : e->bindings()) a.push_back(binding_json(*v, *e, b));
        }
        return reply(list_response(r, std::move(a)));
    }
    // /api/bindings/{vhost}/e/{source}/{q|e}/{destination}[/{props}]
    if (p.size() < 6 || p.size() > 7 || p[2] != "e" || (p[4] != "q" && p[4] != "e"))
        return reply(not_found("Not Found"));
    broker::VHost* v = vhost_or_404(s, r, reply);
    if (!v) return;
    const std::string source(exchange_from_path(p[3]));
    const bool to_queue = p[4] == "q";
    const std::string& dest = p[5];
    if (p.size() == 6 && !get && m != "POST") return reply(method_not_allowed("GET, HEAD, POST"));
    if (p.size() == 7 && !get && m != "DELETE") return reply(method_not_allowed("GET, HEAD, DELETE"));
    broker::Exchange* ex = v->find_exchange(source);
    if (!ex) return reply(not_found(v->not_found_exchange(source)));
    broker::QueuePtr q = to_queue ? v->find_queue(dest) : nullptr;
    broker::Exchange* dex = to_queue ? nullptr : v->find_exchange(dest);
    if (to_queue && !q) return reply(not_found(v->not_found_queue(dest)));
    if (!to_queue && !dex) return reply(not_found(v->not_found_exchange(dest)));
    const broker::Destination target{q.get(), dex};
    const bool durable = ex->durable() && (to_queue ? q->durable() : dex->durable());

    if (p.size() == 6 && m == "POST") {
        json::object body;
        HttpResponse error;
        if (!parse_body(r, body, error)) return reply(error);
        std::string key;
        amqp::FieldTable args;
        if (!get_string(body, "routing_key", key, error) || !get_table(body, "arguments", args, error))
            return reply(error);
        if (!check_short("routing_key", key, error)) return reply(error);
        auto who = caller_in(s, r, v->name());
        broker::Status st = to_queue ? broker::bind_queue(who.caller, *v, dest, source, key, args, true)
                                     : broker::bind_exchange(who.caller, *v, dest, source, key, args, true);
        if (st) return reply(from_amqp_error(*st));
        HttpResponse created = no_content();
        created.status = 201;
        created.headers.emplace_back("Location", "/api/bindings/" + url_encode(v->name()) + "/e/" +
                                                     url_encode(exchange_path_name(source)) + "/" + p[4] + "/" +
                                                     url_encode(dest) + "/" + url_encode(properties_key(key, args)));
        return reply_when_synced(s, durable, std::move(created), reply);
    }
    // The bindings between the two (and the default exchange's implicit one).
    json::array matches;
    std::vector<const broker::Binding*> found;
    if (source.empty() && to_queue) {
        json::object d = default_binding_json(*v, *q);
        if (p.size() == 6 || properties_key(q->name(), {}) == p[6]) matches.push_back(std::move(d));
    }
    for (const broker::Binding& b : ex->bindings()) {
        if (!(b.destination == target)) continue;
        if (p.size() == 7 && properties_key(b.key, b.arguments) != p[6]) continue;
        found.push_back(&b);
        matches.push_back(binding_json(*v, *ex, b));
    }
    if (p.size() == 6) return reply(list_response(r, std::move(matches)));
    if (matches.empty()) return reply(not_found("no binding with properties key '" + p[6] + "'"));
    if (get) return reply(json_response(200, matches[0]));
    if (found.empty())
        return reply(error_response(403, "access_refused", "operation not permitted on the default exchange"));
    const std::string key = found[0]->key;
    const amqp::FieldTable args = found[0]->arguments;
    auto who = caller_in(s, r, v->name());
    broker::Status st = to_queue ? broker::bind_queue(who.caller, *v, dest, source, key, args, false)
                                 : broker::bind_exchange(who.caller, *v, dest, source, key, args, false);
    if (st) return reply(from_amqp_error(*st));
    reply_when_synced(s, durable, no_content(), reply);
}

}  // namespace sluice::net::mgmt
