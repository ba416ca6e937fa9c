#include "broker/operations.hpp"

#include <string>

#include "broker/queue.hpp"
#include "broker/vhost.hpp"

namespace sluice::broker {

namespace {
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

}  // namespace sluice::broker
