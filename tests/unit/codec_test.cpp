// Method codec tests over every method struct: each one is encoded with
// non-default values in every field, decoded and compared field by field; each
// field is also round-tripped alone (catches bits sharing an octet wrongly);
// every strict prefix of an encoding must fail as truncated.
//
// The per-method tests are value-parameterised over a table of descriptors
// (one small template instantiation per method builds its descriptor), so the
// test bodies are compiled once rather than once per method: typed tests over
// 64 methods took 150 s to compile at -O2.
#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <set>
#include <string>
#include <type_traits>

#include "net/amqp/frame.hpp"
#include "net/amqp/methods.hpp"

namespace sluice::amqp {
namespace {

FieldTable sample_table(int seed) {
    FieldTable nested;
    nested.set("depth", FieldValue(int32_t(2)));
    nested.set("list", FieldValue(FieldArray{FieldValue(true), FieldValue("x"), FieldValue(Void{})}));
    FieldTable t;
    t.set("x-message-ttl", FieldValue(int32_t(60000 + seed)));
    t.set("x-queue-type", FieldValue("quorum"));
    t.set("nested", FieldValue(std::move(nested)));
    t.set("big", FieldValue(int64_t(-1) << 40));
    return t;
}

// Gives every field (or only field number `only`) a non-default value.
// pattern 0 uses values at the top of each type's range; pattern 1 uses
// byte-distinct values (catches byte-order and width mistakes).
struct Filler {
    std::deque<std::string>& store;
    int only = -1;
    int pattern = 0;
    int index = 0;

    template <typename T>
    void operator()(std::string_view name, T& v) {
        const int i = index++;
        if (only >= 0 && i != only) return;
        if constexpr (std::is_same_v<T, bool>) {
            v = true;
        } else if constexpr (std::is_same_v<T, uint8_t>) {
            v = pattern == 0 ? uint8_t(0xFF - i) : uint8_t(0x81 + i);
        } else if constexpr (std::is_same_v<T, uint16_t>) {
            v = pattern == 0 ? uint16_t(0xFFFF - i) : uint16_t(0x8102 + i);
        } else if constexpr (std::is_same_v<T, uint32_t>) {
            v = pattern == 0 ? uint32_t(0xFFFFFFFF - i) : uint32_t(0x81020304 + i);
        } else if constexpr (std::is_same_v<T, uint64_t>) {
            v = pattern == 0 ? ~uint64_t(i) : uint64_t(0x8102030405060708ull + i);
        } else if constexpr (std::is_same_v<T, std::string_view>) {
            // <= 255 bytes so shortstr fields round-trip; embedded NUL and
            // high bytes on pattern 1.
            std::string s = pattern == 0 ? std::string(name) + "#" + std::to_string(i)
                                         : std::string("\0\xff", 2) + std::string(200 + i, 'q');
            v = store.emplace_back(std::move(s));
        } else if constexpr (std::is_same_v<T, FieldTable>) {
            v = sample_table(i + pattern);
        } else {
            static_assert(sizeof(T) == 0, "field type without a test value");
        }
    }
};

// Everything the tests need to know about one method struct.
struct MethodInfo {
    std::string_view name;
    uint32_t key;
    uint16_t class_id;
    uint16_t method_id;
    bool has_content;
    int field_count;
    // The method with fields filled (only = -1: all of them), as a variant.
    Method (*make)(std::deque<std::string>& store, int only, int pattern);
    // write_method<M> on the concrete type.
    void (*write_typed)(std::string& out, uint16_t channel, const Method& m);
};

// gtest prints the parameter of a failed test with this.
void PrintTo(const MethodInfo& mi, std::ostream* os) { *os << mi.name; }

template <typename M>
MethodInfo info_of() {
    int n = 0;
    M probe;
    probe.visit_fields([&n](std::string_view, auto&) { ++n; });
    return MethodInfo{
        M::name, M::key, M::class_id, M::method_id, M::has_content, n,
        [](std::deque<std::string>& store, int only, int pattern) -> Method {
            M m;
            m.visit_fields(Filler{store, only, pattern});
            return m;
        },
        [](std::string& out, uint16_t channel, const Method& m) { write_method(out, channel, std::get<M>(m)); },
    };
}

std::vector<MethodInfo> all_methods() {
    return []<size_t... I>(std::index_sequence<I...>) {
        return std::vector<MethodInfo>{info_of<std::variant_alternative_t<I + 1, Method>>()...};
    }(std::make_index_sequence<std::variant_size_v<Method> - 1>{});
}

std::string hex(std::string_view b) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned char c : b) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

// One line per field, so a failed comparison names the field that differs.
std::string describe(const Method& m) {
    return std::visit(
        [](const auto& x) -> std::string {
            using M = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<M, std::monostate>) {
                return "<monostate>";
            } else {
                std::string s(M::name);
                x.visit_fields([&s](std::string_view name, const auto& v) {
                    using T = std::decay_t<decltype(v)>;
                    s += "\n  " + std::string(name) + " = ";
                    if constexpr (std::is_same_v<T, std::string_view>) {
                        s += hex(v);
                    } else if constexpr (std::is_same_v<T, FieldTable>) {
                        std::string t;
                        encode_table(t, v);
                        s += "table " + hex(t);
                    } else {
                        s += std::to_string(uint64_t(v));
                    }
                });
                return s;
            }
        },
        m);
}

