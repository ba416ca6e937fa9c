// Basic-class content properties: full decode/encode, and allocation-free peeks
// at the properties the broker reads on every publish (delivery-mode for
// persistence, priority for priority queues, expiration for TTLs).
#include "net/amqp/properties.hpp"

#include "net/amqp/wire.hpp"

namespace sluice::amqp {

namespace {

enum Flag : uint16_t {
    kContentType = 1u << 15,
    kContentEncoding = 1u << 14,
    kHeaders = 1u << 13,
    kDeliveryMode = 1u << 12,
    kPriority = 1u << 11,
    kCorrelationId = 1u << 10,
    kReplyTo = 1u << 9,
    kExpiration = 1u << 8,
    kMessageId = 1u << 7,
    kTimestamp = 1u << 6,
    kType = 1u << 5,
    kUserId = 1u << 4,
    kAppId = 1u << 3,
    kClusterId = 1u << 2,
    // Bit 1 is unused (ignored); bit 0 announces another flag word, which the
    // basic class never needs: rejected.
    kContinuation = 1u << 0,
};

void put_short(std::string& out, const std::optional<std::string>& s) {
    if (s) put_shortstr(out, std::string_view(*s).substr(0, 255));
}

void read_short(WireReader& r, uint16_t flags, Flag f, std::optional<std::string>& out) {
    if (flags & f) out.emplace(r.shortstr());
}

// Reads the flag word and skips the properties before `target`, which must be
// one of delivery-mode or priority (everything before them has a length).
std::optional<uint8_t> peek_octet(std::string_view raw, Flag target) {
    WireReader r(raw);
    const uint16_t flags = r.u16();
    if (!r.ok() || (flags & kContinuation) || !(flags & target)) return std::nullopt;
    if (flags & kContentType) r.shortstr();
    if (flags & kContentEncoding) r.shortstr();
    if (flags & kHeaders) r.longstr();  // a table is a u32 length + body
    if (target == kPriority && (flags & kDeliveryMode)) r.u8();
    const uint8_t v = r.u8();
    if (!r.ok()) return std::nullopt;
    return v;
}

}  // namespace

bool decode_properties(std::string_view raw, BasicProperties& out) {
    out = BasicProperties{};
    WireReader r(raw);
    const uint16_t flags = r.u16();
    if (!r.ok() || (flags & kContinuation)) return false;
    read_short(r, flags, kContentType, out.content_type);
    read_short(r, flags, kContentEncoding, out.content_encoding);
    if (flags & kHeaders) {
        const size_t at = r.position();
        r.longstr();
        if (!r.ok()) return false;
        std::string_view table = raw.substr(at, r.position() - at);
        if (decode_table(table, out.headers.emplace()) != TableError::none || !table.empty()) {
            return false;
        }
    }
    if (flags & kDeliveryMode) out.delivery_mode = r.u8();
    if (flags & kPriority) out.priority = r.u8();
    read_short(r, flags, kCorrelationId, out.correlation_id);
    read_short(r, flags, kReplyTo, out.reply_to);
    read_short(r, flags, kExpiration, out.expiration);
    read_short(r, flags, kMessageId, out.message_id);
    if (flags & kTimestamp) out.timestamp = r.u64();
    read_short(r, flags, kType, out.type);
    read_short(r, flags, kUserId, out.user_id);
    read_short(r, flags, kAppId, out.app_id);
    read_short(r, flags, kClusterId, out.cluster_id);
    // Trailing bytes after the last property are ignored, as for methods.
    return r.ok();
}

void encode_properties(std::string& out, const BasicProperties& p) {
    uint16_t flags = 0;
    if (p.content_type) flags |= kContentType;
    if (p.content_encoding) flags |= kContentEncoding;
    if (p.headers) flags |= kHeaders;
    if (p.delivery_mode) flags |= kDeliveryMode;
    if (p.priority) flags |= kPriority;
    if (p.correlation_id) flags |= kCorrelationId;
    if (p.reply_to) flags |= kReplyTo;
    if (p.expiration) flags |= kExpiration;
    if (p.message_id) flags |= kMessageId;
    if (p.timestamp) flags |= kTimestamp;
    if (p.type) flags |= kType;
    if (p.user_id) flags |= kUserId;
    if (p.app_id) flags |= kAppId;
    if (p.cluster_id) flags |= kClusterId;
    put_u16(out, flags);
    put_short(out, p.content_type);
    put_short(out, p.content_encoding);
    if (p.headers) encode_table(out, *p.headers);
    if (p.delivery_mode) put_u8(out, *p.delivery_mode);
    if (p.priority) put_u8(out, *p.priority);
    put_short(out, p.correlation_id);
    put_short(out, p.reply_to);
    put_short(out, p.expiration);
    put_short(out, p.message_id);
    if (p.timestamp) put_u64(out, *p.timestamp);
    put_short(out, p.type);
    put_short(out, p.user_id);
    put_short(out, p.app_id);
    put_short(out, p.cluster_id);
}

std::optional<uint8_t> peek_delivery_mode(std::string_view raw) {
    return peek_octet(raw, kDeliveryMode);
}

std::optional<uint8_t> peek_priority(std::string_view raw) { return peek_octet(raw, kPriority); }

std::optional<std::string_view> peek_expiration(std::string_view raw) {
    WireReader r(raw);
    const uint16_t flags = r.u16();
    if (!r.ok() || (flags & kContinuation) || !(flags & kExpiration)) return std::nullopt;
    if (flags & kContentType) r.shortstr();
    if (flags & kContentEncoding) r.shortstr();
    if (flags & kHeaders) r.longstr();
    if (flags & kDeliveryMode) r.u8();
    if (flags & kPriority) r.u8();
    if (flags & kCorrelationId) r.shortstr();
    if (flags & kReplyTo) r.shortstr();
    std::string_view v = r.shortstr();
    if (!r.ok()) return std::nullopt;
    return v;
}

bool decode_content_header(std::string_view payload, ContentHeader& out) {
    WireReader r(payload);
    const uint16_t class_id = r.u16();
    r.u16();  // weight: unused, must be 0; not worth a connection error
    const uint64_t body_size = r.u64();
    if (!r.ok() || r.remaining() < 2) return false;  // flags are mandatory
    out.class_id = class_id;
    out.body_size = body_size;
    out.properties = payload.substr(r.position());
    return true;
}

void encode_content_header(std::string& out, uint16_t class_id, uint64_t body_size,
                           std::string_view raw_properties) {
    put_u16(out, class_id);
    put_u16(out, 0);
    put_u64(out, body_size);
    // An empty property list still needs its flag word: "no properties".
    if (raw_properties.empty()) put_u16(out, 0);
    out.append(raw_properties);
}

}  // namespace sluice::amqp
