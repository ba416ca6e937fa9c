// What sluice-perf writes at the start of every message body, so a consumer
// can compute end-to-end latency and tell who sent it:
//
//   send time (u64, steady_clock ns, big-endian) | producer id (u32) | sequence (u32)
//
// steady_clock is CLOCK_MONOTONIC on Linux: comparable across threads and
// processes of one machine. Also a minimal reader of the two properties RPC
// needs (correlation-id, reply-to) that allocates nothing.
//
// Thread-safety: stateless functions.
#pragma once

#include <bit>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace sluice::perf {

inline constexpr uint32_t kBodyStampSize = 16;

inline uint64_t now_ns() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count());
}

inline void store_be64(char* p, uint64_t v) {
    if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap64(v);
    std::memcpy(p, &v, 8);
}
inline void store_be32(char* p, uint32_t v) {
    if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap32(v);
    std::memcpy(p, &v, 4);
}
inline uint64_t load_be64(const char* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap64(v);
    return v;
}
inline uint32_t load_be32(const char* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap32(v);
    return v;
}

inline void write_stamp(char* body, uint64_t send_ns, uint32_t producer, uint32_t seq) {
    store_be64(body, send_ns);
    store_be32(body + 8, producer);
    store_be32(body + 12, seq);
}

struct Stamp {
    uint64_t send_ns = 0;
    uint32_t producer = 0;
    uint32_t seq = 0;
};

// False when the body is too short to carry a stamp (not ours).
inline bool read_stamp(std::string_view body_start, Stamp& out) {
    if (body_start.size() < kBodyStampSize) return false;
    out.send_ns = load_be64(body_start.data());
    out.producer = load_be32(body_start.data() + 8);
    out.seq = load_be32(body_start.data() + 12);
    return true;
}

// The correlation-id and reply-to of encoded basic properties (flags +
// property list). Returns false on malformed input; absent ones stay empty.
inline bool peek_rpc_properties(std::string_view raw, std::string_view& correlation_id,
                                std::string_view& reply_to) {
    correlation_id = {};
    reply_to = {};
    if (raw.size() < 2) return false;
    const uint16_t flags = static_cast<uint16_t>((static_cast<uint8_t>(raw[0]) << 8) | static_cast<uint8_t>(raw[1]));
    size_t pos = 2;
    auto shortstr = [&](std::string_view* out) {
        if (pos >= raw.size()) return false;
        size_t n = static_cast<uint8_t>(raw[pos]);
        if (raw.size() - pos - 1 < n) return false;
        if (out) *out = raw.substr(pos + 1, n);
        pos += 1 + n;
        return true;
    };
    if ((flags & 0x8000) && !shortstr(nullptr)) return false;  // content-type
    if ((flags & 0x4000) && !shortstr(nullptr)) return false;  // content-encoding
    if (flags & 0x2000) {                                       // headers (long-prefixed table)
        if (raw.size() - pos < 4) return false;
        size_t n = load_be32(raw.data() + pos);
        if (raw.size() - pos - 4 < n) return false;
        pos += 4 + n;
    }
    if (flags & 0x1000) { if (pos >= raw.size()) return false; ++pos; }  // delivery-mode
    if (flags & 0x0800) { if (pos >= raw.size()) return false; ++pos; }  // priority
    if ((flags & 0x0400) && !shortstr(&correlation_id)) return false;
    if ((flags & 0x0200) && !shortstr(&reply_to)) return false;
    return true;
}

}  // namespace sluice::perf
