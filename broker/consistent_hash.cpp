#include "broker/consistent_hash.hpp"

#include <cmath>

namespace sluice::broker {

namespace {

// splitmix64's finaliser: every input bit moves every output bit.
uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

}  // namespace

uint64_t stable_hash(std::string_view bytes) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (unsigned char c : bytes) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    return mix(h ^ bytes.size());
}

double consistent_hash_score(uint64_t key_hash, uint64_t identity) {
    // Two rounds so that destinations whose identities differ in few bits
    // still draw independent scores for the same key.
    uint64_t bits = mix(mix(key_hash ^ identity) + 0x9e3779b97f4a7c15ULL);
    double u = (double(bits >> 11) + 0.5) * 0x1.0p-53;  // in (0, 1)
    return -std::log(u);
}

}  // namespace sluice::broker
