// Protocol errors are values: an AMQP reply code and text, plus the method
// that caused them. Hard errors close the connection, soft errors the channel
// (the spec's classification). Nothing here throws.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::broker {

namespace reply {
inline constexpr uint16_t success = 200;
inline constexpr uint16_t content_too_large = 311;
inline constexpr uint16_t no_route = 312;
inline constexpr uint16_t no_consumers = 313;
inline constexpr uint16_t connection_forced = 320;
inline constexpr uint16_t invalid_path = 402;
inline constexpr uint16_t access_refused = 403;
inline constexpr uint16_t not_found = 404;
inline constexpr uint16_t resource_locked = 405;
inline constexpr uint16_t precondition_failed = 406;
inline constexpr uint16_t frame_error = 501;
inline constexpr uint16_t syntax_error = 502;
inline constexpr uint16_t command_invalid = 503;
inline constexpr uint16_t channel_error = 504;
inline constexpr uint16_t unexpected_frame = 505;
inline constexpr uint16_t resource_error = 506;
inline constexpr uint16_t not_allowed = 530;
inline constexpr uint16_t not_implemented = 540;
inline constexpr uint16_t internal_error = 541;
}  // namespace reply

// "NOT_FOUND", "PRECONDITION_FAILED", … as RabbitMQ prefixes its reply texts.
const char* reply_name(uint16_t code);
bool is_hard_error(uint16_t code);

struct AmqpError {
    uint16_t code = 0;
    std::string text;  // without the "NAME - " prefix; added when sent
    uint32_t method = 0;  // method_key of the offending method, 0 if none

    // RabbitMQ's form: "NOT_FOUND - no queue 'x' in vhost '/'".
    std::string reply_text() const;
};

// A handler's outcome: nullopt = success.
using Status = std::optional<AmqpError>;

inline AmqpError amqp_error(uint16_t code, std::string text) { return AmqpError{code, std::move(text), 0}; }

// A method frame whose arguments do not decode (too short, or bytes left
// over): RabbitMQ's 501 "cannot decode <<0,0,80,...>>" (the argument bytes
// as Erlang prints a binary). `payload` is the whole method payload.
AmqpError cannot_decode(std::string_view payload);

}  // namespace sluice::broker
