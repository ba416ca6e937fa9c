#include "broker/message.hpp"

#include <algorithm>

#include "net/amqp/properties.hpp"

namespace sluice::broker {

namespace {
constexpr uint64_t kFirstReserve = 128 * 1024;  // the default frame_max
}  // namespace

Message::Message(std::string_view exchange, std::string_view routing_key, std::string_view properties,
                 uint64_t body_size)
    : body_size_(body_size),
      properties_len_(static_cast<uint32_t>(properties.size())),
      exchange_len_(static_cast<uint8_t>(exchange.size())),
      routing_key_len_(static_cast<uint8_t>(routing_key.size())) {
    // Room for the first body frame at most: most bodies fit in one.
    data_.reserve(exchange.size() + routing_key.size() + properties.size() + std::min<uint64_t>(body_size, kFirstReserve));
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

const std::vector<std::string>& Message::extra_routing_keys() const {
    static const std::vector<std::string> none;
    return extra_routing_keys_ ? *extra_routing_keys_ : none;
}

void Message::set_extra_routing_keys(std::vector<std::string> keys) {
    if (keys.empty()) extra_routing_keys_.reset();
    else extra_routing_keys_ = std::make_unique<const std::vector<std::string>>(std::move(keys));
}

void Message::append_body(std::string_view chunk) {
    const size_t need = data_.size() + chunk.size();
    if (need > data_.capacity()) {
        // Double (amortised copying) but never past the announced size. A
        // fresh string, because std::string::reserve may round up to twice
        // the old capacity, past the size.
        const size_t full = body_offset() + body_size_;
        std::string grown;
        grown.reserve(std::min(full, std::max(need, 2 * data_.capacity())));
        grown.append(data_);
        data_.swap(grown);
    }
    data_.append(chunk);
}
}  // namespace sluice::broker
