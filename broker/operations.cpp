#include "broker/operations.hpp"

#include <string>

#include "broker/broker.hpp"
#include "broker/channel.hpp"
#include "broker/queue.hpp"
#include "broker/sender_selected.hpp"
#include "broker/session.hpp"
#include "broker/vhost.hpp"
#include "net/amqp/properties.hpp"

namespace sluice::broker {

namespace {
constexpr std::string_view kReplyPrefix = "amq.rabbitmq.reply-to.";

std::optional<std::string_view> string_arg(const amqp::FieldTable& args, std::string_view key) {
    const amqp::FieldValue* v = args.find(key);
    return v ? v->as_string() : std::nullopt;
}
}  // namespace

Status check_access(const Caller& caller, Permission p, ResourceKind kind, std::string_view name) {
    if (caller.permissions && caller.permissions->allows(p, resource_name(kind, name))) return std::nullopt;
    return amqp_error(reply::access_refused, access_refused_text(kind, name, caller.vhost, caller.user));
}

Status check_exchange_declare(const Caller& caller, std::string_view exchange, const amqp::FieldTable& arguments) {
    if (Status st = check_access(caller, Permission::configure, ResourceKind::exchange, exchange)) return st;
    if (auto ae = string_arg(arguments, "alternate-exchange")) {
        if (Status st = check_access(caller, Permission::read, ResourceKind::exchange, exchange)) return st;
        if (Status st = check_access(caller, Permission::write, ResourceKind::exchange, *ae)) return st;
    }
    return std::nullopt;
}

Status check_dead_letter_access(const Caller& caller, std::string_view queue, const amqp::FieldTable& arguments) {
    if (auto dlx = string_arg(arguments, "x-dead-letter-exchange")) {
        if (Status st = check_access(caller, Permission::read, ResourceKind::queue, queue)) return st;
        if (Status st = check_access(caller, Permission::write, ResourceKind::exchange, *dlx)) return st;
    }
    return std::nullopt;
}

Status check_exclusive_access(const Queue& queue, uint64_t connection) {
    if (queue.exclusive() && queue.owner() != connection)
        return amqp_error(reply::resource_locked,
                          "cannot obtain exclusive access to locked queue '" + queue.name() + "' in vhost '" +
                              queue.vhost().name() +
                              "'. It could be originally declared on another connection or the exclusive "
                              "property value does not match that of the original declaration.");
    return std::nullopt;
}

Result<Exchange*> declare_exchange(const Caller& caller, VHost& vhost, std::string_view name,
                                   const ExchangeOptions& options, bool& created) {
    created = false;
    if (Status st = check_exchange_declare(caller, name, options.arguments)) return *st;
    const bool existed = vhost.find_exchange(name) != nullptr;
    auto r = vhost.declare_exchange(name, options);
    created = !existed && std::holds_alternative<Exchange*>(r);
    return r;
}

Status delete_exchange(const Caller& caller, VHost& vhost, std::string_view name, bool if_unused) {
    if (Status st = check_access(caller, Permission::configure, ResourceKind::exchange, name)) return st;
    return vhost.delete_exchange(name, if_unused);
}

Result<QueuePtr> declare_queue(const Caller& caller, VHost& vhost, std::string_view name, QueueOptions options,
                               bool server_named, bool& created) {
    created = false;
    if (!server_named && name.substr(0, 4) == "amq.")
        return amqp_error(reply::access_refused, "queue name '" + std::string(name) + "' contains reserved prefix 'amq.*'");
    if (Status st = check_access(caller, Permission::configure, ResourceKind::queue, name)) return *st;
    if (!vhost.find_queue(name)) {  // the rest is for new queues only
        if (Status st = vhost.broker().check_queue_limit(vhost, name)) return *st;
        if (Status st = check_dead_letter_access(caller, name, options.arguments)) return *st;
    }
    return vhost.declare_queue(name, std::move(options), caller.connection, created);
}

Result<size_t> delete_queue(const Caller& caller, VHost& vhost, const QueuePtr& queue, bool if_unused, bool if_empty) {
    if (Status st = check_exclusive_access(*queue, caller.connection)) return *st;
    if (if_unused && queue->consumer_count() > 0)
        return amqp_error(reply::precondition_failed,
                          "queue '" + queue->name() + "' in vhost '" + vhost.name() + "' in use");
    if (if_empty && queue->ready_count() > 0)
        return amqp_error(reply::precondition_failed,
                          "queue '" + queue->name() + "' in vhost '" + vhost.name() + "' is not empty");
    return vhost.delete_queue(queue);
}

Status bind_queue(const Caller& caller, VHost& vhost, std::string_view queue, std::string_view exchange,
                  std::string_view key, const amqp::FieldTable& arguments, bool bind) {
    if (Status st = check_access(caller, Permission::write, ResourceKind::queue, queue)) return st;
    if (Status st = check_access(caller, Permission::read, ResourceKind::exchange, exchange)) return st;
    QueuePtr q = vhost.find_queue(queue);
    if (!q) return amqp_error(reply::not_found, vhost.not_found_queue(queue));
    if (Status st = check_exclusive_access(*q, caller.connection)) return st;
    return bind ? vhost.bind_queue(queue, exchange, key, arguments) : vhost.unbind_queue(queue, exchange, key, arguments);
}

Status bind_exchange(const Caller& caller, VHost& vhost, std::string_view destination, std::string_view source,
                     std::string_view key, const amqp::FieldTable& arguments, bool bind) {
    if (Status st = check_access(caller, Permission::write, ResourceKind::exchange, destination)) return st;
    if (Status st = check_access(caller, Permission::read, ResourceKind::exchange, source)) return st;
    return bind ? vhost.bind_exchange(destination, source, key, arguments)
                : vhost.unbind_exchange(destination, source, key, arguments);
}

Result<size_t> purge_queue(const Caller& caller, VHost& vhost, std::string_view queue) {
    if (Status st = check_access(caller, Permission::read, ResourceKind::queue, queue)) return *st;
    QueuePtr q = vhost.find_queue(queue);
    if (!q) return amqp_error(reply::not_found, vhost.not_found_queue(queue));
    if (Status st = check_exclusive_access(*q, caller.connection)) return *st;
    return q->purge();
}

Status check_message(std::string_view user, const Message& message) {
    constexpr uint16_t kUserIdFlag = 1u << 4;
    std::string_view raw = message.properties();
    const uint16_t flags = raw.size() < 2 ? 0 : static_cast<uint16_t>((uint8_t(raw[0]) << 8) | uint8_t(raw[1]));
    if (flags & kUserIdFlag) {  // as RabbitMQ: user_id must be the publisher's
        amqp::BasicProperties props;
        if (amqp::decode_properties(raw, props) && props.user_id && *props.user_id != user)
            return amqp_error(reply::precondition_failed, "user_id property set to '" + *props.user_id +
                                                              "' but authenticated user was '" + std::string(user) +
                                                              "'");
    }
    if (message.expiration_ms() == Message::kInvalidExpiration)
        return amqp_error(reply::precondition_failed,
                          "invalid expiration '" + std::string(amqp::peek_expiration(raw).value_or("")) +
                              "': not a number of milliseconds between 0 and 4294967295");
    return std::nullopt;
}

Status prepare_message(std::string_view user, std::shared_ptr<Message>& message) {
    if (Status st = check_message(user, *message)) return st;
    return apply_sender_selected(message);
}

PublishResult publish_message(VHost& vhost, const Exchange& exchange, const MessagePtr& message) {
    Broker& broker = vhost.broker();
    BrokerStats& stats = broker.stats();
    ++stats.messages_published;
    std::string_view key = message->routing_key();
    if (exchange.name().empty() && key.substr(0, kReplyPrefix.size()) == kReplyPrefix) {
        PublishResult r;
        Channel* target = broker.find_reply_channel(key.substr(kReplyPrefix.size()));
        r.routed = target && target->deliver_reply(message);
        if (!r.routed) ++stats.messages_unroutable;
        return r;
    }
    PublishResult r = vhost.publish(exchange, message);
    if (!r.routed && !r.held) ++stats.messages_unroutable;
    else if (!r.rejected) ++stats.messages_routed;  // a queue's reject-publish nacks it: not routed
    return r;
}

namespace {

// One HTTP get in progress: what it has taken so far, across reads.
struct GetInProgress {
    QueuePtr queue;
    GetAckMode mode;
    size_t count, max_bytes;
    std::function<void(const QueuedMessage&, size_t)> visit;
    std::function<void(bool)> done;
    std::vector<QueuedMessage> got;
    bool removed_stored = false;
    size_t taken = 0, bytes = 0;
};

void continue_get(const std::shared_ptr<GetInProgress>& g) {
    Queue& queue = *g->queue;
    const bool no_ack = g->mode == GetAckMode::ack_requeue_false;
    const bool requeue = g->mode == GetAckMode::ack_requeue_true || g->mode == GetAckMode::reject_requeue_true;
    BrokerStats& stats = queue.vhost().broker().stats();
    Durability& durability = queue.vhost().broker().durability();
    // Take them all first (a requeued message would come straight back),
    // then settle them as a consumer's reject would.
    while (g->taken < g->count && g->bytes < g->max_bytes) {
        const bool ready = queue.head_ready_or_read([g, &durability] {
            // Called back from the read's completion (or the queue's
            // delete): go on after it, not inside it.
            durability.post([g] { continue_get(g); });
        });
        if (!ready) return;
        auto qm = queue.get(no_ack);
        if (!qm) break;
        ++g->taken;
        g->bytes += qm->message->body_size();
        g->visit(*qm, queue.ready_count());
        ++stats.messages_delivered;
        ++(no_ack ? stats.delivered_get_no_ack : stats.delivered_get_ack);
        if (qm->redelivered) ++stats.messages_redelivered;
        if (no_ack) {
            if (qm->stored && !queue.deleted()) {
                durability.remove_entry(queue, qm->seq);
                g->removed_stored = true;
            }
            continue;
        }
        g->got.push_back(std::move(*qm));
    }
    for (const auto& qm : g->got) {
        ++stats.messages_rejected;
        g->removed_stored = g->removed_stored || (!requeue && qm.stored);
    }
    if (requeue) {
        for (auto it = g->got.rbegin(); it != g->got.rend(); ++it) queue.requeue(std::move(*it));
    } else {
        for (auto& qm : g->got) queue.reject(std::move(qm));  // dead-lettered if the queue says so
    }
    g->got.clear();
    queue.dispatch();
    g->done(g->removed_stored);
}

}  // namespace

void get_messages(const QueuePtr& queue, GetAckMode mode, size_t count, size_t max_bytes,
                  std::function<void(const QueuedMessage&, size_t ready_left)> visit,
                  std::function<void(bool removed_stored)> done) {
    auto g = std::make_shared<GetInProgress>();
    g->queue = queue;
    g->mode = mode;
    g->count = count;
    g->max_bytes = max_bytes;
    g->visit = std::move(visit);
    g->done = std::move(done);
    continue_get(g);
}

bool close_connection(Broker& broker, uint64_t connection, std::string_view reason) {
    for (Session* s : broker.sessions())
        if (s->id() == connection) {
            s->connection_error(amqp_error(reply::connection_forced, std::string(reason)));
            return true;
        }
    return false;
}

}  // namespace sluice::broker
