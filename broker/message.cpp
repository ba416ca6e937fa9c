#include "broker/message.hpp"

#include "net/amqp/properties.hpp"

namespace sluice::broker {

Message::Message(std::string_view exchange, std::string_view routing_key, std::string_view properties,
                 uint64_t body_size)
    : body_size_(body_size),
      properties_len_(static_cast<uint32_t>(properties.size())),
      exchange_len_(static_cast<uint8_t>(exchange.size())),
      routing_key_len_(static_cast<uint8_t>(routing_key.size())) {
    data_.reserve(exchange.size() + routing_key.size() + properties.size() + body_size);
    data_.append(exchange);
    data_.append(routing_key);
    data_.append(properties);
    persistent_ = amqp::peek_delivery_mode(properties).value_or(1) == 2;
    priority_ = amqp::peek_priority(properties).value_or(0);
    if (auto e = amqp::peek_expiration(properties)) expiration_ms_ = parse_expiration(*e);
}

int64_t Message::parse_expiration(std::string_view text) {
    // As RabbitMQ: decimal digits only, at most 2^32-1 ms.
    if (text.empty() || text.size() > 10) return kInvalidExpiration;
    int64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return kInvalidExpiration;
        v = v * 10 + (c - '0');
    }
    return v > 4294967295 ? kInvalidExpiration : v;
}

}  // namespace sluice::broker