std::string encoded(const Method& m) {
    std::string out;
    encode_method(out, m);
    return out;
}

template <typename M>
std::string encoded(const M& m) {
    std::string out;
    encode(out, m);
    return out;
}

::testing::AssertionResult round_trips(const Method& m) {
    const std::string bytes = encoded(m);
    Method out;
    const DecodeError e = decode_method(bytes, out);
    if (e != DecodeError::none) return ::testing::AssertionFailure() << "decode error " << int(e);
    if (out.index() != m.index()) return ::testing::AssertionFailure() << "decoded index " << out.index();
    if (describe(out) != describe(m)) {
        return ::testing::AssertionFailure() << "want " << describe(m) << "\ngot " << describe(out);
    }
    if (!(out == m)) return ::testing::AssertionFailure() << "operator== disagrees";
    return ::testing::AssertionSuccess();
}

class MethodCodec : public ::testing::TestWithParam<MethodInfo> {
protected:
    Method make(int only, int pattern) { return GetParam().make(store_, only, pattern); }
    std::deque<std::string> store_;
};

INSTANTIATE_TEST_SUITE_P(All, MethodCodec, ::testing::ValuesIn(all_methods()),
                         [](const ::testing::TestParamInfo<MethodInfo>& p) {
                             std::string n(p.param.name);
                             for (char& c : n) {
                                 if (c == '.' || c == '-') c = '_';
                             }
                             return n;
                         });

TEST_P(MethodCodec, MetadataIsConsistent) {
    const MethodInfo& mi = GetParam();
    EXPECT_EQ(mi.key, method_key(mi.class_id, mi.method_id));
    EXPECT_EQ(method_name(mi.key), mi.name);
    EXPECT_EQ(method_has_content(mi.key), mi.has_content);
    const Method m = make(-1, 0);
    const std::string bytes = encoded(m);
    ASSERT_GE(bytes.size(), 4u);
    EXPECT_EQ(peek_method_key(bytes), mi.key);
    EXPECT_EQ(uint8_t(bytes[0]), mi.class_id >> 8);
    EXPECT_EQ(uint8_t(bytes[1]), mi.class_id & 0xFF);
    EXPECT_EQ(uint8_t(bytes[2]), mi.method_id >> 8);
    EXPECT_EQ(uint8_t(bytes[3]), mi.method_id & 0xFF);
    EXPECT_TRUE(std::visit([](const auto& x) { return !std::is_same_v<std::decay_t<decltype(x)>, std::monostate>; }, m));
}

TEST_P(MethodCodec, DefaultValuesRoundTrip) {
    const Method m = make(GetParam().field_count, 0);  // an index past the last field: none set
    EXPECT_TRUE(round_trips(m));
}

TEST_P(MethodCodec, EveryFieldSetRoundTrips) {
    const Method none = make(GetParam().field_count, 0);
    for (int pattern : {0, 1}) {
        const Method m = make(-1, pattern);
        if (GetParam().field_count > 0) {
            EXPECT_FALSE(m == none);
        }
        EXPECT_TRUE(round_trips(m)) << "pattern " << pattern;
    }
}

