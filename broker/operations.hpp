// The operations both an AMQP channel and the management API perform on a
// vhost's objects, with one implementation of who may do them (RabbitMQ's
// access-control table, channel_access.cpp) and of exclusivity. net/ calls
// these instead of re-implementing a channel's checks (STYLE.md: Dragonfly's
// facade).
//
// `connection` is the caller's connection id; the management API has none
// (0), so another connection's exclusive queue is locked to it, as in
// RabbitMQ.
//
// Thread-safety: the broker thread only.
#pragma once

#include <cstdint>
#include <string_view>

#include "broker/access_control.hpp"
#include "broker/amqp_error.hpp"
#include "net/amqp/field_table.hpp"

namespace sluice::broker {

class Queue;

// Who asks: the user, its permissions in the vhost (null = none) and its
// connection (0 = the management API).
struct Caller {
    std::string_view user;
    std::string_view vhost;
    const CompiledPermissions* permissions = nullptr;
    uint64_t connection = 0;
};

// 403 ACCESS_REFUSED unless `caller` has `p` on the resource.
Status check_access(const Caller& caller, Permission p, ResourceKind kind, std::string_view name);
// exchange.declare (not passive): configure on it; with alternate-exchange,
// read on it and write on the AE.
Status check_exchange_declare(const Caller& caller, std::string_view exchange, const amqp::FieldTable& arguments);
// queue.declare of a new queue with x-dead-letter-exchange: read on the
// queue, write on the DLX (configure on the queue is checked first).
Status check_dead_letter_access(const Caller& caller, std::string_view queue, const amqp::FieldTable& arguments);
// 405 RESOURCE_LOCKED when `queue` is exclusive to another connection.
Status check_exclusive_access(const Queue& queue, uint64_t connection);

}  // namespace sluice::broker
