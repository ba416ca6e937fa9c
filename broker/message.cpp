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
}

}  // namespace sluice::broker
