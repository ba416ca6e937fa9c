// The operations both an AMQP channel and the management API perform on a
// vhost's objects, with one implementation of who may do them (RabbitMQ's
// access-control table, channel_access.cpp), of exclusivity, and of the
// statistics they move. net/ calls these instead of re-implementing a
// channel's checks, publish, get and settle (STYLE.md: Dragonfly's facade).
// Declares, deletes and binds are VHost's (vhost.hpp), shared the same way.
//
// `connection` is the caller's connection id; the management API has none
// (0), so another connection's exclusive queue is locked to it, as in
// RabbitMQ.
//
// Thread-safety: the broker thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

#include "broker/access_control.hpp"
#include "broker/amqp_error.hpp"
#include "broker/message.hpp"
#include "broker/vhost.hpp"
#include "net/amqp/field_table.hpp"

namespace sluice::broker {

class Broker;
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

// exchange.declare (not passive), the type already parsed by the caller:
// check_exchange_declare, then VHost::declare_exchange — the default
// exchange is refused (403), an existing exchange (amq.* included) must be
// equivalent (type, durable, auto_delete, internal, alternate-exchange: 406),
// a new one may not take the reserved "amq." prefix (403), and a durable one
// is stored. `created` says whether it is new.
Result<Exchange*> declare_exchange(const Caller& caller, VHost& vhost, std::string_view name,
                                   const ExchangeOptions& options, bool& created);
// exchange.delete: configure on it, then VHost::delete_exchange — the default
// and amq.* exchanges are refused (403), if-unused with bindings is 406, its
// bindings go with it, and deleting a missing exchange succeeds.
Status delete_exchange(const Caller& caller, VHost& vhost, std::string_view name, bool if_unused);

// queue.declare (not passive): RabbitMQ's reserved "amq." prefix (unless
// `server_named`), configure on the queue, and for a new one the vhost's
// max-queues and the dead-letter exchange's rights; then VHost::declare_queue
// (equivalence, exclusivity). A new exclusive queue belongs to
// caller.connection.
Result<QueuePtr> declare_queue(const Caller& caller, VHost& vhost, std::string_view name, QueueOptions options,
                               bool server_named, bool& created);
// queue.delete of an existing queue (its configure right checked by the
// caller): exclusivity, if-unused and if-empty (406), then the delete.
// Returns the ready messages it had.
Result<size_t> delete_queue(const Caller& caller, VHost& vhost, const QueuePtr& queue, bool if_unused, bool if_empty);

// queue.bind / queue.unbind (`bind` false): write on the queue, read on the
// exchange, the queue must exist and not be another connection's exclusive
// queue; then VHost's bind (404 for a missing exchange, 403 for the
// default one).
Status bind_queue(const Caller& caller, VHost& vhost, std::string_view queue, std::string_view exchange,
                  std::string_view key, const amqp::FieldTable& arguments, bool bind);
// exchange.bind / exchange.unbind: write on the destination, read on the
// source; then VHost's.
Status bind_exchange(const Caller& caller, VHost& vhost, std::string_view destination, std::string_view source,
                     std::string_view key, const amqp::FieldTable& arguments, bool bind);
// queue.purge: read on the queue, exclusivity. Returns the messages removed.
Result<size_t> purge_queue(const Caller& caller, VHost& vhost, std::string_view queue);

// What basic.publish refuses in a complete message, whoever publishes it
// (406 PRECONDITION_FAILED): a user_id other than the publisher's, an
// expiration that is not a number of milliseconds.
Status check_message(std::string_view user, const Message& message);
// check_message, then the sender-selected distribution headers (CC, BCC:
// their keys are attached, BCC is stripped; 406 if they are not arrays):
// what every publisher's complete message goes through before routing.
Status prepare_message(std::string_view user, std::shared_ptr<Message>& message);

// A whole message enters the broker (basic.publish once its content is
// complete, or the API's publish): direct reply-to
// ("amq.rabbitmq.reply-to.<token>" on the default exchange) or routing, and
// the published / routed / unroutable counters. `routed` false = unroutable
// (the caller returns it if mandatory).
PublishResult publish_message(VHost& vhost, const Exchange& exchange, const MessagePtr& message);

// The management API's "get messages": RabbitMQ's ack modes, performed as
// its plugin does over AMQP. ack_requeue_false is basic.get with no_ack;
// the others are basic.get then basic.reject (requeue or not: a rejected
// message is dead-lettered), so none counts an ack.
enum class GetAckMode { ack_requeue_true, ack_requeue_false, reject_requeue_true, reject_requeue_false };
// Takes up to `count` messages (stopping past `max_bytes` of bodies), shows
// each to `visit` with the ready count left, then settles them and calls
// `done` with whether a durable entry was removed (the answer waits for the
// sync). A head on disk is read off the broker thread first (as basic.get
// does): then `done` runs later, on the broker thread. A queue deleted
// meanwhile ends the get with what it had taken.
void get_messages(const QueuePtr& queue, GetAckMode mode, size_t count, size_t max_bytes,
                  std::function<void(const QueuedMessage&, size_t ready_left)> visit,
                  std::function<void(bool removed_stored)> done);

// Closes connection `connection` (its id) from outside (the API):
// connection.close with 320 CONNECTION_FORCED and `reason`. False if there
// is no such connection.
bool close_connection(Broker& broker, uint64_t connection, std::string_view reason);

}  // namespace sluice::broker