TEST_P(MethodCodec, EachFieldAloneRoundTrips) {
    const Method none = make(GetParam().field_count, 0);
    for (int only = 0; only < GetParam().field_count; ++only) {
        const Method m = make(only, 0);
        EXPECT_FALSE(m == none) << "field " << only;
        EXPECT_TRUE(round_trips(m)) << "field " << only;
    }
}

TEST_P(MethodCodec, EveryStrictPrefixIsTruncated) {
    const std::string bytes = encoded(make(-1, 0));
    for (size_t n = 0; n < bytes.size(); ++n) {
        Method out = method::ConnectionCloseOk{};
        EXPECT_EQ(decode_method(std::string_view(bytes).substr(0, n), out), DecodeError::truncated)
            << "prefix " << n << " of " << bytes.size();
        EXPECT_TRUE(std::holds_alternative<std::monostate>(out));
    }
}

// RabbitMQ's decoder matches the whole payload: a method frame with bytes
// left after its arguments is refused (501), and so is one byte more.
TEST_P(MethodCodec, TrailingBytesAreRefused) {
    const Method m = make(-1, 1);
    for (std::string_view extra : {std::string_view("\xCE\x01\x02junk", 7), std::string_view("\0", 1)}) {
        const std::string bytes = encoded(m) + std::string(extra);
        Method out = method::ConnectionCloseOk{};
        EXPECT_EQ(decode_method(bytes, out), DecodeError::trailing_bytes) << extra.size();
        EXPECT_TRUE(std::holds_alternative<std::monostate>(out));
        bool called = false;
        EXPECT_EQ(dispatch_method(bytes, [&](const auto&) { called = true; }), DecodeError::trailing_bytes);
        EXPECT_FALSE(called);
    }
}

TEST_P(MethodCodec, DecodedStringsPointIntoThePayload) {
    const std::string bytes = encoded(make(-1, 0));
    Method out;
    ASSERT_EQ(decode_method(bytes, out), DecodeError::none);
    std::visit(
        [&](const auto& x) {
            if constexpr (!std::is_same_v<std::decay_t<decltype(x)>, std::monostate>) {
                x.visit_fields([&](std::string_view name, const auto& v) {
                    if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::string_view>) {
                        EXPECT_GE(v.data(), bytes.data()) << name;
                        EXPECT_LE(v.data() + v.size(), bytes.data() + bytes.size()) << name;
                    }
                });
            }
        },
        out);
}

// One handler type for every method, so dispatch_method is instantiated once.
struct CaptureHandler {
    Method* out;
    int* calls;
    template <typename M>
    void operator()(const M& m) const {
        ++*calls;
        *out = m;
    }
};

TEST_P(MethodCodec, DispatchCallsTheConcreteType) {
    const Method m = make(-1, 1);
    const std::string bytes = encoded(m);
    Method got;
    int calls = 0;
    EXPECT_EQ(dispatch_method(bytes, CaptureHandler{&got, &calls}), DecodeError::none);
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(got.index(), m.index());
    EXPECT_EQ(describe(got), describe(m));
}

TEST_P(MethodCodec, WriteMethodFramesTheEncoding) {
    const Method m = make(-1, 0);
    std::string out = "prefix";
    GetParam().write_typed(out, 0x1234, m);
    // write_method on the variant produces the same bytes.
    std::string via_variant = "prefix";
    write_method(via_variant, 0x1234, m);
    EXPECT_EQ(out, via_variant);

    const FrameParse p = parse_frame(std::string_view(out).substr(6), 0);
    ASSERT_EQ(p.status, FrameStatus::ok);
    EXPECT_EQ(p.consumed, out.size() - 6);
    EXPECT_EQ(p.frame.type, kFrameMethod);
    EXPECT_EQ(p.frame.channel, 0x1234);
    EXPECT_EQ(p.frame.payload, encoded(m));
}

// ---- Whole-codec properties ---------------------------------------------------

