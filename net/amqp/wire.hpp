// Big-endian primitives for the AMQP 0-9-1 wire format.
//
// Bytes are carried as std::string_view (input) and appended to std::string
// (output): no allocation per field, and a frame's fields can point straight
// into the read buffer while the frame is being handled.
//
// Thread-safety: plain value types; no shared state.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace sluice::amqp {

// Reads big-endian values from a byte span. Every read checks bounds; after a
// short read ok() is false and every later read returns zero/empty, so a
// decoder can read all fields and check ok() once at the end.
class WireReader {
public:
    explicit WireReader(std::string_view data) : data_(data) {}

    bool ok() const { return ok_; }
    bool at_end() const { return pos_ == data_.size(); }
    size_t remaining() const { return ok_ ? data_.size() - pos_ : 0; }
    size_t position() const { return pos_; }

    uint8_t u8() { return static_cast<uint8_t>(take_int(1)); }
    uint16_t u16() { return static_cast<uint16_t>(take_int(2)); }
    uint32_t u32() { return static_cast<uint32_t>(take_int(4)); }
    uint64_t u64() { return take_int(8); }
    // A short string: one length octet, then that many bytes.
    std::string_view shortstr() { return bytes(u8()); }
    // A long string: a 32-bit length, then that many bytes.
    std::string_view longstr() { return bytes(u32()); }
    std::string_view bytes(size_t n) {
        if (!ok_ || data_.size() - pos_ < n) { ok_ = false; return {}; }
        auto v = data_.substr(pos_, n);
        pos_ += n;
        return v;
    }
    void fail() { ok_ = false; }

private:
    uint64_t take_int(size_t n) {
        if (!ok_ || data_.size() - pos_ < n) { ok_ = false; return 0; }
        uint64_t v = 0;
        for (size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(data_[pos_ + i]);
        pos_ += n;
        return v;
    }

    std::string_view data_;
    size_t pos_ = 0;
    bool ok_ = true;
};

inline void put_u8(std::string& out, uint8_t v) { out.push_back(static_cast<char>(v)); }
inline void put_u16(std::string& out, uint16_t v) {
    char b[2] = {static_cast<char>(v >> 8), static_cast<char>(v)};
    out.append(b, 2);
}
inline void put_u32(std::string& out, uint32_t v) {
    char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                 static_cast<char>(v)};
    out.append(b, 4);
}
inline void put_u64(std::string& out, uint64_t v) {
    put_u32(out, static_cast<uint32_t>(v >> 32));
    put_u32(out, static_cast<uint32_t>(v));
}
// Writes a short string; the caller guarantees s.size() <= 255 (generated
// method encoders truncate longer ones, so callers validate names first).
inline void put_shortstr(std::string& out, std::string_view s) {
    put_u8(out, static_cast<uint8_t>(s.size()));
    out.append(s);
}
inline void put_longstr(std::string& out, std::string_view s) {
    put_u32(out, static_cast<uint32_t>(s.size()));
    out.append(s);
}
// Overwrites a big-endian u32 at `pos` (used to back-patch lengths).
inline void patch_u32(std::string& out, size_t pos, uint32_t v) {
    out[pos] = static_cast<char>(v >> 24);
    out[pos + 1] = static_cast<char>(v >> 16);
    out[pos + 2] = static_cast<char>(v >> 8);
    out[pos + 3] = static_cast<char>(v);
}

}  // namespace sluice::amqp
