// An exchange and its bindings, with the routing index its type needs:
// direct = hash of routing keys, fanout = a list, topic = a word trie
// (TopicMatcher), headers = a scan of the binding arguments, x-consistent-hash
// = a weighted choice of one destination (ConsistentHashRing) by a hash of
// the routing key, a header or a property. An x-delayed-message exchange
// (RabbitMQ's rabbitmq_delayed_message_exchange) routes as the type its
// `x-delayed-type` argument names, and holds messages with a positive
// `x-delay` header until they are due (DelayedMessages, delayed_messages.hpp);
// x-message-deduplication (the plugin's type) routes as fanout. Any exchange
// may have a deduplication window (dedup.hpp), which VHost::publish consults
// before routing.
//
// A binding's identity is (destination, key, arguments), as in RabbitMQ: the
// same queue bound twice with different arguments is two bindings.
//
// Thread-safety: owned by its VHost and touched only on the broker thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <unordered_map>
#include <string>
#include <string_view>
#include <vector>

#include "broker/consistent_hash.hpp"
#include "broker/dedup.hpp"
#include "broker/topic_matcher.hpp"
#include "net/amqp/field_table.hpp"

namespace sluice::amqp {
struct BasicProperties;
}

namespace sluice::broker {

class Queue;
class Exchange;
class DelayedMessages;

// Where a binding leads: a queue or (exchange-to-exchange) another exchange.
struct Destination {
    Queue* queue = nullptr;
    Exchange* exchange = nullptr;
    bool operator==(const Destination&) const = default;
};
struct DestinationHash {
    size_t operator()(const Destination& d) const {
        return std::hash<const void*>()(d.queue ? static_cast<const void*>(d.queue) : d.exchange);
    }
};

// Stored as a number (Durability): append new types, never reorder.
enum class ExchangeType : uint8_t { direct, fanout, topic, headers, consistent_hash, delayed, deduplication };
// "direct" → direct, …, "x-consistent-hash" → consistent_hash,
// "x-delayed-message" → delayed, "x-message-deduplication" → deduplication;
// false for an unknown name.
bool parse_exchange_type(std::string_view name, ExchangeType& out);
std::string_view exchange_type_name(ExchangeType t);

// What an x-consistent-hash exchange hashes: the routing key, or the header
// its `hash-header` argument names, or the property its `hash-property`
// names (correlation_id, message_id or timestamp, as the plugin).
struct HashSource {
    enum class Kind : uint8_t { routing_key, header, correlation_id, message_id, timestamp } kind = Kind::routing_key;
    std::string header;
};
// RabbitMQ's checks of an x-consistent-hash exchange's arguments (406 texts):
// "" when they are valid, else why not; fills `out`.
std::string parse_hash_source(const amqp::FieldTable& arguments, HashSource& out);
// RabbitMQ's check of a binding key on an x-consistent-hash exchange: an
// integer ≥ 1 (its weight). "" when valid, else the 406 text.
std::string validate_hash_weight(std::string_view key, uint32_t& weight);
// The plugin's checks of an x-delayed-message exchange's `x-delayed-type`:
// the type it routes as (fills `out`), or the error (406 when it is missing,
// not a string or x-delayed-message itself; 503 COMMAND_INVALID for an
// unknown type, as RabbitMQ's rabbit_exchange:check_type).
struct DelayedTypeError {
    uint16_t code = 0;  // 0: valid
    std::string text;
};
DelayedTypeError parse_delayed_type(const amqp::FieldTable& arguments, ExchangeType& out);
// The `x-delay` header of a message as the plugin reads it: an integer of
// any width, a float or decimal truncated, a string holding an integer.
// Messages with a delay in (0, kMaxDelayMs] are held; others (none, 0,
// negative, larger, not a number) are routed at once.
std::optional<int64_t> x_delay(const amqp::FieldTable* headers);
inline constexpr int64_t kMaxDelayMs = 4294967295;  // the plugin's bound (Erlang's longest timer)

struct Binding {
    Destination destination;
    std::string key;
    amqp::FieldTable arguments;
};

class Exchange {
public:
    Exchange(std::string name, ExchangeType type, bool durable, bool auto_delete, bool internal,
             amqp::FieldTable arguments);
    ~Exchange();
    Exchange(const Exchange&) = delete;
    Exchange& operator=(const Exchange&) = delete;

