// Property checks shared by the codec fuzz targets (fuzz_frame,
// fuzz_field_table): a failed CHECK prints the condition and aborts, which
// libFuzzer reports as a crash with the input that caused it.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "net/amqp/field_table.hpp"

namespace sluice::fuzz {

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
}
#define CHECK(cond)                              \
    do {                                         \
        if (!(cond)) ::sluice::fuzz::fail(#cond); \
    } while (0)

// NaN floats compare unequal to themselves: struct equality is only demanded
// of values with no NaN inside (byte equality always).
bool has_nan(const amqp::FieldTable& t);
inline bool has_nan(const amqp::FieldValue& v) {
    return std::visit(
        [](const auto& x) -> bool {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
                return std::isnan(x);
            } else if constexpr (std::is_same_v<T, amqp::FieldTable>) {
                return has_nan(x);
            } else if constexpr (std::is_same_v<T, amqp::FieldArray>) {
                for (const auto& e : x)
                    if (has_nan(e)) return true;
                return false;
            } else {
                return false;
            }
        },
        v.v);
}
inline bool has_nan(const amqp::FieldTable& t) {
    for (const auto& [name, value] : t.entries)
        if (has_nan(value)) return true;
    return false;
}

// decode_table over `bytes`: on success the consumed bytes re-encode to the
// same length, and encode/decode round-trips (byte-identical the second
// time). Returns whether the table decoded; `out` gets it.
inline bool check_table(std::string_view bytes, amqp::FieldTable& out) {
    std::string_view in = bytes;
    amqp::FieldTable& t = out;
    const amqp::TableError e = amqp::decode_table(in, t);
    if (e != amqp::TableError::none) return false;
    CHECK(in.size() <= bytes.size());
    std::string first;
    amqp::encode_table(first, t);
    std::string_view view = first;
    amqp::FieldTable again;
    CHECK(amqp::decode_table(view, again) == amqp::TableError::none);
    CHECK(view.empty());
    if (!has_nan(t)) CHECK(t == again);
    std::string second;
    amqp::encode_table(second, again);
    CHECK(first == second);
    CHECK(first.size() == bytes.size() - in.size());
    return true;
}

inline bool check_table(std::string_view bytes) {
    amqp::FieldTable t;
    return check_table(bytes, t);
}

}  // namespace sluice::fuzz
