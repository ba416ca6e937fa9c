// Content-header properties: all 14 together, each alone (each flag bit),
// the allocation-free peeks, content headers, and malformed input.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "net/amqp/properties.hpp"
#include "net/amqp/wire.hpp"

namespace sluice::amqp {
namespace {

BasicProperties all_properties() {
    BasicProperties p;
    p.content_type = "application/json";
    p.content_encoding = "gzip";
    p.headers.emplace();
    p.headers->set("x-death", FieldValue(FieldArray{FieldValue(FieldTable{})}));
    p.headers->set("n", FieldValue(int64_t(-1)));
    p.delivery_mode = 2;
    p.priority = 9;
    p.correlation_id = "corr";
    p.reply_to = "amq.rabbitmq.reply-to.g1h2AA";
    p.expiration = "60000";
    p.message_id = "m-1";
    p.timestamp = 0xFFFFFFFFFFFFFFFFull;
    p.type = "created";
    p.user_id = "guest";
    p.app_id = "billing";
    p.cluster_id = std::string(255, 'c');
    return p;
}

std::string encoded(const BasicProperties& p) {
    std::string out;
    encode_properties(out, p);
    return out;
}

uint16_t flags_of(std::string_view raw) {
    WireReader r(raw);
    return r.u16();
}

struct One {
    const char* name;
    int bit;
    std::function<void(BasicProperties&)> set;
    size_t value_size;  // encoded size after the flag word
};

std::vector<One> each_property() {
    return {
        {"content-type", 15, [](auto& p) { p.content_type = "text/plain"; }, 11},
        {"content-encoding", 14, [](auto& p) { p.content_encoding = "utf-8"; }, 6},
        {"headers", 13, [](auto& p) { p.headers.emplace().set("k", FieldValue(true)); }, 4 + 4},
        {"delivery-mode", 12, [](auto& p) { p.delivery_mode = 1; }, 1},
        {"priority", 11, [](auto& p) { p.priority = 0; }, 1},
        {"correlation-id", 10, [](auto& p) { p.correlation_id = ""; }, 1},
        {"reply-to", 9, [](auto& p) { p.reply_to = "r"; }, 2},
        {"expiration", 8, [](auto& p) { p.expiration = "10"; }, 3},
        {"message-id", 7, [](auto& p) { p.message_id = "id"; }, 3},
        {"timestamp", 6, [](auto& p) { p.timestamp = 1; }, 8},
        {"type", 5, [](auto& p) { p.type = "t"; }, 2},
        {"user-id", 4, [](auto& p) { p.user_id = "u"; }, 2},
        {"app-id", 3, [](auto& p) { p.app_id = "a"; }, 2},
        {"cluster-id", 2, [](auto& p) { p.cluster_id = "c"; }, 2},
    };
}

TEST(Properties, AllFourteenRoundTrip) {
    const BasicProperties p = all_properties();
    const std::string raw = encoded(p);
    EXPECT_EQ(flags_of(raw), 0xFFFC);
    BasicProperties back;
    ASSERT_TRUE(decode_properties(raw, back));
    EXPECT_TRUE(back == p);
    EXPECT_EQ(encoded(back), raw);
    EXPECT_EQ(peek_delivery_mode(raw), 2);
    EXPECT_EQ(peek_priority(raw), 9);
}

TEST(Properties, NoneIsJustTheFlagWord) {
    const std::string raw = encoded(BasicProperties{});
    EXPECT_EQ(raw, std::string(2, '\0'));
    BasicProperties back = all_properties();
    ASSERT_TRUE(decode_properties(raw, back));
    EXPECT_TRUE(back == BasicProperties{});  // decode resets what was there
    EXPECT_EQ(peek_delivery_mode(raw), std::nullopt);
    EXPECT_EQ(peek_priority(raw), std::nullopt);
}

TEST(Properties, EachPropertyAloneSetsItsOwnBit) {
    for (const One& one : each_property()) {
        SCOPED_TRACE(one.name);
        BasicProperties p;
        one.set(p);
        const std::string raw = encoded(p);
        EXPECT_EQ(flags_of(raw), 1u << one.bit);
        EXPECT_EQ(raw.size(), 2 + one.value_size);
        BasicProperties back;
        ASSERT_TRUE(decode_properties(raw, back));
        EXPECT_TRUE(back == p);
        EXPECT_EQ(peek_delivery_mode(raw), p.delivery_mode);
        EXPECT_EQ(peek_priority(raw), p.priority);
    }
}

TEST(Properties, EachPropertyMissingFromTheFullSet) {
    // All but one: checks each decoder step skips exactly the right bytes.
    const auto all = each_property();
    for (size_t skip = 0; skip < all.size(); ++skip) {
        SCOPED_TRACE(all[skip].name);
        BasicProperties p;
        for (size_t i = 0; i < all.size(); ++i) {
            if (i != skip) all[i].set(p);
        }
        const std::string raw = encoded(p);
        EXPECT_EQ(flags_of(raw), 0xFFFC & ~(1u << all[skip].bit));
        BasicProperties back;
        ASSERT_TRUE(decode_properties(raw, back));
        EXPECT_TRUE(back == p);
        EXPECT_EQ(peek_delivery_mode(raw), p.delivery_mode);
        EXPECT_EQ(peek_priority(raw), p.priority);
    }
}

TEST(Properties, KnownBytes) {
    BasicProperties p;
    p.content_type = "text/plain";
    p.delivery_mode = 2;
    const std::string want = std::string("\x90\x00\x0atext/plain\x02", 14);
    EXPECT_EQ(encoded(p), want);
    // headers then priority, no delivery-mode: the peek must skip the table.
    const std::string raw = std::string("\x28\x00" "\x00\x00\x00\x04" "\x01k" "t\x01" "\x07", 11);
    EXPECT_EQ(peek_priority(raw), 7);
    EXPECT_EQ(peek_delivery_mode(raw), std::nullopt);
    BasicProperties back;
    ASSERT_TRUE(decode_properties(raw, back));
    EXPECT_EQ(back.priority, 7);
    ASSERT_TRUE(back.headers);
    EXPECT_EQ(back.headers->find("k")->as_bool(), true);
    EXPECT_EQ(back.headers->size(), 1u);
}

TEST(Properties, ShortstrOver255IsTruncated) {
    BasicProperties p;
    p.message_id = std::string(256, 'm');
    BasicProperties back;
    ASSERT_TRUE(decode_properties(encoded(p), back));
    EXPECT_EQ(back.message_id, std::string(255, 'm'));
}

TEST(Properties, EveryPrefixFails) {
    const std::string raw = encoded(all_properties());
    for (size_t n = 0; n < raw.size(); ++n) {
        const std::string_view cut = std::string_view(raw).substr(0, n);
        BasicProperties back;
        EXPECT_FALSE(decode_properties(cut, back)) << "prefix " << n;
        // The peeks never read past the cut, and never answer wrongly.
        const auto dm = peek_delivery_mode(cut);
        if (dm) {
            EXPECT_EQ(*dm, 2);
        }
        const auto pr = peek_priority(cut);
        if (pr) {
            EXPECT_EQ(*pr, 9);
        }
    }
}

TEST(Properties, PeeksFailOnTruncationBeforeTheirField) {
    BasicProperties p;
    p.content_type = "ct";
    p.headers.emplace().set("h", FieldValue("v"));
    p.delivery_mode = 1;
    p.priority = 4;
    const std::string raw = encoded(p);
    // flags(2) ct(3) headers(4 + name 2 + 'S' 1 + len 4 + 1 = 12) dm(1) prio(1)
    ASSERT_EQ(raw.size(), 19u);
    for (size_t n = 0; n < raw.size(); ++n) {
        const std::string_view cut = std::string_view(raw).substr(0, n);
        EXPECT_EQ(peek_delivery_mode(cut).has_value(), n >= 18) << n;
        EXPECT_EQ(peek_priority(cut).has_value(), n >= 19) << n;
    }
    EXPECT_EQ(peek_delivery_mode(raw), 1);
    EXPECT_EQ(peek_priority(raw), 4);
}

TEST(Properties, ContinuationBitIsRejected) {
    std::string raw = encoded(all_properties());
    raw[1] = char(raw[1] | 0x01);
    BasicProperties back;
    EXPECT_FALSE(decode_properties(raw, back));
    EXPECT_EQ(peek_delivery_mode(raw), std::nullopt);
    EXPECT_EQ(peek_priority(raw), std::nullopt);
}

TEST(Properties, UnusedBitOneIsIgnored) {
    BasicProperties p;
    p.priority = 3;
    std::string raw = encoded(p);
    raw[1] = char(raw[1] | 0x02);
    BasicProperties back;
    ASSERT_TRUE(decode_properties(raw, back));
    EXPECT_EQ(back, p);
}

TEST(Properties, MalformedHeadersTableFailsDecode) {
    BasicProperties p;
    p.headers.emplace().set("k", FieldValue(int8_t(1)));
    p.delivery_mode = 2;
    std::string raw = encoded(p);
    const size_t type_at = raw.find('k') + 1;
    ASSERT_EQ(raw[type_at], 'b');
    raw[type_at] = '!';
    BasicProperties back;
    EXPECT_FALSE(decode_properties(raw, back));
    // The peek only needs the table's length, so it still answers.
    EXPECT_EQ(peek_delivery_mode(raw), 2);
}

TEST(Properties, TrailingBytesAreIgnored) {
    const BasicProperties p = all_properties();
    BasicProperties back;
    ASSERT_TRUE(decode_properties(encoded(p) + "xyz", back));
    EXPECT_TRUE(back == p);
}

TEST(ContentHeader, RoundTrip) {
    const std::string raw = encoded(all_properties());
    std::string payload;
    encode_content_header(payload, 60, 0x0102030405060708ull, raw);
    ASSERT_EQ(payload.size(), 12 + raw.size());
    EXPECT_EQ(payload.substr(0, 12), std::string("\x00\x3c\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08", 12));
    ContentHeader h;
    ASSERT_TRUE(decode_content_header(payload, h));
    EXPECT_EQ(h.class_id, 60);
    EXPECT_EQ(h.body_size, 0x0102030405060708ull);
    EXPECT_EQ(h.properties, raw);
    EXPECT_EQ(h.properties.data(), payload.data() + 12);  // points into the frame
}

TEST(ContentHeader, EmptyRawPropertiesWritesAnEmptyFlagWord) {
    std::string payload;
    encode_content_header(payload, 60, 0, {});
    EXPECT_EQ(payload, std::string(14, '\0').replace(1, 1, "\x3c"));
    ContentHeader h;
    ASSERT_TRUE(decode_content_header(payload, h));
    BasicProperties p;
    EXPECT_TRUE(decode_properties(h.properties, p));
    EXPECT_TRUE(p == BasicProperties{});
}

TEST(ContentHeader, ShortPayloadsFail) {
    std::string payload;
    encode_content_header(payload, 60, 5, std::string(2, '\0'));
    for (size_t n = 0; n < payload.size(); ++n) {
        ContentHeader h;
        EXPECT_FALSE(decode_content_header(std::string_view(payload).substr(0, n), h)) << n;
    }
}

TEST(Properties, MutatedInputNeverCrashes) {
    const std::string seed = encoded(all_properties());
    uint64_t rng = 0x2545F4914F6CDD1Dull;
    auto next = [&rng] {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
    };
    for (int round = 0; round < 20000; ++round) {
        std::string b = seed;
        const int flips = 1 + int(next() % 3);
        for (int f = 0; f < flips; ++f) b[next() % b.size()] = char(next());
        if (next() % 3 == 0) b.resize(next() % b.size());
        BasicProperties p;
        if (decode_properties(b, p)) {
            // A successful decode agrees with the peeks.
            EXPECT_EQ(peek_delivery_mode(b), p.delivery_mode);
            EXPECT_EQ(peek_priority(b), p.priority);
        }
    }
}

}  // namespace
}  // namespace sluice::amqp
