#include "net/amqp/delivery.hpp"

#include <algorithm>
#include <cstring>

#include "net/amqp/frame.hpp"

namespace sluice::amqp {

namespace {

struct Cursor {
    char* p;
    void u8(uint8_t v) { *p++ = static_cast<char>(v); }
    void u16(uint16_t v) {
        p[0] = static_cast<char>(v >> 8);
        p[1] = static_cast<char>(v);
        p += 2;
    }
    void u32(uint32_t v) {
        p[0] = static_cast<char>(v >> 24);
        p[1] = static_cast<char>(v >> 16);
        p[2] = static_cast<char>(v >> 8);
        p[3] = static_cast<char>(v);
        p += 4;
    }
    void u64(uint64_t v) {
        u32(static_cast<uint32_t>(v >> 32));
        u32(static_cast<uint32_t>(v));
    }
    void bytes(std::string_view s) {
        if (!s.empty()) std::memcpy(p, s.data(), s.size());
        p += s.size();
    }
    void shortstr(std::string_view s) {
        u8(static_cast<uint8_t>(s.size()));
        bytes(s);
    }
};

size_t header_frame_size(std::string_view properties) {
    // class, weight, body size, then the property list (an empty one still
    // has its flag word)
    return kFrameOverhead + 2 + 2 + 8 + (properties.empty() ? 2 : properties.size());
}

void put_header_frame(Cursor& c, uint16_t channel, uint16_t class_id, std::string_view properties,
                      uint64_t body_size) {
    c.u8(kFrameHeader);
    c.u16(channel);
    c.u32(static_cast<uint32_t>(header_frame_size(properties) - kFrameOverhead));
    c.u16(class_id);
    c.u16(0);  // weight
    c.u64(body_size);
    if (properties.empty()) c.u16(0);
    else c.bytes(properties);
    c.u8(kFrameEnd);
}

// Makes room for `fixed` bytes filled in place, and the body frames after them.
char* grow(std::string& out, size_t fixed, std::string_view body, size_t chunk) {
    const size_t frames = (body.size() + chunk - 1) / chunk;
    const size_t at = out.size();
    out.reserve(at + fixed + frames * kFrameOverhead + body.size());
    out.resize(at + fixed);
    return out.data() + at;
}

void append_body_frames(std::string& out, uint16_t channel, std::string_view body, size_t chunk) {
    while (!body.empty()) {
        const size_t n = std::min(body.size(), chunk);
        char head[7];
        Cursor h{head};
        h.u8(kFrameBody);
        h.u16(channel);
        h.u32(static_cast<uint32_t>(n));
        out.append(head, sizeof head);
        out.append(body.data(), n);
        out.push_back(static_cast<char>(kFrameEnd));
        body.remove_prefix(n);
    }
}

}  // namespace

void write_content(std::string& out, uint16_t channel, uint16_t class_id, std::string_view properties,
                   uint64_t body_size, std::string_view body, size_t max_body_chunk) {
    const size_t chunk = std::max<size_t>(1, max_body_chunk);
    Cursor c{grow(out, header_frame_size(properties), body, chunk)};
    put_header_frame(c, channel, class_id, properties, body_size);
    append_body_frames(out, channel, body, chunk);
}

void write_deliver(std::string& out, uint16_t channel, const method::BasicDeliver& d,
                   std::string_view properties, uint64_t body_size, std::string_view body,
                   size_t max_body_chunk) {
    // As the generated encoder: short strings cut at 255 bytes.
    const std::string_view tag = d.consumer_tag.substr(0, 255), exchange = d.exchange.substr(0, 255),
                           key = d.routing_key.substr(0, 255);
    const size_t method_payload = 4 + 1 + tag.size() + 8 + 1 + 1 + exchange.size() + 1 + key.size();
    const size_t chunk = std::max<size_t>(1, max_body_chunk);
    Cursor c{grow(out, kFrameOverhead + method_payload + header_frame_size(properties), body, chunk)};
    c.u8(kFrameMethod);
    c.u16(channel);
    c.u32(static_cast<uint32_t>(method_payload));
    c.u32(method::BasicDeliver::key);
    c.shortstr(tag);
    c.u64(d.delivery_tag);
    c.u8(d.redelivered ? 1 : 0);
    c.shortstr(exchange);
    c.shortstr(key);
    c.u8(kFrameEnd);
    put_header_frame(c, channel, method::BasicDeliver::class_id, properties, body_size);
    append_body_frames(out, channel, body, chunk);
}

}  // namespace sluice::amqp
