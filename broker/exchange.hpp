// An exchange and its bindings, with the routing index its type needs:
// direct = hash of routing keys, fanout = a list, topic = a word trie
// (TopicMatcher), headers = a scan of the binding arguments.
//
// A binding's identity is (destination, key, arguments), as in RabbitMQ: the
// same queue bound twice with different arguments is two bindings.
//
// Thread-safety: owned by its VHost and touched only on the broker thread.
#pragma once

#include <cstdint>
#include <functional>
#include <unordered_map>
#include <string>
#include <string_view>
#include <vector>

#include "broker/topic_matcher.hpp"
#include "net/amqp/field_table.hpp"

namespace sluice::broker {

class Queue;
class Exchange;

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

enum class ExchangeType : uint8_t { direct, fanout, topic, headers };
// "direct" → direct, …; false for an unknown name.
bool parse_exchange_type(std::string_view name, ExchangeType& out);
std::string_view exchange_type_name(ExchangeType t);

struct Binding {
    Destination destination;
    std::string key;
    amqp::FieldTable arguments;
};

class Exchange {
public:
    Exchange(std::string name, ExchangeType type, bool durable, bool auto_delete, bool internal,
             amqp::FieldTable arguments);

    const std::string& name() const { return name_; }
    ExchangeType type() const { return type_; }
    bool durable() const { return durable_; }
    bool auto_delete() const { return auto_delete_; }
    bool internal() const { return internal_; }
    const amqp::FieldTable& arguments() const { return arguments_; }
    const std::vector<Binding>& bindings() const { return bindings_; }
    // The `alternate-exchange` argument: where messages this exchange cannot
    // route go instead ("" = none).
    const std::string& alternate_exchange() const { return alternate_exchange_; }

    // False if that exact binding exists already.
    bool bind(Destination dest, std::string_view key, const amqp::FieldTable& args);
    // False if there was no such binding.
    bool unbind(Destination dest, std::string_view key, const amqp::FieldTable& args);
    // Removes every binding to `dest` (it is being deleted); returns them.
    std::vector<Binding> unbind_all(Destination dest);

    // Appends to `out` the destinations `routing_key` (and, for a headers
    // exchange, `headers`) selects. A destination may be appended more than
    // once; the caller de-duplicates.
    void route(std::string_view routing_key, const amqp::FieldTable* headers,
               std::vector<Destination>& out) const;
    bool needs_headers() const { return type_ == ExchangeType::headers; }
    // Whether the routing key takes part in routing (not fanout, not headers).
    bool uses_routing_key() const { return type_ == ExchangeType::direct || type_ == ExchangeType::topic; }

private:
    void index_add(const Binding& b);
    void index_remove(const Binding& b);
    bool has_binding(Destination dest, std::string_view key) const;

    std::string name_;
    ExchangeType type_;
    bool durable_;
    bool auto_delete_;
    bool internal_;
    amqp::FieldTable arguments_;
    std::string alternate_exchange_;
    std::vector<Binding> bindings_;

    // Routing indexes; each holds one entry per distinct (key, destination).
    std::unordered_map<std::string, std::vector<Destination>> direct_;
    std::vector<Destination> fanout_;
    TopicMatcher<Destination> topic_;
};

}  // namespace sluice::broker

template <>
struct std::hash<sluice::broker::Destination> : sluice::broker::DestinationHash {};
