// Dead-lettering as RabbitMQ does it: the message a queue gives up on
// (rejected, expired, over its length limit, over its delivery limit) is
// re-published to the queue's dead-letter exchange, with its history in the
// `x-death` header.
//
// x-death is an array of tables, most recent first, one per (queue, reason):
// count, reason, queue, time, exchange, routing-keys, and original-expiration
// when the message had a per-message TTL (the expiration property is removed
// so the copy does not expire again). x-first-death-reason/-queue/-exchange
// are set once. Followed: RabbitMQ's "Dead Letter Exchanges" guide and its
// rabbit_dead_letter module's header layout (3.10).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "broker/message.hpp"
#include "net/amqp/field_table.hpp"

namespace sluice::broker {

enum class DeathReason : uint8_t { rejected, expired, maxlen, delivery_limit };
std::string_view death_reason_name(DeathReason reason);

struct DeadLetter {
    MessagePtr message;           // exchange = the dead-letter exchange
    amqp::FieldTable x_death;     // the new x-death header, for the cycle check
};

// The copy of `m` that queue `queue` dead-letters to `dlx`, routed with
// `routing_key` when set (and then without its CC header), else with the
// message's own routing key and its CC and BCC keys.
DeadLetter make_dead_letter(const Message& m, DeathReason reason, std::string_view queue, std::string_view dlx,
                            const std::optional<std::string>& routing_key, uint64_t now_s);

// RabbitMQ's cycle rule: routing a dead letter into `target` closes a cycle
// when `target` appears in its x-death and no death since then (that one
// included) was a rejection; such a cycle is dropped. Dead letters caused by
// a rejection are never considered cycles.
bool dead_letter_cycles(const amqp::FieldTable& x_death, std::string_view target, DeathReason reason);

// A quorum queue's redelivery: the message with header x-delivery-count set
// to `count` (how many times it came back), as RabbitMQ's quorum queues do.
MessagePtr with_delivery_count(const Message& m, uint32_t count);

}  // namespace sluice::broker
