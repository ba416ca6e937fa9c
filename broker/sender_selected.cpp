#include "broker/sender_selected.hpp"

#include <string>
#include <vector>

#include "broker/headers_match.hpp"
#include "net/amqp/properties.hpp"

namespace sluice::broker {

namespace {

constexpr uint16_t kHeadersFlag = 1u << 13;

// The long strings of header `name` appended to `keys`; an error when the
// header is there but is not an array.
Status collect(const amqp::FieldTable& headers, std::string_view name, std::vector<std::string>& keys) {
    const amqp::FieldValue* v = headers.find(name);
    if (!v) return std::nullopt;
    const amqp::FieldArray* routes = v->as_array();
    if (!routes)
        return amqp_error(reply::precondition_failed, "invalid message: {unacceptable_type_in_header,\"" +
                                                          std::string(name) + "\"," + erlang_type_name(*v) + "}");
    for (const amqp::FieldValue& r : *routes)
        if (const auto* s = std::get_if<std::string>(&r.v)) keys.push_back(*s);
    return std::nullopt;
}

}  // namespace

Status apply_sender_selected(std::shared_ptr<Message>& message) {
    const std::string_view raw = message->properties();
    if (raw.size() < 2 || !((static_cast<uint8_t>(raw[0]) << 8) & kHeadersFlag)) return std::nullopt;
    if (raw.find("CC") == std::string_view::npos) return std::nullopt;  // neither header can be there
    amqp::BasicProperties props;
    if (!amqp::decode_properties(raw, props) || !props.headers) return std::nullopt;
    std::vector<std::string> keys;
    if (Status st = collect(*props.headers, "CC", keys)) return st;
    if (Status st = collect(*props.headers, "BCC", keys)) return st;
    if (props.headers->erase("BCC")) {
        std::string stripped;
        amqp::encode_properties(stripped, props);
        auto copy = std::make_shared<Message>(message->exchange(), message->routing_key(), stripped,
                                              message->body_size());
        copy->append_body(message->body());
        message = std::move(copy);
    }
    message->set_extra_routing_keys(std::move(keys));
    return std::nullopt;
}

}  // namespace sluice::broker
