// A dynamic shovel's definition: the value of a runtime parameter of
// component "shovel", as RabbitMQ's shovel plugin reads it (its key names,
// defaults and validation; see docs/shovels.md), and the AMQP URIs in it.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/amqp/field_table.hpp"
#include "net/amqp/properties.hpp"

namespace sluice::net {

// amqp://user:password@host:port/vhost?heartbeat=N (RabbitMQ's URI spec).
// No host ("amqp://", "amqp:///vhost") is this broker itself.
struct AmqpUri {
    std::string text;        // as given
    std::string host;        // "" = this broker
    uint16_t port = 5672;
    std::optional<std::string> user, password;  // none given: the broker's default user (local) or guest
    std::string vhost = "/";
    uint16_t heartbeat_s = 60;
    // The text without the password (for status and the x-shovelled header).
    std::string redacted() const;
};
// "" or what is wrong.
std::string parse_amqp_uri(std::string_view text, AmqpUri& out);

enum class AckMode { on_confirm, on_publish, no_ack };

struct ShovelDefinition {
    std::vector<AmqpUri> src_uris, dest_uris;  // tried in turn
    // The source: a queue, or an exchange (an exclusive queue bound with the key).
    std::string src_queue, src_exchange, src_exchange_key;
    bool src_is_exchange = false;
    std::optional<amqp::FieldTable> src_queue_args;
    std::optional<amqp::FieldTable> src_consumer_args;  // basic.consume's arguments (x-priority …)
    // "predeclared": the queue must exist; the shovel does not declare it.
    bool src_predeclared = false, dest_predeclared = false;
    // The destination: a queue (published through the default exchange), an
    // exchange, or neither (each message's own exchange and routing key).
    std::string dest_queue;
    std::optional<std::string> dest_exchange, dest_exchange_key;
    std::optional<amqp::FieldTable> dest_queue_args;
    amqp::BasicProperties dest_publish_properties;  // the set ones overwrite the message's
    AckMode ack_mode = AckMode::on_confirm;
    uint32_t prefetch_count = 1000;
    double reconnect_delay_s = 1;  // 0 = a failed shovel stays terminated
    enum class DeleteAfter { never, queue_length, count };
    DeleteAfter delete_after = DeleteAfter::never;
    uint64_t delete_after_count = 0;
    bool add_forward_headers = false;
    bool add_timestamp_header = false;
};

// Parses and validates a parameter value (a JSON object). "" or the reason it
// is refused (RabbitMQ's texts where it has them).
std::string parse_shovel_definition(std::string_view json_text, ShovelDefinition& out);

}  // namespace sluice::net
