#include "storage/crc32c.hpp"

#include <array>
#include <cstring>

namespace sluice::storage {
namespace {

constexpr uint32_t kPoly = 0x82f63b78;  // reflected Castagnoli polynomial

constexpr std::array<uint32_t, 256> make_table() {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
        t[i] = c;
    }
    return t;
}
constexpr auto kTable = make_table();

uint32_t portable(const unsigned char* p, size_t n, uint32_t c) {
    while (n--) c = kTable[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t hardware(const unsigned char* p, size_t n, uint32_t c) {
    uint64_t c64 = c;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
    }
    c = static_cast<uint32_t>(c64);
    for (; n > 0; --n) c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
// Set at static initialisation; a call before that (from another object's
// static initialiser) sees false and takes the table: the same CRC.
const bool kHardware = (__builtin_cpu_init(), __builtin_cpu_supports("sse4.2"));
#endif

}  // namespace

uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc) {
    return ~portable(static_cast<const unsigned char*>(data), n, ~crc);
}

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
    const auto* p = static_cast<const unsigned char*>(data);
    uint32_t c = ~crc;
#if defined(__x86_64__)
    c = kHardware ? hardware(p, n, c) : portable(p, n, c);
#else
    c = portable(p, n, c);
#endif
    return ~c;
}

}  // namespace sluice::storage

// The link (storage/CMakeLists.txt) sends RocksDB's calls of
// rocksdb::crc32c::Extend(uint32_t, const char*, size_t) here. Same contract:
// the CRC-32C of `n` more bytes after a CRC of `init`.
extern "C" uint32_t __wrap__ZN7rocksdb6crc32c6ExtendEjPKcm(uint32_t init, const char* data, size_t n) {
    return sluice::storage::crc32c(data, n, init);
}
