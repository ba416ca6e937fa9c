// libFuzzer target: the AMQP codec over arbitrary bytes.
//
// The input is read as a stream of frames (parse_frame); every frame payload,
// and the whole input when it does not start with a frame, goes through each
// decoder: decode_method, decode_content_header + decode_properties,
// decode_table. Besides "no crash, no UB, no leak", it checks properties:
//   - parse_frame: a frame's payload lies inside the input, `consumed` is
//     payload + 8, and a frame over max_frame_size is never returned as ok;
//   - a decoded method re-encodes, decodes again to an equal method (and the
//     second encoding is byte-identical to the first);
//   - likewise for properties and field tables;
//   - peek_delivery_mode / peek_priority agree with a full decode.
// NaN floats in tables compare unequal to themselves, so struct equality is
// only demanded when no NaN is inside; byte equality is demanded always.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "net/amqp/field_table.hpp"
#include "net/amqp/frame.hpp"
#include "net/amqp/methods.hpp"
#include "net/amqp/properties.hpp"
#include "tests/fuzz/table_checks.hpp"

namespace amqp = sluice::amqp;
using sluice::fuzz::check_table;
using sluice::fuzz::fail;
using sluice::fuzz::has_nan;

namespace {

bool method_has_nan(const amqp::Method& m) {
    return std::visit(
        [](const auto& x) -> bool {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, std::monostate>) {
                return false;
            } else {
                bool nan = false;
                x.visit_fields([&](std::string_view, const auto& field) {
                    if constexpr (std::is_same_v<std::decay_t<decltype(field)>, amqp::FieldTable>)
                        nan = nan || has_nan(field);
                });
                return nan;
            }
        },
        m);
}

void check_method(std::string_view payload) {
    amqp::Method m;
    const amqp::DecodeError e = amqp::decode_method(payload, m);
    const uint32_t key = amqp::peek_method_key(payload);
    if (e != amqp::DecodeError::none) {
        CHECK(std::holds_alternative<std::monostate>(m));
        if (e == amqp::DecodeError::unknown_method) CHECK(amqp::method_name(key).empty());
        return;
    }
    CHECK(!std::holds_alternative<std::monostate>(m));
    CHECK(!amqp::method_name(key).empty());

    std::string first;
    amqp::encode_method(first, m);
    CHECK(amqp::peek_method_key(first) == key);
    amqp::Method again;
    CHECK(amqp::decode_method(first, again) == amqp::DecodeError::none);
    CHECK(m.index() == again.index());
    if (!method_has_nan(m)) CHECK(m == again);
    std::string second;
    amqp::encode_method(second, again);
    CHECK(first == second);

    // The typed dispatch decodes the same thing as the variant decoder.
    bool dispatched = false;
    const amqp::DecodeError de = amqp::dispatch_method(payload, [&](const auto& typed) {
        using T = std::decay_t<decltype(typed)>;
        dispatched = true;
        CHECK(std::holds_alternative<T>(m));
        std::string enc;
        amqp::encode(enc, typed);
        CHECK(enc == first);
    });
    CHECK(de == amqp::DecodeError::none && dispatched);

    // A method frame around it parses back to the same payload.
    std::string frame;
    amqp::write_method(frame, 7, again);
    amqp::FrameParse p = amqp::parse_frame(frame, 0);
    CHECK(p.status == amqp::FrameStatus::ok);
    CHECK(p.frame.type == amqp::kFrameMethod && p.frame.channel == 7);
    CHECK(p.frame.payload == first);
}

void check_properties(std::string_view raw) {
    amqp::BasicProperties props;
    const bool ok = amqp::decode_properties(raw, props);
    if (!ok) return;
    // The allocation-free peeks agree with the full decode.
    CHECK(amqp::peek_delivery_mode(raw) == props.delivery_mode);
    CHECK(amqp::peek_priority(raw) == props.priority);

    std::string first;
    amqp::encode_properties(first, props);
    amqp::BasicProperties again;
    CHECK(amqp::decode_properties(first, again));
    if (!(props.headers && has_nan(*props.headers))) CHECK(props == again);
    std::string second;
    amqp::encode_properties(second, again);
    CHECK(first == second);
}

void check_content_header(std::string_view payload) {
    amqp::ContentHeader h;
    if (!amqp::decode_content_header(payload, h)) return;
    CHECK(h.properties.size() >= 2);
    CHECK(h.properties.data() >= payload.data() &&
          h.properties.data() + h.properties.size() <= payload.data() + payload.size());
    std::string enc;
    amqp::encode_content_header(enc, h.class_id, h.body_size, h.properties);
    amqp::ContentHeader again;
    CHECK(amqp::decode_content_header(enc, again));
    CHECK(again.class_id == h.class_id && again.body_size == h.body_size && again.properties == h.properties);
    check_properties(h.properties);
}

void check_payload(std::string_view payload) {
    check_method(payload);
    check_content_header(payload);
    check_properties(payload);
    check_table(payload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    // The negotiated limit varies with the input so the too_large path is hit.
    const uint32_t limits[] = {0, amqp::kFrameMinSize, 131072};
    const uint32_t max_frame = limits[size % 3];

    std::string_view in = input;
    size_t frames = 0;
    while (!in.empty()) {
        amqp::FrameParse p = amqp::parse_frame(in, max_frame);
        if (p.status != amqp::FrameStatus::ok) {
            if (p.status == amqp::FrameStatus::need_more) CHECK(p.consumed == 0);
            break;
        }
        ++frames;
        CHECK(p.consumed == p.frame.payload.size() + amqp::kFrameOverhead);
        CHECK(p.consumed <= in.size());
        CHECK(max_frame == 0 || p.consumed <= max_frame);
        CHECK(p.frame.payload.data() == in.data() + amqp::kFrameHeaderSize);
        switch (p.frame.type) {
            case amqp::kFrameMethod: check_method(p.frame.payload); break;
            case amqp::kFrameHeader: check_content_header(p.frame.payload); break;
            case amqp::kFrameBody: break;
            case amqp::kFrameHeartbeat: break;
            default: fail("parse_frame returned ok for an unknown frame type");
        }
        // Tables hide anywhere: try the payload as one too.
        check_table(p.frame.payload);
        // write_frame(parse_frame(x)) == x.
        std::string rewritten;
        amqp::write_frame(rewritten, p.frame.type, p.frame.channel, p.frame.payload);
        CHECK(rewritten == in.substr(0, p.consumed));
        in.remove_prefix(p.consumed);
    }
    if (frames == 0) check_payload(input);
    return 0;
}
