#include "broker/consistent_hash.hpp"

#include <cmath>

namespace sluice::broker {

double consistent_hash_score(uint64_t key_hash, uint64_t identity) {
    // Two rounds so that destinations whose identities differ in few bits
    // still draw independent scores for the same key.
    uint64_t bits = mix64(mix64(key_hash ^ identity) + 0x9e3779b97f4a7c15ULL);
    double u = (double(bits >> 11) + 0.5) * 0x1.0p-53;  // in (0, 1)
    return -std::log(u);
}

}  // namespace sluice::broker
