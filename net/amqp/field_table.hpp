// AMQP field tables and field values, with every value type RabbitMQ accepts
// (see RabbitMQ's "AMQP 0-9-1 errata": t b B s u I i l f d D S A T F V x).
//
// A FieldTable keeps its entries in wire order, so a table that passes through
// the broker (message headers, queue arguments) is re-encoded as it came.
//
// Thread-safety: plain value types.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace sluice::amqp {

struct FieldValue;

// 'D': value = unscaled / 10^scale.
struct Decimal {
    uint8_t scale = 0;
    uint32_t value = 0;
    bool operator==(const Decimal&) const = default;
};
// 'T': seconds since the epoch.
struct Timestamp {
    uint64_t seconds = 0;
    bool operator==(const Timestamp&) const = default;
};
// 'x': opaque bytes (distinct from 'S' so it round-trips as 'x').
struct ByteArray {
    std::string bytes;
    bool operator==(const ByteArray&) const = default;
};
// 'V': no value.
struct Void {
    bool operator==(const Void&) const = default;
};

// 'F': an ordered list of (name, value).
struct FieldTable {
    std::vector<std::pair<std::string, FieldValue>> entries;

    // First entry with this name, or nullptr.
    const FieldValue* find(std::string_view name) const;
    // Replaces the first entry with this name, or appends one.
    void set(std::string name, FieldValue value);
    bool erase(std::string_view name);
    bool empty() const;
    size_t size() const;
    bool operator==(const FieldTable& other) const;
};

// 'A': a list of values.
using FieldArray = std::vector<FieldValue>;

struct FieldValue {
    using Variant = std::variant<bool,          // t
                                 int8_t,        // b
                                 uint8_t,       // B
                                 int16_t,       // s
                                 uint16_t,      // u
                                 int32_t,       // I
                                 uint32_t,      // i
                                 int64_t,       // l
                                 float,         // f
                                 double,        // d
                                 Decimal,       // D
                                 std::string,   // S (long string)
                                 FieldArray,    // A
                                 Timestamp,     // T
                                 FieldTable,    // F
                                 Void,          // V
                                 ByteArray>;    // x
    Variant v;

    FieldValue() : v(Void{}) {}
    template <typename T, typename = std::enable_if_t<std::is_constructible_v<Variant, T&&> &&
                                                      !std::is_same_v<std::decay_t<T>, FieldValue>>>
    FieldValue(T&& x) : v(std::forward<T>(x)) {}
    FieldValue(const char* s) : v(std::string(s)) {}

    // The wire type octet for this value ('t', 'b', ...).
    char type_code() const;
    // Any integer type as int64 (uint64 never occurs: there is no such wire type).
    std::optional<int64_t> as_int() const;
    // 'S' or 'x' as bytes.
    std::optional<std::string_view> as_string() const;
    const FieldTable* as_table() const { return std::get_if<FieldTable>(&v); }
    const FieldArray* as_array() const { return std::get_if<FieldArray>(&v); }
    std::optional<bool> as_bool() const;

    bool operator==(const FieldValue& o) const { return v == o.v; }
};

// Defined here, where FieldValue is complete (clang rejects them in-class).
inline bool FieldTable::empty() const { return entries.empty(); }
inline size_t FieldTable::size() const { return entries.size(); }

enum class TableError { none, truncated, bad_type, too_deep };

// Decodes a table *including* its 32-bit length prefix from `in`, advancing it.
// Nesting is limited (64 levels) so hostile input cannot exhaust the stack.
TableError decode_table(std::string_view& in, FieldTable& out);
// Decodes a field value (type octet + value), advancing `in`.
TableError decode_value(std::string_view& in, FieldValue& out, int depth = 0);
// Appends the table with its 32-bit length prefix.
void encode_table(std::string& out, const FieldTable& t);
void encode_value(std::string& out, const FieldValue& v);

}  // namespace sluice::amqp
