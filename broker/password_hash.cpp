#include "broker/password_hash.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <random>

namespace sluice::broker {

namespace {

constexpr size_t kSaltBytes = 4;

const EVP_MD* digest_of(HashAlgorithm a) {
    switch (a) {
        case HashAlgorithm::sha512: return EVP_sha512();
        case HashAlgorithm::md5: return EVP_md5();
        case HashAlgorithm::sha256: break;
    }
    return EVP_sha256();
}

std::string digest(HashAlgorithm a, std::string_view salt, std::string_view password) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestInit_ex(ctx, digest_of(a), nullptr) == 1 &&
              EVP_DigestUpdate(ctx, salt.data(), salt.size()) == 1 &&
              EVP_DigestUpdate(ctx, password.data(), password.size()) == 1 && EVP_DigestFinal_ex(ctx, out, &n) == 1;
    EVP_MD_CTX_free(ctx);
    return ok ? std::string(reinterpret_cast<const char*>(out), n) : std::string();
}

std::string base64(std::string_view in) {
    std::string out(4 * ((in.size() + 2) / 3), '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
    out.resize(n < 0 ? 0 : size_t(n));
    return out;
}

// Strict base64 (padding required); false on anything else.
bool unbase64(std::string_view in, std::string& out) {
    if (in.empty() || in.size() % 4 != 0) return false;
    out.assign(3 * in.size() / 4, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
    if (n < 0) return false;
    size_t pad = in.back() == '=' ? (in[in.size() - 2] == '=' ? 2 : 1) : 0;  // DecodeBlock keeps padding's zeros
    out.resize(size_t(n) - pad);
    return true;
}

}  // namespace

std::optional<HashAlgorithm> parse_hash_algorithm(std::string_view name) {
    if (name == "rabbit_password_hashing_sha256") return HashAlgorithm::sha256;
    if (name == "rabbit_password_hashing_sha512") return HashAlgorithm::sha512;
    if (name == "rabbit_password_hashing_md5") return HashAlgorithm::md5;
    return std::nullopt;
}

std::string_view hash_algorithm_name(HashAlgorithm a) {
    switch (a) {
        case HashAlgorithm::sha512: return "rabbit_password_hashing_sha512";
        case HashAlgorithm::md5: return "rabbit_password_hashing_md5";
        case HashAlgorithm::sha256: break;
    }
    return "rabbit_password_hashing_sha256";
}

std::string hash_password(std::string_view password, std::string_view salt, HashAlgorithm algorithm) {
    std::string raw(salt);
    raw += digest(algorithm, salt, password);
    return base64(raw);
}

std::string hash_password(std::string_view password, HashAlgorithm algorithm) {
    unsigned char salt[kSaltBytes];
    if (RAND_bytes(salt, sizeof salt) != 1) {
        // libcrypto's generator failed (no entropy source): the OS's.
        std::random_device rd;
        for (unsigned char& c : salt) c = static_cast<unsigned char>(rd());
    }
    return hash_password(password, std::string_view(reinterpret_cast<const char*>(salt), sizeof salt), algorithm);
}

bool valid_password_hash(std::string_view stored, HashAlgorithm algorithm) {
    std::string raw;
    return unbase64(stored, raw) && raw.size() == kSaltBytes + size_t(EVP_MD_size(digest_of(algorithm)));
}

bool verify_password(std::string_view password, std::string_view stored, HashAlgorithm algorithm) {
    std::string raw;
    if (!unbase64(stored, raw) || raw.size() != kSaltBytes + size_t(EVP_MD_size(digest_of(algorithm)))) return false;
    std::string_view salt(raw.data(), kSaltBytes);
    std::string expected = digest(algorithm, salt, password);
    return expected.size() == raw.size() - kSaltBytes &&
           CRYPTO_memcmp(expected.data(), raw.data() + kSaltBytes, expected.size()) == 0;
}

}  // namespace sluice::broker
