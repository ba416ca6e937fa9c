// exchange.* and queue.* handlers.
#include "broker/broker.hpp"
#include "broker/channel_send.hpp"
#include "broker/operations.hpp"
#include "broker/session.hpp"
#include "broker/vhost.hpp"
#include "net/amqp/methods.hpp"

namespace sluice::broker {

namespace m = amqp::method;

namespace {
constexpr std::string_view kReplyQueue = "amq.rabbitmq.reply-to";
}

std::string_view Channel::resolve_queue_name(std::string_view name) const {
    return name.empty() ? std::string_view(last_queue_) : name;
}

Status Channel::check_exclusive_access(const Queue& queue) const {
    return broker::check_exclusive_access(queue, session_.id());
}

QueuePtr Channel::resolve_queue(std::string_view name, Status& error) {
    std::string_view n = resolve_queue_name(name);
    if (n.empty()) {
        error = amqp_error(reply::not_found, "no previously declared queue");
        return nullptr;
    }
    QueuePtr q = vhost_.find_queue(n);
    if (!q) {
        error = amqp_error(reply::not_found, vhost_.not_found_queue(n));
        return nullptr;
    }
    error = check_exclusive_access(*q);
    return error ? nullptr : q;
}

void Channel::reply_when_durable(bool durable, std::function<void()> reply) {
    if (durable && session_.broker().durability().enabled()) reply_after_sync(std::move(reply));
    else reply();
}

Status Channel::exchange_declare(const m::ExchangeDeclare& d) {
    if (d.passive) {
        if (d.exchange.empty())  // as RabbitMQ, the passive form too
            return amqp_error(reply::access_refused, "operation not permitted on the default exchange");
        if (!vhost_.find_exchange(d.exchange))
            return amqp_error(reply::not_found, vhost_.not_found_exchange(d.exchange));
        if (!d.no_wait) send(m::ExchangeDeclareOk{});
        return std::nullopt;
    }
    ExchangeOptions o;
    if (!parse_exchange_type(d.type, o.type))
        return amqp_error(reply::command_invalid, "unknown exchange type '" + std::string(d.type) + "'");
    o.durable = d.durable;
    o.auto_delete = d.auto_delete;
    o.internal = d.internal;
    o.arguments = d.arguments;
    bool created = false;
    auto r = broker::declare_exchange(caller(), vhost_, d.exchange, o, created);
    if (auto* e = std::get_if<AmqpError>(&r)) return *e;
    if (!d.no_wait) reply_when_durable(o.durable, [this] { send(m::ExchangeDeclareOk{}); });
    return std::nullopt;
}

Status Channel::exchange_delete(const m::ExchangeDelete& d) {
    if (Status st = broker::delete_exchange(caller(), vhost_, d.exchange, d.if_unused)) return st;
    if (!d.no_wait) reply_when_durable(true, [this] { send(m::ExchangeDeleteOk{}); });
    return std::nullopt;
}

Status Channel::exchange_bind(const m::ExchangeBind& d) {
    if (Status st = broker::bind_exchange(caller(), vhost_, d.destination, d.source, d.routing_key, d.arguments, true))
        return st;
    if (!d.no_wait) reply_when_durable(true, [this] { send(m::ExchangeBindOk{}); });
    return std::nullopt;
}

Status Channel::exchange_unbind(const m::ExchangeUnbind& d) {
    if (Status st = broker::bind_exchange(caller(), vhost_, d.destination, d.source, d.routing_key, d.arguments, false))
        return st;
    if (!d.no_wait) reply_when_durable(true, [this] { send(m::ExchangeUnbindOk{}); });
    return std::nullopt;
}

Status Channel::queue_declare(const m::QueueDeclare& d) {
    auto reply_ok = [&](std::string_view name, size_t messages, size_t consumers, bool durable = false) {
        if (d.no_wait) return;
        reply_when_durable(durable, [this, name = std::string(name), messages, consumers] {
            m::QueueDeclareOk ok;
            ok.queue = name;
            ok.message_count = static_cast<uint32_t>(messages);
            ok.consumer_count = static_cast<uint32_t>(consumers);
            send(ok);
        });
    };
    if (d.queue == kReplyQueue) {  // the direct reply-to pseudo-queue always "exists"
        reply_ok(d.queue, 0, 0);
        return std::nullopt;
    }
    if (d.passive) {
        Status error;
        QueuePtr q = resolve_queue(d.queue, error);
        if (!q) return error;
        q->touch();  // a declare, passive too, is a use (x-expires), as in RabbitMQ
        // For a durable queue even the passive form answers only once every
        // earlier write is synced, acks included: "ack, then declare" is a
        // client's way to know its acks are on disk.
        reply_ok(q->name(), q->ready_count(), q->consumer_count(), q->durable());
        return std::nullopt;
    }
    const bool server_named = d.queue.empty();
    std::string name = server_named ? session_.broker().unique_name("amq.gen-") : std::string(d.queue);
    QueueOptions o;
    o.durable = d.durable;
    o.exclusive = d.exclusive;
    o.auto_delete = d.auto_delete;
    o.arguments = d.arguments;
    bool created = false;
    auto r = declare_queue(caller(), vhost_, name, std::move(o), server_named, created);
    if (auto* e = std::get_if<AmqpError>(&r)) return *e;
    QueuePtr q = std::get<QueuePtr>(r);
    if (created && q->exclusive()) session_.own_exclusive_queue(q);
    last_queue_ = name;
    reply_ok(name, q->ready_count(), q->consumer_count(), q->durable());
    return std::nullopt;
}

Status Channel::queue_bind(const m::QueueBind& d) {
    std::string_view name = resolve_queue_name(d.queue);
    if (name.empty()) return amqp_error(reply::not_found, "no previously declared queue");
    // The spec: an empty queue name *and* routing key bind with the queue's name.
    std::string_view key = d.queue.empty() && d.routing_key.empty() ? name : d.routing_key;
    if (Status st = bind_queue(caller(), vhost_, name, d.exchange, key, d.arguments, true)) return st;
    QueuePtr q = vhost_.find_queue(name);
    if (!d.no_wait) reply_when_durable(q && q->durable(), [this] { send(m::QueueBindOk{}); });
    return std::nullopt;
}

Status Channel::queue_unbind(const m::QueueUnbind& d) {
    std::string_view name = resolve_queue_name(d.queue);
    if (name.empty()) return amqp_error(reply::not_found, "no previously declared queue");
    if (vhost_.find_queue(name)) {
        if (Status st = bind_queue(caller(), vhost_, name, d.exchange, d.routing_key, d.arguments, false)) return st;
    } else {
        // A missing queue (like a missing exchange) has no binding to
        // remove: unbind-ok, as RabbitMQ answers (after its access checks).
        if (Status st = broker::check_access(caller(), Permission::write, ResourceKind::queue, name)) return st;
        if (Status st = broker::check_access(caller(), Permission::read, ResourceKind::exchange, d.exchange)) return st;
    }
    QueuePtr q = vhost_.find_queue(name);
    reply_when_durable(q && q->durable(), [this] { send(m::QueueUnbindOk{}); });
    return std::nullopt;
}

Status Channel::queue_purge(const m::QueuePurge& d) {
    std::string_view name = resolve_queue_name(d.queue);
    if (name.empty()) return amqp_error(reply::not_found, "no previously declared queue");
    auto r = purge_queue(caller(), vhost_, name);
    if (auto* e = std::get_if<AmqpError>(&r)) return *e;
    size_t n = std::get<size_t>(r);
    QueuePtr q = vhost_.find_queue(name);
    if (!d.no_wait)
        reply_when_durable(q && q->durable(), [this, n] {
            m::QueuePurgeOk ok;
            ok.message_count = static_cast<uint32_t>(n);
            send(ok);
        });
    return std::nullopt;
}

Status Channel::queue_delete(const m::QueueDelete& d) {
    if (Status st = check_queue_access(Permission::configure, d.queue)) return st;
    std::string_view name = resolve_queue_name(d.queue);
    QueuePtr q = vhost_.find_queue(name);
    size_t n = 0;
    bool durable = q && q->durable();
    if (q) {  // deleting a missing queue succeeds, as in RabbitMQ
        auto r = delete_queue(caller(), vhost_, q, d.if_unused, d.if_empty);
        if (auto* e = std::get_if<AmqpError>(&r)) return *e;
        n = std::get<size_t>(r);
    }
    if (!d.no_wait)
        reply_when_durable(durable, [this, n] {
            m::QueueDeleteOk ok;
            ok.message_count = static_cast<uint32_t>(n);
            send(ok);
        });
    return std::nullopt;
}

}  // namespace sluice::broker
