// Field tables: every value type RabbitMQ accepts, at the limits of each width,
// known encodings byte for byte, nesting limits, and hostile input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "net/amqp/field_table.hpp"
#include "net/amqp/wire.hpp"

namespace sluice::amqp {
namespace {

std::string enc(const FieldValue& v) {
    std::string out;
    encode_value(out, v);
    return out;
}

std::string enc(const FieldTable& t) {
    std::string out;
    encode_table(out, t);
    return out;
}

std::string s(std::string_view x) { return std::string(x); }

FieldValue dec_value(std::string_view bytes) {
    FieldValue v;
    std::string_view in = bytes;
    EXPECT_EQ(decode_value(in, v), TableError::none);
    EXPECT_TRUE(in.empty());
    return v;
}

struct Known {
    const char* what;
    FieldValue value;
    std::string wire;
};

// Every type and the edges of each width, against hand-written encodings.
std::vector<Known> known_values() {
    using L = std::numeric_limits<int64_t>;
    return {
        {"bool true", FieldValue(true), s("t\x01")},
        {"bool false", FieldValue(false), s({"t\x00", 2})},
        {"int8 min", FieldValue(int8_t(-128)), s("b\x80")},
        {"int8 max", FieldValue(int8_t(127)), s("b\x7f")},
        {"int8 -1", FieldValue(int8_t(-1)), s("b\xff")},
        {"uint8 0", FieldValue(uint8_t(0)), s({"B\x00", 2})},
        {"uint8 max", FieldValue(uint8_t(255)), s("B\xff")},
        {"int16 min", FieldValue(int16_t(-32768)), s({"s\x80\x00", 3})},
        {"int16 max", FieldValue(int16_t(32767)), s("s\x7f\xff")},
        {"uint16 max", FieldValue(uint16_t(65535)), s("u\xff\xff")},
        {"uint16 0x0102", FieldValue(uint16_t(0x0102)), s("u\x01\x02")},
        {"int32 min", FieldValue(int32_t(INT32_MIN)), s({"I\x80\x00\x00\x00", 5})},
        {"int32 max", FieldValue(int32_t(INT32_MAX)), s("I\x7f\xff\xff\xff")},
        {"int32 -2", FieldValue(int32_t(-2)), s("I\xff\xff\xff\xfe")},
        {"uint32 max", FieldValue(uint32_t(UINT32_MAX)), s("i\xff\xff\xff\xff")},
        {"uint32 bytes", FieldValue(uint32_t(0x01020304)), s("i\x01\x02\x03\x04")},
        {"int64 min", FieldValue(L::min()), s({"l\x80\x00\x00\x00\x00\x00\x00\x00", 9})},
        {"int64 max", FieldValue(L::max()), s("l\x7f\xff\xff\xff\xff\xff\xff\xff")},
        {"int64 bytes", FieldValue(int64_t(0x0102030405060708)), s("l\x01\x02\x03\x04\x05\x06\x07\x08")},
        {"float 1.5", FieldValue(1.5f), s({"f\x3f\xc0\x00\x00", 5})},
        {"float -0", FieldValue(-0.0f), s({"f\x80\x00\x00\x00", 5})},
        {"float inf", FieldValue(std::numeric_limits<float>::infinity()), s({"f\x7f\x80\x00\x00", 5})},
        {"float max", FieldValue(std::numeric_limits<float>::max()), s("f\x7f\x7f\xff\xff")},
        {"double 1.5", FieldValue(1.5), s({"d\x3f\xf8\x00\x00\x00\x00\x00\x00", 9})},
        {"double -inf", FieldValue(-std::numeric_limits<double>::infinity()),
         s({"d\xff\xf0\x00\x00\x00\x00\x00\x00", 9})},
        {"double denorm", FieldValue(std::numeric_limits<double>::denorm_min()),
         s({"d\x00\x00\x00\x00\x00\x00\x00\x01", 9})},
        {"decimal 3.14", FieldValue(Decimal{2, 314}), s({"D\x02\x00\x00\x01\x3a", 6})},
        {"decimal max", FieldValue(Decimal{255, UINT32_MAX}), s("D\xff\xff\xff\xff\xff")},
        {"longstr", FieldValue("hi"), s({"S\x00\x00\x00\x02hi", 7})},
        {"longstr empty", FieldValue(std::string()), s({"S\x00\x00\x00\x00", 5})},
        {"longstr binary", FieldValue(std::string("\x00\xce", 2)), s({"S\x00\x00\x00\x02\x00\xce", 7})},
        {"timestamp", FieldValue(Timestamp{1700000000}), s({"T\x00\x00\x00\x00\x65\x53\xf1\x00", 9})},
        {"timestamp max", FieldValue(Timestamp{UINT64_MAX}), s("T\xff\xff\xff\xff\xff\xff\xff\xff")},
        {"void", FieldValue(Void{}), s("V")},
        {"bytes", FieldValue(ByteArray{s({"\x00\x01\xff", 3})}), s({"x\x00\x00\x00\x03\x00\x01\xff", 8})},
        {"bytes empty", FieldValue(ByteArray{}), s({"x\x00\x00\x00\x00", 5})},
        {"empty array", FieldValue(FieldArray{}), s({"A\x00\x00\x00\x00", 5})},
        {"array", FieldValue(FieldArray{FieldValue(uint8_t(7)), FieldValue(Void{}), FieldValue(true)}),
         s({"A\x00\x00\x00\x05" "B\x07" "V" "t\x01", 10})},
        {"empty table", FieldValue(FieldTable{}), s({"F\x00\x00\x00\x00", 5})},
    };
}

TEST(FieldValueCodec, KnownEncodingsRoundTrip) {
    for (const Known& k : known_values()) {
        SCOPED_TRACE(k.what);
        EXPECT_EQ(enc(k.value), k.wire);
        EXPECT_EQ(k.value.type_code(), k.wire[0]);
        const FieldValue back = dec_value(k.wire);
        EXPECT_EQ(back.v.index(), k.value.v.index());
        EXPECT_TRUE(back == k.value);
    }
}

TEST(FieldValueCodec, NanBitsSurvive) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const FieldValue back = dec_value(enc(FieldValue(nan)));
    ASSERT_TRUE(std::holds_alternative<double>(back.v));
    EXPECT_TRUE(std::isnan(std::get<double>(back.v)));
    const FieldValue backf = dec_value(enc(FieldValue(std::numeric_limits<float>::quiet_NaN())));
    ASSERT_TRUE(std::holds_alternative<float>(backf.v));
    EXPECT_TRUE(std::isnan(std::get<float>(backf.v)));
}

TEST(FieldValueCodec, EveryPrefixOfEveryValueIsTruncated) {
    for (const Known& k : known_values()) {
        for (size_t n = 0; n < k.wire.size(); ++n) {
            std::string_view in = std::string_view(k.wire).substr(0, n);
            const std::string_view before = in;
            FieldValue v;
            EXPECT_EQ(decode_value(in, v), TableError::truncated) << k.what << " prefix " << n;
            EXPECT_EQ(in.data(), before.data());  // not advanced on error
            EXPECT_EQ(in.size(), before.size());
        }
    }
}

TEST(FieldValueCodec, CapitalLIsSigned64) {
    // py-amqp sends 'L'; RabbitMQ decodes it as signed 64-bit.
    const FieldValue v = dec_value(s("L\xff\xff\xff\xff\xff\xff\xff\xfe"));
    EXPECT_EQ(v.v, FieldValue::Variant(int64_t(-2)));
    EXPECT_EQ(v.type_code(), 'l');
}

TEST(FieldValueCodec, UnknownTypesAreBadType) {
    for (char t : std::string("\0ZcUaeqNzK\xff", 11)) {
        std::string bytes(1, t);
        bytes += std::string(16, '\x01');
        std::string_view in = bytes;
        FieldValue v;
        EXPECT_EQ(decode_value(in, v), TableError::bad_type) << int(uint8_t(t));
    }
}

FieldTable everything() {
    FieldTable inner;
    inner.set("deep", FieldValue(FieldArray{FieldValue(FieldTable{}), FieldValue(FieldArray{})}));
    inner.set("when", FieldValue(Timestamp{1}));
    FieldTable t;
    t.set("t", FieldValue(true));
    t.set("b", FieldValue(int8_t(-5)));
    t.set("B", FieldValue(uint8_t(250)));
    t.set("s", FieldValue(int16_t(-300)));
    t.set("u", FieldValue(uint16_t(60000)));
    t.set("I", FieldValue(int32_t(-70000)));
    t.set("i", FieldValue(uint32_t(4000000000u)));
    t.set("l", FieldValue(int64_t(-5000000000)));
    t.set("f", FieldValue(2.25f));
    t.set("d", FieldValue(-2.5e300));
    t.set("D", FieldValue(Decimal{3, 123456}));
    t.set("S", FieldValue("text"));
    t.set("A", FieldValue(FieldArray{FieldValue(int16_t(1)), FieldValue("two"), FieldValue(inner)}));
    t.set("T", FieldValue(Timestamp{1700000000}));
    t.set("F", FieldValue(inner));
    t.set("V", FieldValue(Void{}));
    t.set("x", FieldValue(ByteArray{std::string("\x00\x01", 2)}));
    t.set(std::string(255, 'k'), FieldValue(int8_t(1)));  // longest name
    t.set("", FieldValue(int8_t(2)));                      // empty name
    return t;
}

TEST(FieldTableCodec, EveryTypeRoundTripsInOrder) {
    const FieldTable t = everything();
    const std::string bytes = enc(t);
    WireReader r(bytes);
    EXPECT_EQ(r.u32(), bytes.size() - 4);
    std::string_view in = bytes;
    FieldTable back;
    ASSERT_EQ(decode_table(in, back), TableError::none);
    EXPECT_TRUE(in.empty());
    EXPECT_TRUE(back == t);
    ASSERT_EQ(back.size(), t.size());
    for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(back.entries[i].first, t.entries[i].first);
    EXPECT_EQ(enc(back), bytes);
}

TEST(FieldTableCodec, DecodeAdvancesPastTheTableOnly) {
    const std::string bytes = enc(everything()) + "rest";
    std::string_view in = bytes;
    FieldTable t;
    ASSERT_EQ(decode_table(in, t), TableError::none);
    EXPECT_EQ(in, "rest");
}

TEST(FieldTableCodec, DecodeReplacesPreviousContents) {
    FieldTable t = everything();
    const std::string bytes = enc(FieldTable{});
    std::string_view in = bytes;
    ASSERT_EQ(decode_table(in, t), TableError::none);
    EXPECT_TRUE(t.empty());
}

TEST(FieldTableCodec, EveryPrefixIsTruncated) {
    const std::string bytes = enc(everything());
    for (size_t n = 0; n < bytes.size(); ++n) {
        std::string_view in = std::string_view(bytes).substr(0, n);
        FieldTable t;
        EXPECT_EQ(decode_table(in, t), TableError::truncated) << "prefix " << n;
        EXPECT_EQ(in.size(), n);
    }
}

TEST(FieldTableCodec, ShortDeclaredLengthCutsAnEntry) {
    // The table's own length is consistent with the input but ends inside an
    // entry: every such cut is an error, never a read past the table.
    const std::string full = enc(everything());
    const uint32_t body = uint32_t(full.size() - 4);
    for (uint32_t len = 0; len < body; ++len) {
        std::string bytes = full.substr(0, 4 + len);
        patch_u32(bytes, 0, len);
        std::string_view in = bytes;
        FieldTable t;
        const TableError e = decode_table(in, t);
        // A cut on an entry boundary leaves a valid shorter table.
        if (e == TableError::none) {
            EXPECT_TRUE(in.empty());
            EXPECT_LT(t.size(), everything().size());
        } else {
            EXPECT_EQ(e, TableError::truncated) << "length " << len;
        }
    }
}

TEST(FieldTableCodec, BadTypeInsideNestedContainers) {
    FieldTable t;
    t.set("a", FieldValue(FieldArray{FieldValue(FieldTable{})}));
    std::string bytes = enc(t);
    // Replace the inner 'F' with an unknown type octet.
    const size_t at = bytes.rfind('F');
    bytes[at] = '?';
    std::string_view in = bytes;
    FieldTable out;
    EXPECT_EQ(decode_table(in, out), TableError::bad_type);
}

// Builds `levels` nested arrays ("A" len ...), innermost empty, in O(levels).
std::string nested_arrays(size_t levels) {
    std::string out;
    out.reserve(levels * 5);
    for (size_t k = 0; k < levels; ++k) {
        out.push_back('A');
        put_u32(out, uint32_t(5 * (levels - k - 1)));
    }
    return out;
}

TEST(FieldTableCodec, NestingIsLimitedTo64Levels) {
    // A table holding 63 nested tables: 64 containers in all.
    auto nested_tables = [](int containers) {
        FieldTable t;
        for (int i = 1; i < containers; ++i) {
            FieldTable outer;
            outer.set("n", FieldValue(std::move(t)));
            t = std::move(outer);
        }
        return t;
    };
    {
        const std::string bytes = enc(nested_tables(64));
        std::string_view in = bytes;
        FieldTable t;
        EXPECT_EQ(decode_table(in, t), TableError::none);
        EXPECT_TRUE(t == nested_tables(64));
    }
    {
        const std::string bytes = enc(nested_tables(65));
        std::string_view in = bytes;
        FieldTable t;
        EXPECT_EQ(decode_table(in, t), TableError::too_deep);
    }
    // Arrays count the same way; decode_value's value is the outermost container.
    {
        const std::string bytes = nested_arrays(64);
        std::string_view in = bytes;
        FieldValue v;
        EXPECT_EQ(decode_value(in, v), TableError::none);
        EXPECT_TRUE(in.empty());
    }
    {
        const std::string bytes = nested_arrays(65);
        std::string_view in = bytes;
        FieldValue v;
        EXPECT_EQ(decode_value(in, v), TableError::too_deep);
    }
}

TEST(FieldTableCodec, HostileDepthDoesNotRecurse) {
    // A million levels of nesting in 5 MB: rejected at level 65, no stack blowup.
    const std::string bytes = nested_arrays(1000000);
    std::string_view in = bytes;
    FieldValue v;
    EXPECT_EQ(decode_value(in, v), TableError::too_deep);
}

TEST(FieldTableCodec, HostileLengthsDoNotAllocate) {
    // Lengths near 4 GiB with no bytes behind them must fail before allocating.
    for (std::string bytes : {s("\xff\xff\xff\xff"), s({"\x00\x00\x00\x07\x01kS\xff\xff\xff\xff", 11}),
                              s({"\x00\x00\x00\x06\x01kS\xff\xff\xff", 10}),
                              s({"\x00\x00\x00\x07\x01kx\xff\xff\xff\xff", 11})}) {
        std::string_view in = bytes;
        FieldTable t;
        EXPECT_EQ(decode_table(in, t), TableError::truncated);
    }
}

TEST(FieldTableCodec, MutatedInputNeverCrashes) {
    const std::string seed = enc(everything());
    uint64_t rng = 88172645463325252ull;
    auto next = [&rng] {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
    };
    int ok = 0;
    for (int round = 0; round < 20000; ++round) {
        std::string b = seed;
        const int flips = 1 + int(next() % 3);
        for (int f = 0; f < flips; ++f) b[next() % b.size()] = char(next());
        std::string_view in = b;
        FieldTable t;
        if (decode_table(in, t) == TableError::none) {
            ++ok;
            const std::string again = enc(t);  // whatever decoded must re-encode
            std::string_view in2 = again;
            FieldTable t2;
            EXPECT_EQ(decode_table(in2, t2), TableError::none);
        }
    }
    EXPECT_GT(ok, 0);
}

// ---- FieldTable / FieldValue API ---------------------------------------------

TEST(FieldTableApi, FindSetEraseKeepOrder) {
    FieldTable t;
    EXPECT_EQ(t.find("a"), nullptr);
    t.set("a", FieldValue(int32_t(1)));
    t.set("b", FieldValue("two"));
    t.set("c", FieldValue(true));
    t.set("a", FieldValue(int32_t(3)));  // replaced in place
    ASSERT_EQ(t.size(), 3u);
    EXPECT_EQ(t.entries[0].first, "a");
    EXPECT_EQ(t.find("a")->as_int(), 3);
    EXPECT_TRUE(t.erase("b"));
    EXPECT_FALSE(t.erase("b"));
    ASSERT_EQ(t.size(), 2u);
    EXPECT_EQ(t.entries[1].first, "c");
    // Duplicates on the wire are kept; find returns the first.
    t.entries.emplace_back("a", FieldValue(int32_t(9)));
    EXPECT_EQ(t.find("a")->as_int(), 3);
}

TEST(FieldTableApi, EqualityIsOrderSensitive) {
    FieldTable x, y;
    x.set("a", FieldValue(int8_t(1)));
    x.set("b", FieldValue(int8_t(2)));
    y.set("b", FieldValue(int8_t(2)));
    y.set("a", FieldValue(int8_t(1)));
    EXPECT_FALSE(x == y);
    y.entries = x.entries;
    EXPECT_TRUE(x == y);
    // Same number, different wire type: not equal.
    FieldTable z;
    z.set("a", FieldValue(int16_t(1)));
    z.set("b", FieldValue(int8_t(2)));
    EXPECT_FALSE(x == z);
}

TEST(FieldValueApi, Accessors) {
    EXPECT_EQ(FieldValue(int8_t(-1)).as_int(), -1);
    EXPECT_EQ(FieldValue(uint8_t(255)).as_int(), 255);
    EXPECT_EQ(FieldValue(int16_t(-2)).as_int(), -2);
    EXPECT_EQ(FieldValue(uint16_t(65535)).as_int(), 65535);
    EXPECT_EQ(FieldValue(int32_t(INT32_MIN)).as_int(), INT32_MIN);
    EXPECT_EQ(FieldValue(uint32_t(UINT32_MAX)).as_int(), int64_t(UINT32_MAX));
    EXPECT_EQ(FieldValue(INT64_MIN).as_int(), INT64_MIN);
    EXPECT_EQ(FieldValue(true).as_int(), std::nullopt);
    EXPECT_EQ(FieldValue(1.0).as_int(), std::nullopt);
    EXPECT_EQ(FieldValue("5").as_int(), std::nullopt);
    EXPECT_EQ(FieldValue(Timestamp{5}).as_int(), std::nullopt);

    EXPECT_EQ(FieldValue("abc").as_string(), "abc");
    EXPECT_EQ(FieldValue(ByteArray{"xyz"}).as_string(), "xyz");
    EXPECT_EQ(FieldValue(int32_t(1)).as_string(), std::nullopt);

    EXPECT_EQ(FieldValue(true).as_bool(), true);
    EXPECT_EQ(FieldValue(false).as_bool(), false);
    EXPECT_EQ(FieldValue(int8_t(1)).as_bool(), std::nullopt);

    FieldTable t;
    t.set("k", FieldValue(Void{}));
    EXPECT_NE(FieldValue(t).as_table(), nullptr);
    EXPECT_EQ(FieldValue(t).as_array(), nullptr);
    EXPECT_NE(FieldValue(FieldArray{}).as_array(), nullptr);
    EXPECT_EQ(FieldValue().type_code(), 'V');

    const char codes[] = "tbBsuIilfdDSATFVx";
    const FieldValue one_of_each[] = {
        FieldValue(true),          FieldValue(int8_t(0)),   FieldValue(uint8_t(0)),  FieldValue(int16_t(0)),
        FieldValue(uint16_t(0)),   FieldValue(int32_t(0)),  FieldValue(uint32_t(0)), FieldValue(int64_t(0)),
        FieldValue(0.0f),          FieldValue(0.0),         FieldValue(Decimal{}),   FieldValue(""),
        FieldValue(FieldArray{}),  FieldValue(Timestamp{}), FieldValue(FieldTable{}), FieldValue(Void{}),
        FieldValue(ByteArray{})};
    for (size_t i = 0; i < std::size(one_of_each); ++i) EXPECT_EQ(one_of_each[i].type_code(), codes[i]);
}

TEST(FieldTableCodec, OverlongNameIsTruncatedTo255) {
    FieldTable t;
    t.set(std::string(300, 'n'), FieldValue(int8_t(1)));
    const std::string bytes = enc(t);
    std::string_view in = bytes;
    FieldTable back;
    ASSERT_EQ(decode_table(in, back), TableError::none);
    ASSERT_EQ(back.size(), 1u);
    EXPECT_EQ(back.entries[0].first, std::string(255, 'n'));
}

}  // namespace
}  // namespace sluice::amqp
