#include "broker/amqp_error.hpp"

namespace sluice::broker {

const char* reply_name(uint16_t code) {
    switch (code) {
        case reply::success: return "OK";
        case reply::content_too_large: return "CONTENT_TOO_LARGE";
        case reply::no_route: return "NO_ROUTE";
        case reply::no_consumers: return "NO_CONSUMERS";
        case reply::connection_forced: return "CONNECTION_FORCED";
        case reply::invalid_path: return "INVALID_PATH";
        case reply::access_refused: return "ACCESS_REFUSED";
        case reply::not_found: return "NOT_FOUND";
        case reply::resource_locked: return "RESOURCE_LOCKED";
        case reply::precondition_failed: return "PRECONDITION_FAILED";
        case reply::frame_error: return "FRAME_ERROR";
        case reply::syntax_error: return "SYNTAX_ERROR";
        case reply::command_invalid: return "COMMAND_INVALID";
        case reply::channel_error: return "CHANNEL_ERROR";
        case reply::unexpected_frame: return "UNEXPECTED_FRAME";
        case reply::resource_error: return "RESOURCE_ERROR";
        case reply::not_allowed: return "NOT_ALLOWED";
        case reply::not_implemented: return "NOT_IMPLEMENTED";
        case reply::internal_error: return "INTERNAL_ERROR";
        default: return "UNKNOWN";
    }
}

bool is_hard_error(uint16_t code) {
    switch (code) {
        case reply::content_too_large:
        case reply::no_route:
        case reply::no_consumers:
        case reply::access_refused:
        case reply::not_found:
        case reply::resource_locked:
        case reply::precondition_failed:
            return false;
        default:
            return true;
    }
}

AmqpError cannot_decode(std::string_view payload) {
    uint32_t key = 0;
    for (size_t i = 0; i < 4 && i < payload.size(); ++i) key = (key << 8) | static_cast<uint8_t>(payload[i]);
    std::string_view args = payload.size() > 4 ? payload.substr(4) : std::string_view{};
    std::string text = "cannot decode <<";
    for (size_t i = 0; i < args.size() && text.size() < 255; ++i) {  // the reply text stops at 255 anyway
        if (i > 0) text += ',';
        text += std::to_string(static_cast<uint8_t>(args[i]));
    }
    text += ">>";
    return AmqpError{reply::frame_error, std::move(text), payload.size() >= 4 ? key : 0};
}

std::string AmqpError::reply_text() const {
    std::string s = reply_name(code);
    s += " - ";
    s += text;
    if (s.size() > 255) s.resize(255);
    return s;
}

}  // namespace sluice::broker
