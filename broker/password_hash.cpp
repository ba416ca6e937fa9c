#include "broker/password_hash.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/md5.h>
#include <openssl/sha.h>

#include <random>

#include "broker/random_bytes.hpp"

namespace sluice::broker {

namespace {

constexpr size_t kSaltBytes = 4;

size_t digest_size(HashAlgorithm a) {
    switch (a) {
        case HashAlgorithm::sha512: return SHA512_DIGEST_LENGTH;
        case HashAlgorithm::md5: return MD5_DIGEST_LENGTH;
        case HashAlgorithm::sha256: break;
    }
    return SHA256_DIGEST_LENGTH;
}

// OpenSSL 3's EVP interface fetches each algorithm from a provider, and its
// first use loads the default provider and its tables: +2 MiB resident in a
// broker that idles at 17 MiB (issue 12 counts every page), paid at the first
// login. The low-level functions are the same implementations without that
// step. OpenSSL 3.0 deprecates them; should a later one remove them, these
// three digests are small enough to carry here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
template <class Ctx, class Init, class Update, class Final>
std::string digest_with(Init init, Update update, Final final, size_t size, std::string_view salt,
                        std::string_view password) {
    Ctx ctx;
    unsigned char out[SHA512_DIGEST_LENGTH];
    bool ok = init(&ctx) == 1 && update(&ctx, salt.data(), salt.size()) == 1 &&
              update(&ctx, password.data(), password.size()) == 1 && final(out, &ctx) == 1;
    OPENSSL_cleanse(&ctx, sizeof ctx);
    return ok ? std::string(reinterpret_cast<const char*>(out), size) : std::string();
}

std::string digest(HashAlgorithm a, std::string_view salt, std::string_view password) {
    switch (a) {
        case HashAlgorithm::sha512:
            return digest_with<SHA512_CTX>(SHA512_Init, SHA512_Update, SHA512_Final, SHA512_DIGEST_LENGTH, salt, password);
        case HashAlgorithm::md5:
            return digest_with<MD5_CTX>(MD5_Init, MD5_Update, MD5_Final, MD5_DIGEST_LENGTH, salt, password);
        case HashAlgorithm::sha256: break;
    }
    return digest_with<SHA256_CTX>(SHA256_Init, SHA256_Update, SHA256_Final, SHA256_DIGEST_LENGTH, salt, password);
}
#pragma GCC diagnostic pop

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
    if (!random_bytes(salt, sizeof salt)) {
        std::random_device rd;
        for (unsigned char& c : salt) c = static_cast<unsigned char>(rd());
    }
    return hash_password(password, std::string_view(reinterpret_cast<const char*>(salt), sizeof salt), algorithm);
}

bool valid_password_hash(std::string_view stored, HashAlgorithm algorithm) {
    std::string raw;
    return unbase64(stored, raw) && raw.size() == kSaltBytes + digest_size(algorithm);
}

bool verify_password(std::string_view password, std::string_view stored, HashAlgorithm algorithm) {
    std::string raw;
    if (!unbase64(stored, raw) || raw.size() != kSaltBytes + digest_size(algorithm)) return false;
    std::string_view salt(raw.data(), kSaltBytes);
    std::string expected = digest(algorithm, salt, password);
    return expected.size() == raw.size() - kSaltBytes &&
           CRYPTO_memcmp(expected.data(), raw.data() + kSaltBytes, expected.size()) == 0;
}

}  // namespace sluice::broker
