// Hashes whose values are stored or must agree across restarts (consistent-
// hash routing, deduplication's disk index): fixed across builds and
// platforms, unlike std::hash.
#pragma once

#include <cstdint>
#include <string_view>

namespace sluice::broker {

// splitmix64's finaliser: every input bit moves every output bit.
inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

// 64-bit hash of bytes: FNV-1a, then mix64.
inline uint64_t stable_hash(std::string_view bytes) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (unsigned char c : bytes) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    return mix64(h ^ bytes.size());
}

}  // namespace sluice::broker
