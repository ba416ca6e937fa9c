#include "broker/headers_match.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>

namespace {

using sluice::broker::headers_match;
using sluice::broker::validate_headers_binding;
using namespace sluice::amqp;

FieldTable T(std::initializer_list<std::pair<std::string, FieldValue>> entries) {
    FieldTable t;
    for (const auto& e : entries) t.entries.push_back(e);
    return t;
}

bool match(const FieldTable& binding, const FieldTable& headers) { return headers_match(binding, &headers); }

// ---- x-match modes ----

TEST(HeadersMatch, AllIsTheDefault) {
    FieldTable b = T({{"format", "pdf"}, {"type", "report"}});
    EXPECT_TRUE(match(b, T({{"format", "pdf"}, {"type", "report"}})));
    EXPECT_TRUE(match(b, T({{"type", "report"}, {"extra", 1}, {"format", "pdf"}})));  // order, extras
    EXPECT_FALSE(match(b, T({{"format", "pdf"}})));
    EXPECT_FALSE(match(b, T({{"format", "pdf"}, {"type", "log"}})));
    EXPECT_FALSE(headers_match(b, nullptr));
}

TEST(HeadersMatch, ExplicitAll) {
    FieldTable b = T({{"x-match", "all"}, {"format", "pdf"}, {"type", "report"}});
    EXPECT_TRUE(match(b, T({{"format", "pdf"}, {"type", "report"}})));
    EXPECT_FALSE(match(b, T({{"format", "pdf"}})));
    EXPECT_FALSE(match(b, T({})));
}

TEST(HeadersMatch, Any) {
    FieldTable b = T({{"x-match", "any"}, {"format", "pdf"}, {"type", "report"}});
    EXPECT_TRUE(match(b, T({{"format", "pdf"}})));
    EXPECT_TRUE(match(b, T({{"format", "zip"}, {"type", "report"}})));
    EXPECT_FALSE(match(b, T({{"format", "zip"}, {"type", "log"}})));
    EXPECT_FALSE(match(b, T({})));
    EXPECT_FALSE(headers_match(b, nullptr));
}

TEST(HeadersMatch, NoKeysLeft) {
    // "all" over nothing is true, "any" over nothing is false (rabbit: match_all([]) / match_any([]))
    EXPECT_TRUE(headers_match(T({}), nullptr));
    EXPECT_TRUE(headers_match(T({{"x-match", "all"}}), nullptr));
    EXPECT_TRUE(match(T({{"x-match", "all"}}), T({{"a", 1}})));
    EXPECT_FALSE(headers_match(T({{"x-match", "any"}}), nullptr));
    EXPECT_FALSE(match(T({{"x-match", "any"}}), T({{"a", 1}})));
    EXPECT_TRUE(headers_match(T({{"x-match", "all-with-x"}}), nullptr));
    EXPECT_FALSE(match(T({{"x-match", "any-with-x"}}), T({{"x-match", "any-with-x"}})));
}

TEST(HeadersMatch, XKeysIgnoredByAllAndAny) {
    FieldTable all = T({{"x-match", "all"}, {"x-foo", "bar"}, {"a", 1}});
    EXPECT_TRUE(match(all, T({{"a", 1}})));  // x-foo not required
    EXPECT_TRUE(match(all, T({{"a", 1}, {"x-foo", "other"}})));
    // with only x- keys there is nothing to test
    FieldTable any = T({{"x-match", "any"}, {"x-foo", "bar"}});
    EXPECT_FALSE(match(any, T({{"x-foo", "bar"}})));
    FieldTable all_x_only = T({{"x-foo", "bar"}});
    EXPECT_TRUE(match(all_x_only, T({})));
    // only the lower-case "x-" prefix is special
    FieldTable upper = T({{"X-foo", "bar"}});
    EXPECT_FALSE(match(upper, T({})));
    EXPECT_TRUE(match(upper, T({{"X-foo", "bar"}})));
    // "x" alone or "x_" are ordinary keys
    EXPECT_FALSE(match(T({{"x", 1}}), T({})));
    EXPECT_FALSE(match(T({{"x_a", 1}}), T({})));
}

TEST(HeadersMatch, AllWithX) {
    FieldTable b = T({{"x-match", "all-with-x"}, {"x-foo", "bar"}, {"a", 1}});
    EXPECT_TRUE(match(b, T({{"x-foo", "bar"}, {"a", 1}})));
    EXPECT_FALSE(match(b, T({{"a", 1}})));
    EXPECT_FALSE(match(b, T({{"x-foo", "baz"}, {"a", 1}})));
    // x-match itself is never compared, even when the message carries one
    EXPECT_TRUE(match(b, T({{"x-foo", "bar"}, {"a", 1}, {"x-match", "any"}})));
    EXPECT_TRUE(match(T({{"x-match", "all-with-x"}}), T({{"x-match", "nope"}})));
}

TEST(HeadersMatch, AnyWithX) {
    FieldTable b = T({{"x-match", "any-with-x"}, {"x-foo", "bar"}, {"a", 1}});
    EXPECT_TRUE(match(b, T({{"x-foo", "bar"}})));
    EXPECT_TRUE(match(b, T({{"a", 1}})));
    EXPECT_FALSE(match(b, T({{"x-foo", "baz"}, {"a", 2}})));
    EXPECT_FALSE(match(T({{"x-match", "any-with-x"}}), T({{"x-match", "any-with-x"}})));
}

TEST(HeadersMatch, XMatchLookup) {
    // the first x-match entry decides
    EXPECT_TRUE(match(T({{"x-match", "any"}, {"x-match", "all"}, {"a", 1}, {"b", 2}}), T({{"a", 1}})));
    // a non-string or unknown x-match (only possible if it bypassed validation) means all
    EXPECT_FALSE(match(T({{"x-match", 1}, {"a", 1}, {"b", 2}}), T({{"a", 1}})));
    EXPECT_FALSE(match(T({{"x-match", ByteArray{"any"}}, {"a", 1}, {"b", 2}}), T({{"a", 1}})));
    EXPECT_FALSE(match(T({{"x-match", "ANY"}, {"a", 1}, {"b", 2}}), T({{"a", 1}})));
    EXPECT_TRUE(match(T({{"x-match", "bogus"}, {"a", 1}}), T({{"a", 1}})));
}

// ---- void: presence only ----

TEST(HeadersMatch, VoidBindingValueMeansPresent) {
    FieldTable b = T({{"a", Void{}}});
    EXPECT_TRUE(match(b, T({{"a", "anything"}})));
    EXPECT_TRUE(match(b, T({{"a", 0}})));
    EXPECT_TRUE(match(b, T({{"a", Void{}}})));
    EXPECT_TRUE(match(b, T({{"a", T({{"nested", 1}})}})));
    EXPECT_FALSE(match(b, T({{"b", 1}})));
    EXPECT_FALSE(match(b, T({})));
    EXPECT_FALSE(headers_match(b, nullptr));
    FieldTable any = T({{"x-match", "any"}, {"a", Void{}}, {"b", 5}});
    EXPECT_TRUE(match(any, T({{"a", false}})));
    EXPECT_FALSE(match(any, T({{"c", 5}})));
    FieldTable xv = T({{"x-match", "all-with-x"}, {"x-trace", Void{}}});
    EXPECT_TRUE(match(xv, T({{"x-trace", 1}})));
    EXPECT_FALSE(match(xv, T({})));
}

TEST(HeadersMatch, VoidHeaderOnlySatisfiesVoidBinding) {
    EXPECT_FALSE(match(T({{"a", 0}}), T({{"a", Void{}}})));
    EXPECT_FALSE(match(T({{"a", ""}}), T({{"a", Void{}}})));
    EXPECT_FALSE(match(T({{"a", false}}), T({{"a", Void{}}})));
}

// ---- value comparison ----

TEST(HeadersMatch, TypeMismatches) {
    EXPECT_FALSE(match(T({{"a", 1}}), T({{"a", "1"}})));
    EXPECT_FALSE(match(T({{"a", "1"}}), T({{"a", 1}})));
    EXPECT_FALSE(match(T({{"a", true}}), T({{"a", 1}})));
    EXPECT_FALSE(match(T({{"a", 1}}), T({{"a", true}})));
    EXPECT_FALSE(match(T({{"a", "true"}}), T({{"a", true}})));
    EXPECT_TRUE(match(T({{"a", true}}), T({{"a", true}})));
    EXPECT_FALSE(match(T({{"a", true}}), T({{"a", false}})));
    EXPECT_TRUE(match(T({{"a", "x"}}), T({{"a", "x"}})));
    EXPECT_FALSE(match(T({{"a", "x"}}), T({{"a", "X"}})));
    EXPECT_TRUE(match(T({{"a", ""}}), T({{"a", ""}})));
    EXPECT_FALSE(match(T({{"a", ""}}), T({})));
    // strings with embedded NULs compare by bytes
    EXPECT_FALSE(match(T({{"a", std::string("a\0b", 3)}}), T({{"a", std::string("a\0c", 3)}})));
    EXPECT_TRUE(match(T({{"a", std::string("a\0b", 3)}}), T({{"a", std::string("a\0b", 3)}})));
}

TEST(HeadersMatch, LongStringAndByteArrayAreTheSameBinary) {
    // rabbit_binary_parser decodes both 'S' and 'x' to an Erlang binary
    EXPECT_TRUE(match(T({{"a", "abc"}}), T({{"a", ByteArray{"abc"}}})));
    EXPECT_TRUE(match(T({{"a", ByteArray{"abc"}}}), T({{"a", "abc"}})));
    EXPECT_FALSE(match(T({{"a", ByteArray{"abc"}}}), T({{"a", "abd"}})));
}

TEST(HeadersMatch, IntegerWidthsCompareByValue) {
    EXPECT_TRUE(match(T({{"n", int8_t{1}}}), T({{"n", int64_t{1}}})));
    EXPECT_TRUE(match(T({{"n", int64_t{1}}}), T({{"n", int8_t{1}}})));
    EXPECT_TRUE(match(T({{"n", uint8_t{200}}}), T({{"n", int16_t{200}}})));
    EXPECT_TRUE(match(T({{"n", uint16_t{65535}}}), T({{"n", int32_t{65535}}})));
    EXPECT_TRUE(match(T({{"n", uint32_t{4294967295u}}}), T({{"n", int64_t{4294967295}}})));
    EXPECT_TRUE(match(T({{"n", int16_t{-5}}}), T({{"n", int32_t{-5}}})));
    EXPECT_FALSE(match(T({{"n", int8_t{-1}}}), T({{"n", uint8_t{255}}})));
    EXPECT_FALSE(match(T({{"n", int32_t{-1}}}), T({{"n", uint32_t{4294967295u}}})));
    EXPECT_FALSE(match(T({{"n", int32_t{1}}}), T({{"n", int32_t{2}}})));
    EXPECT_TRUE(match(T({{"n", std::numeric_limits<int64_t>::min()}}),
                      T({{"n", std::numeric_limits<int64_t>::min()}})));
}

TEST(HeadersMatch, FloatsNeverEqualIntegers) {
    // Erlang =:= : 1 =/= 1.0
    EXPECT_FALSE(match(T({{"n", 1}}), T({{"n", 1.0}})));
    EXPECT_FALSE(match(T({{"n", 1.0}}), T({{"n", int64_t{1}}})));
    EXPECT_FALSE(match(T({{"n", 0.0f}}), T({{"n", uint8_t{0}}})));
}

TEST(HeadersMatch, FloatAndDoubleCompareAsDoubles) {
    EXPECT_TRUE(match(T({{"f", 1.5f}}), T({{"f", 1.5}})));
    EXPECT_TRUE(match(T({{"f", 1.5}}), T({{"f", 1.5f}})));
    EXPECT_TRUE(match(T({{"f", 2.25}}), T({{"f", 2.25}})));
    EXPECT_FALSE(match(T({{"f", 0.1f}}), T({{"f", 0.1}})));  // the float widened is not 0.1
    EXPECT_TRUE(match(T({{"f", 0.1f}}), T({{"f", static_cast<double>(0.1f)}})));
    EXPECT_FALSE(match(T({{"f", 0.0}}), T({{"f", -0.0}})));  // OTP 27: 0.0 =/= -0.0
    EXPECT_TRUE(match(T({{"f", -0.0}}), T({{"f", -0.0f}})));
    double nan = std::numeric_limits<double>::quiet_NaN();
    EXPECT_FALSE(match(T({{"f", nan}}), T({{"f", nan}})));  // unrepresentable in Erlang: never equal
}

TEST(HeadersMatch, Decimals) {
    EXPECT_TRUE(match(T({{"d", Decimal{2, 100}}}), T({{"d", Decimal{2, 100}}})));
    EXPECT_FALSE(match(T({{"d", Decimal{1, 10}}}), T({{"d", Decimal{0, 1}}})));  // {Scale, Value} tuples
    EXPECT_FALSE(match(T({{"d", Decimal{0, 1}}}), T({{"d", 1}})));
    EXPECT_FALSE(match(T({{"d", Decimal{0, 1}}}), T({{"d", 1.0}})));
}

TEST(HeadersMatch, TimestampHeadersAreRoutedInMilliseconds) {
    // mc_amqpl:routing_value(timestamp, V) -> V * 1000; binding values are not converted
    EXPECT_FALSE(match(T({{"t", Timestamp{5}}}), T({{"t", Timestamp{5}}})));
    EXPECT_TRUE(match(T({{"t", Timestamp{0}}}), T({{"t", Timestamp{0}}})));
    EXPECT_TRUE(match(T({{"t", int64_t{5000}}}), T({{"t", Timestamp{5}}})));
    EXPECT_TRUE(match(T({{"t", Timestamp{5000}}}), T({{"t", Timestamp{5}}})));
    EXPECT_TRUE(match(T({{"t", Timestamp{5}}}), T({{"t", int64_t{5}}})));
    EXPECT_TRUE(match(T({{"t", Timestamp{5}}}), T({{"t", uint8_t{5}}})));
    EXPECT_FALSE(match(T({{"t", int64_t{5}}}), T({{"t", Timestamp{5}}})));
    // no overflow at the top of the range
    const uint64_t big = std::numeric_limits<uint64_t>::max();
    EXPECT_FALSE(match(T({{"t", Timestamp{big}}}), T({{"t", Timestamp{big}}})));
    EXPECT_FALSE(match(T({{"t", int64_t{-1000}}}), T({{"t", Timestamp{big}}})));
    EXPECT_FALSE(match(T({{"t", Timestamp{big}}}), T({{"t", Timestamp{0}}})));
    EXPECT_FALSE(match(T({{"t", int64_t{-1}}}), T({{"t", Timestamp{big}}})));
    EXPECT_FALSE(match(T({{"t", Timestamp{big}}}), T({{"t", ByteArray{}}})));
}

TEST(HeadersMatch, NestedTablesCompareWithTypesInOrder) {
    FieldTable inner = T({{"k", int32_t{1}}, {"s", "v"}});
    EXPECT_TRUE(match(T({{"t", inner}}), T({{"t", T({{"k", int32_t{1}}, {"s", "v"}})}})));
    EXPECT_FALSE(match(T({{"t", inner}}), T({{"t", T({{"k", int64_t{1}}, {"s", "v"}})}})));     // type inside
    EXPECT_FALSE(match(T({{"t", inner}}), T({{"t", T({{"s", "v"}, {"k", int32_t{1}}})}})));     // order
    EXPECT_FALSE(match(T({{"t", inner}}), T({{"t", T({{"k", int32_t{1}}})}})));                 // length
    EXPECT_FALSE(match(T({{"t", inner}}), T({{"t", T({{"k", int32_t{1}}, {"s", ByteArray{"v"}}})}})));
    EXPECT_FALSE(match(T({{"t", T({{"f", 1.5f}})}}), T({{"t", T({{"f", 1.5}})}})));  // float vs double inside
    EXPECT_TRUE(match(T({{"t", T({{"f", 1.5}})}}), T({{"t", T({{"f", 1.5}})}})));
    // a nested timestamp is not converted
    EXPECT_TRUE(match(T({{"t", T({{"ts", Timestamp{5}}})}}), T({{"t", T({{"ts", Timestamp{5}}})}})));
    EXPECT_TRUE(match(T({{"t", T({})}}), T({{"t", T({})}})));
    EXPECT_FALSE(match(T({{"t", T({})}}), T({{"t", "x"}})));
}

TEST(HeadersMatch, ArraysCompareWithTypesInOrder) {
    FieldArray a{int32_t{1}, FieldValue("x"), true};
    EXPECT_TRUE(match(T({{"a", a}}), T({{"a", FieldArray{int32_t{1}, FieldValue("x"), true}}})));
    EXPECT_FALSE(match(T({{"a", a}}), T({{"a", FieldArray{int64_t{1}, FieldValue("x"), true}}})));
    EXPECT_FALSE(match(T({{"a", a}}), T({{"a", FieldArray{FieldValue("x"), int32_t{1}, true}}})));
    EXPECT_FALSE(match(T({{"a", a}}), T({{"a", FieldArray{int32_t{1}, FieldValue("x")}}})));
    EXPECT_TRUE(match(T({{"a", FieldArray{FieldValue(FieldArray{Void{}})}}}), T({{"a", FieldArray{FieldValue(FieldArray{Void{}})}}})));
    // an empty table and an empty array are both the empty list
    EXPECT_TRUE(match(T({{"a", FieldArray{}}}), T({{"a", T({})}})));
    EXPECT_TRUE(match(T({{"a", T({})}}), T({{"a", FieldArray{}}})));
    EXPECT_FALSE(match(T({{"a", FieldArray{int32_t{1}}}}), T({{"a", T({{"x", int32_t{1}}})}})));
    EXPECT_FALSE(match(T({{"a", FieldArray{}}}), T({{"a", FieldArray{Void{}}}})));
}

TEST(HeadersMatch, RepeatedHeaderNameUsesTheLast) {
    FieldTable headers = T({{"a", 1}, {"a", 2}});
    EXPECT_TRUE(match(T({{"a", 2}}), headers));
    EXPECT_FALSE(match(T({{"a", 1}}), headers));
    EXPECT_TRUE(match(T({{"a", Void{}}}), headers));
}

TEST(HeadersMatch, RepeatedBindingNameMustHoldEachTime) {
    FieldTable headers = T({{"a", 1}});
    EXPECT_FALSE(match(T({{"a", 1}, {"a", 2}}), headers));
    EXPECT_TRUE(match(T({{"x-match", "any"}, {"a", 2}, {"a", 1}}), headers));
}

// ---- bind-time validation ----

TEST(HeadersBinding, ValidXMatchValues) {
    EXPECT_EQ(validate_headers_binding(T({})), "");
    EXPECT_EQ(validate_headers_binding(T({{"a", 1}})), "");
    for (const char* v : {"all", "any", "all-with-x", "any-with-x"})
        EXPECT_EQ(validate_headers_binding(T({{"x-match", v}, {"a", 1}})), "") << v;
}

TEST(HeadersBinding, InvalidXMatchValue) {
    EXPECT_EQ(validate_headers_binding(T({{"x-match", "some"}})),
              "Invalid x-match field value <<\"some\">>; expected all, any, all-with-x, or any-with-x");
    EXPECT_NE(validate_headers_binding(T({{"x-match", "ALL"}})), "");
    EXPECT_NE(validate_headers_binding(T({{"x-match", ""}})), "");
    EXPECT_NE(validate_headers_binding(T({{"x-match", "all "}})), "");
    // only the first x-match is looked at
    EXPECT_NE(validate_headers_binding(T({{"x-match", "nope"}, {"x-match", "all"}})), "");
    EXPECT_EQ(validate_headers_binding(T({{"x-match", "all"}, {"x-match", "nope"}})), "");
}

TEST(HeadersBinding, InvalidXMatchType) {
    EXPECT_EQ(validate_headers_binding(T({{"x-match", int32_t{1}}})),
              "Invalid x-match field type signedint (value 1); expected longstr");
    EXPECT_EQ(validate_headers_binding(T({{"x-match", ByteArray{"any"}}})),
              "Invalid x-match field type binary (value <<\"any\">>); expected longstr");
    EXPECT_EQ(validate_headers_binding(T({{"x-match", Void{}}})),
              "Invalid x-match field type void (value undefined); expected longstr");
    EXPECT_EQ(validate_headers_binding(T({{"x-match", true}})),
              "Invalid x-match field type bool (value true); expected longstr");
    EXPECT_EQ(validate_headers_binding(T({{"x-match", 1.0}})),
              "Invalid x-match field type double (value 1.0); expected longstr");
    EXPECT_NE(validate_headers_binding(T({{"x-match", T({{"k", "v"}})}})), "");
    EXPECT_NE(validate_headers_binding(T({{"x-match", FieldArray{FieldValue("any")}}})), "");
}

}  // namespace