    const std::string& name() const { return name_; }
    ExchangeType type() const { return type_; }
    // How it routes: its type, or an x-delayed-message exchange's x-delayed-type.
    ExchangeType routing_type() const { return routing_type_; }
    // An x-delayed-message exchange's held messages (null for other types).
    DelayedMessages* delayed() const { return delayed_.get(); }
    void set_delayed(std::shared_ptr<DelayedMessages> d) { delayed_ = std::move(d); }
    bool durable() const { return durable_; }
    bool auto_delete() const { return auto_delete_; }
    bool internal() const { return internal_; }
    const amqp::FieldTable& arguments() const { return arguments_; }
    const std::vector<Binding>& bindings() const { return bindings_; }
    // The `alternate-exchange` argument: where messages this exchange cannot
    // route go instead ("" = none).
    const std::string& alternate_exchange() const { return alternate_exchange_; }
    // Its deduplication window, null when it has none (`x-message-deduplication`).
    DedupCache* dedup() const { return dedup_.get(); }

    // False if that exact binding exists already.
    bool bind(Destination dest, std::string_view key, const amqp::FieldTable& args);
    // False if there was no such binding.
    bool unbind(Destination dest, std::string_view key, const amqp::FieldTable& args);
    // Removes every binding to `dest` (it is being deleted); returns them.
    std::vector<Binding> unbind_all(Destination dest);

    // Appends to `out` the destinations `routing_key` (and, for a headers
    // exchange or a consistent-hash one on a header or property, the
    // message's `properties`; null = none) selects. A destination may be
    // appended more than once; the caller de-duplicates.
    void route(std::string_view routing_key, const amqp::BasicProperties* properties,
               std::vector<Destination>& out) const;
    // Whether route() reads the message's properties (decoded only then).
    // (A delayed exchange reads x-delay.)
    bool needs_properties() const {
        return type_ == ExchangeType::delayed || routing_type_ == ExchangeType::headers ||
               (routing_type_ == ExchangeType::consistent_hash && hash_source_.kind != HashSource::Kind::routing_key);
    }
    // Whether the routing key takes part in routing (not fanout, not headers).
    bool uses_routing_key() const {
        return routing_type_ == ExchangeType::direct || routing_type_ == ExchangeType::topic;
    }

private:
    void index_add(const Binding& b);
    void index_remove(const Binding& b);
    bool has_binding(Destination dest, std::string_view key) const;
    // Puts `dest` on the ring with the weight of its first binding, or takes
    // it off when it has none left.
    void ring_update(Destination dest);
    void route_by_hash(std::string_view routing_key, const amqp::BasicProperties* properties,
                       std::vector<Destination>& out) const;

    std::string name_;
    ExchangeType type_;
    ExchangeType routing_type_;
    bool durable_;
    bool auto_delete_;
    bool internal_;
    amqp::FieldTable arguments_;
    std::string alternate_exchange_;
    std::unique_ptr<DedupCache> dedup_;
    std::vector<Binding> bindings_;

    // Routing indexes; each holds one entry per distinct (key, destination).
    std::unordered_map<std::string, std::vector<Destination>> direct_;
    std::vector<Destination> fanout_;
    TopicMatcher<Destination> topic_;
    HashSource hash_source_;
    ConsistentHashRing<Destination> ring_;
    std::shared_ptr<DelayedMessages> delayed_;
};

}  // namespace sluice::broker

template <>
struct std::hash<sluice::broker::Destination> : sluice::broker::DestinationHash {};
