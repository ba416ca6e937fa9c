// Password hashes in RabbitMQ's format and permission regexes (broker/
// password_hash.*, broker/access_control.*), without sessions.
#include <gtest/gtest.h>

#include <set>

#include "broker/access_control.hpp"
#include "broker/password_hash.hpp"

namespace sluice::broker {
namespace {

std::string bytes(std::initializer_list<unsigned char> b) { return std::string(b.begin(), b.end()); }

// The example of RabbitMQ's passwords guide ("Computing Password Hash"):
// password "test12", salt 0x908DC60A; base64(salt ++ SHA-256(salt ++ "test12")).
// Reproduce with /usr/bin/python3:
//   salt = bytes.fromhex("908DC60A")
//   base64.b64encode(salt + hashlib.sha256(salt + b"test12").digest())
TEST(PasswordHash, MatchesRabbitMqsSha256Example) {
    const std::string salt = bytes({0x90, 0x8D, 0xC6, 0x0A});
    EXPECT_EQ(hash_password("test12", salt, HashAlgorithm::sha256), "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR");
    EXPECT_TRUE(verify_password("test12", "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR", HashAlgorithm::sha256));
    EXPECT_FALSE(verify_password("test13", "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR", HashAlgorithm::sha256));
    EXPECT_FALSE(verify_password("", "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR", HashAlgorithm::sha256));
}

// UTF-8 password "pässwörd", salt 01020304, the same derivation with
// hashlib.sha512 / hashlib.md5 over salt + "pässwörd".encode().
TEST(PasswordHash, Sha512AndMd5AsRabbitMqsOtherModules) {
    const std::string salt = bytes({1, 2, 3, 4});
    const std::string pw = bytes({'p', 0xC3, 0xA4, 's', 's', 'w', 0xC3, 0xB6, 'r', 'd'});
    std::string sha512 = hash_password(pw, salt, HashAlgorithm::sha512);
    EXPECT_EQ(sha512, "AQIDBNsKKqE/zLqmj2um5nIC+jebR2ySQbuQzXrLMSmkg4mKDd/PAIfjnjdiMSRyz4CkQ6JvAlsEQlassV5DxRLXm0s=");
    EXPECT_EQ(hash_password(pw, salt, HashAlgorithm::md5), "AQIDBDjGPQbv9MJE+LLBfuYlBiU=");
    EXPECT_TRUE(verify_password(pw, sha512, HashAlgorithm::sha512));
    EXPECT_FALSE(verify_password("passwort", sha512, HashAlgorithm::sha512));
    EXPECT_FALSE(verify_password(pw, sha512, HashAlgorithm::sha256));  // not a SHA-256 hash's length
}

TEST(PasswordHash, FreshSaltEachTimeAndEachVerifies) {
    std::set<std::string> seen;
    for (int i = 0; i < 20; ++i) {
        std::string h = hash_password("secret");
        EXPECT_TRUE(valid_password_hash(h, HashAlgorithm::sha256));
        EXPECT_TRUE(verify_password("secret", h, HashAlgorithm::sha256));
        EXPECT_FALSE(verify_password("Secret", h, HashAlgorithm::sha256));
        seen.insert(h);
    }
    EXPECT_GE(seen.size(), 19u);  // 4 random bytes of salt: a repeat is a 1-in-2^32 event per pair
}

TEST(PasswordHash, MalformedStoredHashesNeverVerify) {
    for (const char* bad : {"", "not base64!", "kI3GCqW5", "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2PO",
                            "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR===="}) {
        EXPECT_FALSE(valid_password_hash(bad, HashAlgorithm::sha256)) << bad;
        EXPECT_FALSE(verify_password("test12", bad, HashAlgorithm::sha256)) << bad;
    }
}

TEST(PasswordHash, AlgorithmNamesAreRabbitMqs) {
    EXPECT_EQ(parse_hash_algorithm("rabbit_password_hashing_sha256"), HashAlgorithm::sha256);
    EXPECT_EQ(parse_hash_algorithm("rabbit_password_hashing_sha512"), HashAlgorithm::sha512);
    EXPECT_EQ(parse_hash_algorithm("rabbit_password_hashing_md5"), HashAlgorithm::md5);
    EXPECT_FALSE(parse_hash_algorithm("sha256").has_value());
    EXPECT_EQ(hash_algorithm_name(HashAlgorithm::sha512), "rabbit_password_hashing_sha512");
}

PermissionsPtr compile(std::string c, std::string w, std::string r) {
    auto v = CompiledPermissions::compile({std::move(c), std::move(w), std::move(r)});
    EXPECT_TRUE(std::holds_alternative<PermissionsPtr>(v));
    return std::holds_alternative<PermissionsPtr>(v) ? std::get<PermissionsPtr>(v) : nullptr;
}

TEST(Permissions, PatternsSearchLikeRabbitMqsReRun) {
    auto p = compile("^app\\.", "app", ".*");
    ASSERT_TRUE(p);
    EXPECT_TRUE(p->allows(Permission::configure, "app.q"));
    EXPECT_FALSE(p->allows(Permission::configure, "my.app.q"));  // anchored
    EXPECT_TRUE(p->allows(Permission::write, "my.app.q"));       // unanchored: found anywhere
    EXPECT_FALSE(p->allows(Permission::write, "other"));
    EXPECT_TRUE(p->allows(Permission::read, "anything"));
    EXPECT_TRUE(p->allows(Permission::read, ""));
}

TEST(Permissions, EmptyPatternAllowsNothing) {
    auto p = compile("", "", "^amq\\.default$");
    ASSERT_TRUE(p);
    EXPECT_FALSE(p->allows(Permission::configure, "q"));
    EXPECT_FALSE(p->allows(Permission::write, "amq.default"));
    EXPECT_TRUE(p->allows(Permission::read, "amq.default"));
    EXPECT_FALSE(p->allows(Permission::read, "amq.defaults"));
}

TEST(Permissions, InvalidRegexIsAnErrorNotAThrow) {
    auto v = CompiledPermissions::compile({"(", ".*", ".*"});
    ASSERT_TRUE(std::holds_alternative<std::string>(v));
    EXPECT_NE(std::get<std::string>(v).find("invalid regular expression '('"), std::string::npos);
}

TEST(Permissions, RefusalTextAsRabbitMqWordsIt) {
    EXPECT_EQ(access_refused_text(ResourceKind::queue, "q", "/", "u"), "access to queue 'q' in vhost '/' refused for user 'u'");
    EXPECT_EQ(access_refused_text(ResourceKind::exchange, "", "v", "u"),
              "access to exchange 'amq.default' in vhost 'v' refused for user 'u'");
}

}  // namespace
}  // namespace sluice::broker