TEST(MethodTable, CoversTheSpecAndRabbitExtensions) {
    EXPECT_EQ(std::variant_size_v<Method>, kMethodCount + 1);
    EXPECT_EQ(kMethodCount, 64u);  // 60 in the rabbit XML + 4 extensions
    EXPECT_EQ(method::ConnectionBlocked::key, method_key(10, 60));
    EXPECT_EQ(method::ConnectionUnblocked::key, method_key(10, 61));
    EXPECT_EQ(method::ConnectionUpdateSecret::key, method_key(10, 70));
    EXPECT_EQ(method::ConnectionUpdateSecretOk::key, method_key(10, 71));
    EXPECT_EQ(method::ExchangeUnbindOk::key, method_key(40, 51));  // not 41: RabbitMQ's id
    EXPECT_EQ(method::ConfirmSelect::key, method_key(85, 10));
    EXPECT_EQ(method::BasicNack::key, method_key(60, 120));
    EXPECT_TRUE(method::BasicPublish::has_content);
    EXPECT_TRUE(method::BasicGetOk::has_content);
    EXPECT_FALSE(method::BasicAck::has_content);
    EXPECT_TRUE(method::QueueDeclare::synchronous);
    EXPECT_FALSE(method::BasicPublish::synchronous);
    EXPECT_TRUE(method::ConnectionUpdateSecret::synchronous);
    EXPECT_FALSE(method::ConnectionBlocked::synchronous);
    EXPECT_EQ(method::BasicPublish::name, "basic.publish");
    EXPECT_EQ(method::ConnectionUpdateSecretOk::name, "connection.update-secret-ok");
    // XML order, extensions after the connection class's own methods.
    EXPECT_EQ(Method(method::ConnectionStart{}).index(), 1u);
    EXPECT_EQ(Method(method::ConnectionBlocked{}).index(), Method(method::ConnectionCloseOk{}).index() + 1);
    EXPECT_EQ(Method(method::ChannelOpen{}).index(), Method(method::ConnectionUpdateSecretOk{}).index() + 1);
    EXPECT_EQ(Method(method::ConfirmSelectOk{}).index(), kMethodCount);
}

TEST(MethodTable, KeysAndNamesAreUnique) {
    std::set<uint32_t> keys;
    std::set<std::string_view> names;
    for (const MethodInfo& mi : all_methods()) {
        EXPECT_TRUE(keys.insert(mi.key).second) << mi.name;
        EXPECT_TRUE(names.insert(mi.name).second) << mi.name;
    }
    EXPECT_EQ(keys.size(), kMethodCount);
}

TEST(MethodDecode, ShortPayloads) {
    Method out;
    EXPECT_EQ(decode_method({}, out), DecodeError::truncated);
    EXPECT_EQ(decode_method(std::string_view("\x00\x0a\x00", 3), out), DecodeError::truncated);
    EXPECT_EQ(peek_method_key(std::string_view("\x00\x0a\x00", 3)), 0u);
    EXPECT_EQ(peek_method_key(std::string_view("\x00\x3c\x00\x28", 4)), method_key(60, 40));
    Method got;
    int calls = 0;
    EXPECT_EQ(dispatch_method(std::string_view("\x00", 1), CaptureHandler{&got, &calls}), DecodeError::truncated);
    EXPECT_EQ(calls, 0);
}

TEST(MethodDecode, UnknownMethods) {
    Method out = method::TxSelect{};
    // access.request (30,10) is not in 0-9-1; (60,200) is RabbitMQ's old basic.credit.
    for (std::string_view p : {std::string_view("\x00\x1e\x00\x0a", 4), std::string_view("\x00\x3c\x00\xc8", 4),
                               std::string_view("\x00\x0a\x00\x00", 4), std::string_view("\xff\xff\xff\xff", 4)}) {
        EXPECT_EQ(decode_method(p, out), DecodeError::unknown_method);
        EXPECT_TRUE(std::holds_alternative<std::monostate>(out));
        EXPECT_EQ(method_name(peek_method_key(p)), "");
        EXPECT_FALSE(method_has_content(peek_method_key(p)));
        int calls = 0;
        EXPECT_EQ(dispatch_method(p, CaptureHandler{&out, &calls}), DecodeError::unknown_method);
        EXPECT_EQ(calls, 0);
    }
}

