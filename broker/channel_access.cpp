// Permission checks of the exchange, queue and basic methods, as RabbitMQ's
// access-control guide tabulates them:
//   exchange.declare          configure: exchange (not passive)
//     with alternate-exchange write: the AE, read: the exchange
//   exchange.delete           configure: exchange
//   exchange.bind/unbind      write: destination, read: source
//   queue.declare             configure: queue (not passive; server-named too)
//     with x-dead-letter-exchange  write: the DLX, read: the queue
//   queue.delete              configure: queue
//   queue.bind/unbind         write: queue, read: exchange
//   queue.purge               read: queue
//   basic.publish             write: exchange
//   basic.consume, basic.get  read: queue
// The default exchange "" is checked as "amq.default". A refusal is a 403
// that closes the channel. queue.declare of a new queue also checks the
// vhost's max-queues (406).
#include "broker/broker.hpp"
#include "broker/channel.hpp"
#include "broker/operations.hpp"
#include "broker/session.hpp"
#include "broker/vhost.hpp"
#include "net/amqp/methods.hpp"

namespace sluice::broker {

namespace m = amqp::method;

namespace {
constexpr std::string_view kReplyQueue = "amq.rabbitmq.reply-to";
}  // namespace

Caller Channel::caller() {
    return Caller{session_.user(), vhost_.name(), session_.permissions().get(), session_.id()};
}

Status Channel::check_access(Permission p, ResourceKind kind, std::string_view name) {
    if (session_.permissions().allows(p, resource_name(kind, name))) return std::nullopt;  // the hot path
    return broker::check_access(caller(), p, kind, name);
}

Status Channel::check_queue_access(Permission p, std::string_view queue) {
    std::string_view name = resolve_queue_name(queue);
    if (name.empty()) return std::nullopt;
    return check_access(p, ResourceKind::queue, name);
}

Status Channel::check_consume(std::string_view queue) {
    if (queue == kReplyQueue) return std::nullopt;  // direct reply-to is not a queue
    return check_queue_access(Permission::read, queue);
}

Status Channel::check_publish_access(std::string_view exchange) {
    if (Status st = check_access(Permission::write, ResourceKind::exchange, exchange)) return st;
    const AccessControl& ac = session_.broker().access_control();
    publish_access_.current = &ac.generation_counter();
    publish_access_.generation = ac.generation();
    publish_access_.exchange.assign(exchange);
    return std::nullopt;
}

}  // namespace sluice::broker
