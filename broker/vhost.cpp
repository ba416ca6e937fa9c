#include "broker/vhost.hpp"

#include <algorithm>

#include "broker/broker.hpp"
#include "broker/channel.hpp"
#include "broker/delayed_messages.hpp"
#include "broker/headers_match.hpp"
#include "net/amqp/properties.hpp"

namespace sluice::broker {

namespace {

bool reserved_name(std::string_view name) { return name.substr(0, 4) == "amq."; }
const char* yes_no(bool b) { return b ? "true" : "false"; }

// Queue arguments whose values must match on re-declaration (RabbitMQ's
// equivalence check); other arguments are kept but not compared.
constexpr std::string_view kEquivalentQueueArgs[] = {
    "x-message-ttl",        "x-expires",   "x-max-length",    "x-max-length-bytes",
    "x-overflow",           "x-dead-letter-exchange",         "x-dead-letter-routing-key",
    "x-max-priority",       "x-queue-type", "x-single-active-consumer", "x-queue-mode",
    "x-delivery-limit"};

std::string describe(const amqp::FieldValue* v) {
    if (!v) return "none";
    if (auto i = v->as_int()) return std::to_string(*i);
    if (auto s = v->as_string()) return std::string(*s);
    if (auto b = v->as_bool()) return *b ? "true" : "false";
    return std::string(1, v->type_code());
}

}  // namespace

VHost::VHost(Broker& broker, std::string name) : broker_(broker), name_(std::move(name)) {
    declare_builtin("", ExchangeType::direct);
    declare_builtin("amq.direct", ExchangeType::direct);
    declare_builtin("amq.fanout", ExchangeType::fanout);
    declare_builtin("amq.topic", ExchangeType::topic);
    declare_builtin("amq.headers", ExchangeType::headers);
    declare_builtin("amq.match", ExchangeType::headers);
    // RabbitMQ's firehose tracer publishes here; clients may bind to it but
    // not publish to it (internal).
    declare_builtin("amq.rabbitmq.trace", ExchangeType::topic, true);
}

VHost::~VHost() {
    for (auto& [name, queue] : queues_) queue->mark_deleted();
}

void VHost::declare_builtin(std::string name, ExchangeType type, bool internal) {
    auto ex = std::make_unique<Exchange>(name, type, true, false, internal, amqp::FieldTable{});
    exchanges_.emplace(std::move(name), std::move(ex));
}

Exchange* VHost::find_exchange(std::string_view name) const {
    auto it = exchanges_.find(name);
    return it == exchanges_.end() ? nullptr : it->second.get();
}

QueuePtr VHost::find_queue(std::string_view name) const {
    auto it = queues_.find(name);
    return it == queues_.end() ? nullptr : it->second;
}

std::string VHost::not_found_queue(std::string_view name) const {
    return "no queue '" + std::string(name) + "' in vhost '" + name_ + "'";
}
std::string VHost::not_found_exchange(std::string_view name) const {
    return "no exchange '" + std::string(name) + "' in vhost '" + name_ + "'";
}

Result<Exchange*> VHost::declare_exchange(std::string_view name, const ExchangeOptions& o) {
    if (name.empty())
        return amqp_error(reply::access_refused, "operation not permitted on the default exchange");
    // As RabbitMQ: an existing exchange, built-in ones included, is checked
    // for equivalence; the reserved prefix only stops creating one.
    if (Exchange* ex = find_exchange(name)) {
        auto inequivalent = [&](const char* arg, std::string got, std::string have) {
            return amqp_error(reply::precondition_failed,
                              "inequivalent arg '" + std::string(arg) + "' for exchange '" + std::string(name) +
                                  "' in vhost '" + name_ + "': received '" + got + "' but current is '" +
                                  have + "'");
        };
        if (ex->type() != o.type)
            return inequivalent("type", std::string(exchange_type_name(o.type)),
                                std::string(exchange_type_name(ex->type())));
        if (ex->durable() != o.durable) return inequivalent("durable", yes_no(o.durable), yes_no(ex->durable()));
        if (ex->auto_delete() != o.auto_delete)
            return inequivalent("auto_delete", yes_no(o.auto_delete), yes_no(ex->auto_delete()));
        if (ex->internal() != o.internal)
            return inequivalent("internal", yes_no(o.internal), yes_no(ex->internal()));
        if (auto error = alternate_exchange_inequivalence(*ex, o.arguments)) return *error;
        return ex;
    }
    if (reserved_name(name))
        return amqp_error(reply::access_refused,
                          "exchange name '" + std::string(name) + "' contains reserved prefix 'amq.*'");
    ExchangeType routing_type = o.type;
    if (o.type == ExchangeType::delayed) {
        DelayedTypeError e = parse_delayed_type(o.arguments, routing_type);
        if (e.code != 0) return amqp_error(e.code, std::move(e.text));
    }
    if (routing_type == ExchangeType::consistent_hash) {
        HashSource source;
        std::string error = parse_hash_source(o.arguments, source);
        if (!error.empty()) return amqp_error(reply::precondition_failed, std::move(error));
    }
    auto dedup = parse_dedup_arguments(o.arguments, "exchange", name, name_, o.type == ExchangeType::deduplication);
    if (auto* e = std::get_if<AmqpError>(&dedup)) return *e;
    auto ex = std::make_unique<Exchange>(std::string(name), o.type, o.durable, o.auto_delete, o.internal,
                                         o.arguments);
    Exchange* raw = ex.get();
    exchanges_.emplace(std::string(name), std::move(ex));
    attach_dedup(*raw);
    broker_.durability().put_exchange(*this, *raw);
    if (o.type == ExchangeType::delayed) attach_delayed(*raw, false);
    return raw;
}

void VHost::attach_delayed(Exchange& exchange, bool recovering) {
    auto delayed = std::make_shared<DelayedMessages>(*this, exchange);
    exchange.set_delayed(delayed);
    if (recovering || !broker_.durability().enabled()) return;
    delayed->set_log(broker_.next_queue_id());
    broker_.durability().put_delay_log(*this, exchange, delayed->log_id());
}

Status VHost::alternate_exchange_inequivalence(const Exchange& ex, const amqp::FieldTable& arguments) const {
    // RabbitMQ compares only `alternate-exchange` among an exchange's
    // arguments (rabbit_misc:assert_args_equivalence), with its texts: a
    // value alone is "'name'", a value against none "the value 'name' of
    // type 'longstr'".
    const amqp::FieldValue* got = arguments.find("alternate-exchange");
    const amqp::FieldValue* have = ex.arguments().find("alternate-exchange");
    if (!got && !have) return std::nullopt;
    if (got && have && *got == *have) return std::nullopt;
    auto render = [&](const amqp::FieldValue* v, bool alone) -> std::string {
        if (!v) return "none";
        std::string text = v->as_string() ? std::string(*v->as_string()) : describe(v);
        if (alone) return "'" + text + "'";
        return "the value '" + text + "' of type '" + std::string(erlang_type_name(*v)) + "'";
    };
    const bool both = got && have;
    return amqp_error(reply::precondition_failed, "inequivalent arg 'alternate-exchange' for exchange '" + ex.name() +
                                                      "' in vhost '" + name_ + "': received " + render(got, both) +
                                                      " but current is " + render(have, both));
}

void VHost::persist_binding(const Exchange& source, const Binding& b, bool add) {
    if (!source.durable()) return;
    bool durable_dest = b.destination.queue ? b.destination.queue->durable() && !b.destination.queue->exclusive()
                                            : b.destination.exchange->durable();
    if (!durable_dest) return;
    Durability& d = broker_.durability();
    if (add) d.put_binding(*this, source, b);
    else d.remove_binding(*this, source, b);
}

void VHost::remove_exchange_bindings(Exchange* exchange) {
    // Bindings from this exchange, and to it from others (exchange-to-exchange).
    for (const Binding& b : exchange->bindings()) persist_binding(*exchange, b, false);
    std::vector<Exchange*> sources;
    for (auto& [n, ex] : exchanges_) {
        if (ex.get() == exchange) continue;
        auto removed = ex->unbind_all(Destination{nullptr, exchange});
        for (const Binding& b : removed) persist_binding(*ex, b, false);
        if (!removed.empty()) sources.push_back(ex.get());
    }
    for (Exchange* s : sources) maybe_auto_delete(s);
}

void VHost::restore_exchange(const std::string& name, const ExchangeOptions& o) {
    if (find_exchange(name)) return;
    auto ex = std::make_unique<Exchange>(name, o.type, o.durable, o.auto_delete, o.internal, o.arguments);
    if (o.type == ExchangeType::delayed) attach_delayed(*ex, true);
    Exchange& raw = *ex;
    exchanges_.emplace(name, std::move(ex));
    attach_dedup(raw);
}

void VHost::attach_dedup(Exchange& ex) {
    if (!ex.dedup()) return;
    ex.dedup()->set_memory_cap(broker_.config().dedup_memory_keys);
    if (ex.durable()) broker_.durability().attach_dedup(*this, true, ex.name(), *ex.dedup());
}

void VHost::attach_dedup(Queue& q) {
    if (!q.dedup()) return;
    q.dedup()->set_memory_cap(broker_.config().dedup_memory_keys);
    if (q.durable() && !q.exclusive()) broker_.durability().attach_dedup(*this, false, q.name(), *q.dedup());
    if (q.dedup()->spills()) ++spilling_queue_windows_;
}

QueuePtr VHost::restore_queue(const std::string& name, QueueOptions o, uint64_t id) {
    broker_.saw_queue_id(id);
    auto parsed = parse_queue_arguments(o.arguments, name, name_, {o.durable, o.exclusive, o.auto_delete});
    if (auto* f = std::get_if<QueueArguments>(&parsed)) o.features = *f;
    auto q = std::make_shared<Queue>(*this, name, std::move(o), 0, id);
    queues_[name] = q;
    attach_dedup(*q);
    return q;
}

Status VHost::delete_exchange(std::string_view name, bool if_unused) {
    if (name.empty() || reserved_name(name))
        return amqp_error(reply::access_refused, "operation not permitted on exchange '" + std::string(name) + "'");
    auto it = exchanges_.find(name);
    if (it == exchanges_.end()) return std::nullopt;  // idempotent, as RabbitMQ
    Exchange* ex = it->second.get();
    if (if_unused && !ex->bindings().empty())
        return amqp_error(reply::precondition_failed,
                          "exchange '" + std::string(name) + "' in vhost '" + name_ + "' in use");
    remove_exchange_bindings(ex);
    broker_.durability().remove_exchange(*this, *ex);
    if (ex->dedup()) broker_.durability().remove_dedup(*ex->dedup());
    exchanges_.erase(it);
    return std::nullopt;
}

void VHost::maybe_auto_delete(Exchange* exchange) {
    if (!exchange->auto_delete() || !exchange->bindings().empty()) return;
    auto it = exchanges_.find(exchange->name());
    if (it == exchanges_.end()) return;
    remove_exchange_bindings(exchange);
    broker_.durability().remove_exchange(*this, *exchange);
    if (exchange->dedup()) broker_.durability().remove_dedup(*exchange->dedup());
    exchanges_.erase(it);
}

Result<QueuePtr> VHost::declare_queue(std::string_view name, QueueOptions o, uint64_t owner, bool& created) {
    created = false;
    auto parsed = parse_queue_arguments(o.arguments, name, name_, {o.durable, o.exclusive, o.auto_delete});
    if (auto* e = std::get_if<AmqpError>(&parsed)) return *e;
    o.features = std::get<QueueArguments>(std::move(parsed));
    if (QueuePtr q = find_queue(name)) {
        if ((q->exclusive() && q->owner() != owner) || q->exclusive() != o.exclusive)
            return amqp_error(reply::resource_locked,
                              "cannot obtain exclusive access to locked queue '" + std::string(name) +
                                  "' in vhost '" + name_ +
                                  "'. It could be originally declared on another connection or the exclusive "
                                  "property value does not match that of the original declaration.");
        auto inequivalent = [&](std::string_view arg, const std::string& got, const std::string& have) {
            return amqp_error(reply::precondition_failed,
                              "inequivalent arg '" + std::string(arg) + "' for queue '" + std::string(name) +
                                  "' in vhost '" + name_ + "': received '" + got + "' but current is '" +
                                  have + "'");
        };
        if (q->durable() != o.durable) return inequivalent("durable", yes_no(o.durable), yes_no(q->durable()));
        if (q->auto_delete() != o.auto_delete)
            return inequivalent("auto_delete", yes_no(o.auto_delete), yes_no(q->auto_delete()));
        for (std::string_view arg : kEquivalentQueueArgs) {
            const amqp::FieldValue* got = o.arguments.find(arg);
            const amqp::FieldValue* have = q->arguments().find(arg);
            if ((got == nullptr) != (have == nullptr) || (got && !(*got == *have)))
                return inequivalent(arg, describe(got), describe(have));
        }
        q->touch();
        ++broker_.stats().queues_declared;
        return q;
    }
    uint64_t exclusive_owner = o.exclusive ? owner : 0;
    if (o.features.type == QueueType::stream && !broker_.durability().enabled())
        return amqp_error(reply::precondition_failed, "queue '" + std::string(name) + "' in vhost '" + name_ +
                                                          "': a stream needs the durable store (no data directory)");
    auto q = std::make_shared<Queue>(*this, std::string(name), std::move(o), exclusive_owner, broker_.next_queue_id());
    queues_.emplace(std::string(name), q);
    attach_dedup(*q);
    broker_.durability().put_queue(*this, *q);
    q->start();
    created = true;
    ++broker_.stats().queues_declared;
    ++broker_.stats().queues_created;
    return q;
}

size_t VHost::delete_queue(const QueuePtr& queue) {
    auto it = queues_.find(queue->name());
    if (it == queues_.end() || it->second != queue) return 0;
    size_t messages = queue->ready_count();
    queues_.erase(it);
    ++broker_.stats().queues_deleted;
    std::vector<Exchange*> sources;
    for (auto& [n, ex] : exchanges_) {
        auto removed = ex->unbind_all(Destination{queue.get(), nullptr});
        for (const Binding& b : removed) persist_binding(*ex, b, false);
        if (!removed.empty()) sources.push_back(ex.get());
    }
    broker_.durability().remove_queue(*this, *queue);
    if (queue->dedup()) {
        broker_.durability().remove_dedup(*queue->dedup());
        if (queue->dedup()->spills() && spilling_queue_windows_ > 0) --spilling_queue_windows_;
    }
    for (Exchange* s : sources) maybe_auto_delete(s);
    for (const ConsumerPtr& c : queue->mark_deleted()) c->channel->on_consumer_cancelled_by_broker(c);
    return messages;
}

Status VHost::bind_queue(std::string_view queue, std::string_view exchange, std::string_view key,
                         const amqp::FieldTable& args) {
    QueuePtr q = find_queue(queue);
    if (!q) return amqp_error(reply::not_found, not_found_queue(queue));
    if (exchange.empty())
        return amqp_error(reply::access_refused, "operation not permitted on the default exchange");
    Exchange* ex = find_exchange(exchange);
    if (!ex) return amqp_error(reply::not_found, not_found_exchange(exchange));
    if (Status st = check_binding(*ex, key, args)) return st;
    if (ex->bind(Destination{q.get(), nullptr}, key, args)) persist_binding(*ex, ex->bindings().back(), true);
    return std::nullopt;
}

Status VHost::check_binding(const Exchange& source, std::string_view key, const amqp::FieldTable& args) {
    if (source.routing_type() == ExchangeType::consistent_hash) {
        uint32_t weight = 0;
        std::string error = validate_hash_weight(key, weight);
        if (error.empty()) return std::nullopt;
        return amqp_error(reply::precondition_failed, std::move(error));
    }
    if (source.routing_type() != ExchangeType::headers) return std::nullopt;
    std::string error = validate_headers_binding(args);
    if (error.empty()) return std::nullopt;
    return amqp_error(reply::precondition_failed, std::move(error));
}

Status VHost::unbind_queue(std::string_view queue, std::string_view exchange, std::string_view key,
                           const amqp::FieldTable& args) {
    if (exchange.empty())
        return amqp_error(reply::access_refused, "operation not permitted on the default exchange");
    // Removing a binding that does not exist is ok, even when its queue or
    // exchange does not exist either (RabbitMQ: teardown may repeat itself).
    QueuePtr q = find_queue(queue);
    Exchange* ex = find_exchange(exchange);
    if (!q || !ex) return std::nullopt;
    if (ex->unbind(Destination{q.get(), nullptr}, key, args)) {
        persist_binding(*ex, Binding{Destination{q.get(), nullptr}, std::string(key), args}, false);
        maybe_auto_delete(ex);
    }
    return std::nullopt;  // unbinding a missing binding is ok, as RabbitMQ
}

Status VHost::exchange_pair(std::string_view destination, std::string_view source, Exchange*& dst,
                            Exchange*& src) const {
    if (destination.empty() || source.empty())
        return amqp_error(reply::access_refused, "operation not permitted on the default exchange");
    dst = find_exchange(destination);
    if (!dst) return amqp_error(reply::not_found, not_found_exchange(destination));
    src = find_exchange(source);
    if (!src) return amqp_error(reply::not_found, not_found_exchange(source));
    return std::nullopt;
}

Status VHost::bind_exchange(std::string_view destination, std::string_view source, std::string_view key,
                            const amqp::FieldTable& args) {
    Exchange *dst = nullptr, *src = nullptr;
    if (Status st = exchange_pair(destination, source, dst, src)) return st;
    if (Status st = check_binding(*src, key, args)) return st;
    if (src->bind(Destination{nullptr, dst}, key, args)) persist_binding(*src, src->bindings().back(), true);
    return std::nullopt;
}

Status VHost::unbind_exchange(std::string_view destination, std::string_view source, std::string_view key,
                              const amqp::FieldTable& args) {
    if (destination.empty() || source.empty())
        return amqp_error(reply::access_refused, "operation not permitted on the default exchange");
    Exchange* dst = find_exchange(destination);
    Exchange* src = find_exchange(source);
    if (!dst || !src) return std::nullopt;  // as queue.unbind: nothing to remove is ok
    if (src->unbind(Destination{nullptr, dst}, key, args)) {
        persist_binding(*src, Binding{Destination{nullptr, dst}, std::string(key), args}, false);
        maybe_auto_delete(src);
    }
    return std::nullopt;
}

void VHost::route(const Exchange& exchange, std::string_view routing_key,
                  const amqp::BasicProperties* (*properties)(void*), void* properties_ctx, std::vector<Queue*>& out,
                  const std::vector<std::string>& extra_keys) {
    ++route_epoch_;
    route_holds_.clear();
    if (exchange.name().empty()) {  // the default exchange: the queue named by each key
        auto add = [&](std::string_view key) {
            auto it = queues_.find(key);
            if (it == queues_.end() || it->second->route_mark == route_epoch_) return;
            it->second->route_mark = route_epoch_;
            out.push_back(it->second.get());
        };
        add(routing_key);
        for (const std::string& key : extra_keys) add(key);
        return;
    }
    // Breadth-first through exchange-to-exchange bindings; each exchange is
    // visited once, so cycles terminate. An exchange that selects nothing
    // hands the message to its alternate exchange (RabbitMQ's rule, applied
    // at each exchange on the way).
    route_exchanges_.clear();
    route_exchanges_.push_back(const_cast<Exchange*>(&exchange));
    for (size_t i = 0; i < route_exchanges_.size(); ++i) {
        const Exchange* ex = route_exchanges_[i];
        route_scratch_.clear();
        const amqp::BasicProperties* props = ex->needs_properties() ? properties(properties_ctx) : nullptr;
        if (ex->delayed()) {
            auto delay = x_delay(props && props->headers ? &*props->headers : nullptr);
            if (delay && *delay > 0 && *delay <= kMaxDelayMs) {
                route_holds_.push_back(Hold{ex, *delay});
                continue;
            }
        }
        ex->route(routing_key, props, route_scratch_);
        if (ex->uses_routing_key())
            for (const std::string& key : extra_keys) ex->route(key, props, route_scratch_);
        if (route_scratch_.empty() && !ex->alternate_exchange().empty())
            if (Exchange* ae = find_exchange(ex->alternate_exchange())) route_scratch_.push_back(Destination{nullptr, ae});
        for (Destination d : route_scratch_) {
            if (d.queue) {
                if (d.queue->route_mark != route_epoch_) {
                    d.queue->route_mark = route_epoch_;
                    out.push_back(d.queue);
                }
            } else if (std::find(route_exchanges_.begin(), route_exchanges_.end(), d.exchange) ==
                       route_exchanges_.end()) {
                route_exchanges_.push_back(d.exchange);
            }
        }
    }
}

}  // namespace sluice::broker