TEST(MethodDecode, MalformedTableIsBadTable) {
    method::QueueDeclare q;
    q.queue = "q";
    q.arguments.set("x-max-length", FieldValue(int32_t(10)));
    std::string bytes = encoded(q);
    // The argument's type octet 'I' is the byte after its 12-byte name.
    const size_t type_at = bytes.find("x-max-length") + 12;
    ASSERT_EQ(bytes[type_at], 'I');
    bytes[type_at] = 'Z';
    Method out;
    EXPECT_EQ(decode_method(bytes, out), DecodeError::bad_table);
    // A table length that cuts an entry short is malformed inside: bad_table.
    bytes[type_at] = 'I';
    const size_t len_at = bytes.find('\x0c') - 4;  // u32 table length precedes the name
    bytes[len_at + 3] = char(bytes[len_at + 3] - 2);
    EXPECT_EQ(decode_method(bytes, out), DecodeError::bad_table);
    // A table length that overruns the payload is truncation.
    bytes[len_at] = 0x7f;
    EXPECT_EQ(decode_method(bytes, out), DecodeError::truncated);
}

TEST(MethodEncode, ShortstrOver255IsTruncated) {
    const std::string long_name(300, 'n');
    method::QueueDeclare q;
    q.queue = long_name;
    Method out;
    const std::string bytes = encoded(q);
    ASSERT_EQ(decode_method(bytes, out), DecodeError::none);
    EXPECT_EQ(std::get<method::QueueDeclare>(out).queue, std::string(255, 'n'));
}

TEST(MethodEncode, LongstrBeyond64KiB) {
    const std::string big(70000, 'r');
    method::ConnectionStartOk m;
    m.response = big;
    m.mechanism = "PLAIN";
    Method out;
    const std::string bytes = encoded(m);
    ASSERT_EQ(decode_method(bytes, out), DecodeError::none);
    EXPECT_EQ(std::get<method::ConnectionStartOk>(out).response, big);
}

TEST(MethodEncode, BitsPackLsbFirstAndShareOctets) {
    method::ExchangeDeclare x;
    x.passive = true;
    x.no_wait = true;  // bits 0 and 4 of the same octet
    const std::string b = encoded(x);
    // key(4) reserved-1(2) exchange(1) type(1) bits(1) table(4)
    ASSERT_EQ(b.size(), 13u);
    EXPECT_EQ(uint8_t(b[8]), 0x11);
    method::BasicNack n;
    n.requeue = true;
    const std::string nb = encoded(n);
    ASSERT_EQ(nb.size(), 4u + 8 + 1);
    EXPECT_EQ(uint8_t(nb[12]), 0x02);
}

TEST(MethodEncode, MonostateEncodesNothing) {
    std::string out;
    encode_method(out, Method{});
    EXPECT_TRUE(out.empty());
}

TEST(MethodEncode, ConnectionCloseCarriesTheFailingMethod) {
    method::ConnectionClose c;
    c.reply_code = 504;
    c.reply_text = "CHANNEL_ERROR";
    c.failing_class_id = 60;
    c.failing_method_id = 40;
    const std::string b = encoded(c);
    const std::string want = std::string("\x00\x0a\x00\x32\x01\xf8\x0d", 7) + "CHANNEL_ERROR" +
                             std::string("\x00\x3c\x00\x28", 4);
    EXPECT_EQ(b, want);
    static_assert(method::ConnectionClose::class_id == 10);  // the static, not the field
}

// Mutated encodings must never crash (run under ASan/UBSan in the asan preset).
TEST(MethodDecode, MutatedInputNeverCrashes) {
    std::deque<std::string> store;
    std::vector<std::string> seeds;
    for (const MethodInfo& mi : all_methods()) seeds.push_back(encoded(mi.make(store, -1, 0)));
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    auto next = [&rng] {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
    };
    size_t ok = 0;
    for (int round = 0; round < 20000; ++round) {
        std::string b = seeds[next() % seeds.size()];
        const int flips = 1 + int(next() % 4);
        for (int f = 0; f < flips && !b.empty(); ++f) b[next() % b.size()] = char(next());
        if (next() % 4 == 0 && !b.empty()) b.resize(next() % b.size());
        Method out;
        if (decode_method(b, out) == DecodeError::none) {
            ++ok;
            std::string again;
            encode_method(again, out);
            EXPECT_EQ(peek_method_key(again), peek_method_key(b));
        }
    }
    EXPECT_GT(ok, 0u);
}

}  // namespace
}  // namespace sluice::amqp
