// Salted password hashes in RabbitMQ's format, so users move between RabbitMQ
// and Sluice through definitions files unchanged.
//
// rabbit_password_hashing_sha256 (RabbitMQ's default), _sha512 and _md5:
// salt = 4 random bytes, hash = H(salt ++ UTF-8 password), stored as
// base64(salt ++ hash). OpenSSL's libcrypto computes the digests and the
// salt (RAND_bytes).
//
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sluice::broker {

enum class HashAlgorithm { sha256, sha512, md5 };

// "rabbit_password_hashing_sha256" ↔ sha256, …; nullopt for other names.
std::optional<HashAlgorithm> parse_hash_algorithm(std::string_view name);
std::string_view hash_algorithm_name(HashAlgorithm a);

// base64(salt ++ H(salt ++ password)) with a fresh random salt.
std::string hash_password(std::string_view password, HashAlgorithm algorithm = HashAlgorithm::sha256);
// The same with a given 4-byte salt (tests, reproducible vectors).
std::string hash_password(std::string_view password, std::string_view salt, HashAlgorithm algorithm);
// True when `stored` (base64, as above) is the hash of `password`
// (constant-time comparison). False for a malformed `stored`.
bool verify_password(std::string_view password, std::string_view stored, HashAlgorithm algorithm);
// A well-formed stored hash for this algorithm (base64 of 4 + digest bytes).
bool valid_password_hash(std::string_view stored, HashAlgorithm algorithm);

}  // namespace sluice::broker
