// The basic class content header: its 14 properties, encoded as RabbitMQ does
// (16-bit property flags, highest bit first: content-type = bit 15 …
// cluster-id = bit 2; bit 0 would announce a continuation word, which no
// client sends and which the decoder rejects).
//
// The broker keeps a message's properties *encoded* (flags + property list,
// exactly as the publisher sent them) and re-sends those bytes untouched;
// BasicProperties is decoded only where the broker must read a property.
//
// Thread-safety: plain value types.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "net/amqp/field_table.hpp"

namespace sluice::amqp {

struct BasicProperties {
    std::optional<std::string> content_type;      // bit 15
    std::optional<std::string> content_encoding;  // bit 14
    std::optional<FieldTable> headers;            // bit 13
    std::optional<uint8_t> delivery_mode;         // bit 12
    std::optional<uint8_t> priority;              // bit 11
    std::optional<std::string> correlation_id;    // bit 10
    std::optional<std::string> reply_to;          // bit 9
    std::optional<std::string> expiration;        // bit 8
    std::optional<std::string> message_id;        // bit 7
    std::optional<uint64_t> timestamp;            // bit 6
    std::optional<std::string> type;              // bit 5
    std::optional<std::string> user_id;           // bit 4
    std::optional<std::string> app_id;            // bit 3
    std::optional<std::string> cluster_id;        // bit 2

    bool operator==(const BasicProperties&) const = default;
};

// Decodes the flags + property list (the part of a content header after
// class-id, weight and body-size). Returns false on malformed input.
bool decode_properties(std::string_view raw, BasicProperties& out);
// Appends flags + property list.
void encode_properties(std::string& out, const BasicProperties& p);

// Fast peeks at encoded properties without a full decode. They return nullopt
// when the property is absent or the bytes are malformed.
std::optional<uint8_t> peek_delivery_mode(std::string_view raw);
std::optional<uint8_t> peek_priority(std::string_view raw);
// The expiration property's text (a per-message TTL in milliseconds).
std::optional<std::string_view> peek_expiration(std::string_view raw);

// Content header frame payload: class-id, weight (0), body size, then `raw`.
struct ContentHeader {
    uint16_t class_id = 0;
    uint64_t body_size = 0;
    std::string_view properties;  // flags + property list, pointing into the frame
};
bool decode_content_header(std::string_view payload, ContentHeader& out);
void encode_content_header(std::string& out, uint16_t class_id, uint64_t body_size,
                           std::string_view raw_properties);

}  // namespace sluice::amqp
