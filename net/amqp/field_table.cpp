// AMQP field tables: decoding is bounds-checked at every step and depth-limited,
// so hostile input yields an error, never a crash or unbounded recursion.
#include "net/amqp/field_table.hpp"

#include <bit>
#include <cstring>

#include "net/amqp/wire.hpp"

namespace sluice::amqp {

namespace {

// Containers (tables and arrays) may nest this many levels, the outermost
// table included.
constexpr int kMaxDepth = 64;

// Type octets in the order of FieldValue::Variant's alternatives.
constexpr char kTypeCodes[] = "tbBsuIilfdDSATFVx";
static_assert(sizeof(kTypeCodes) - 1 == std::variant_size_v<FieldValue::Variant>);

TableError decode_value_at(std::string_view& in, FieldValue& out, int depth);

// Decodes table entries from `body` (the bytes after the length prefix).
// `depth` = number of containers enclosing these entries, this table included.
TableError decode_entries(std::string_view body, FieldTable& out, int depth) {
    out.entries.clear();
    while (!body.empty()) {
        const size_t name_len = static_cast<uint8_t>(body[0]);
        if (body.size() < 1 + name_len) return TableError::truncated;
        std::string name(body.substr(1, name_len));
        body.remove_prefix(1 + name_len);
        FieldValue v;
        if (auto e = decode_value_at(body, v, depth); e != TableError::none) return e;
        out.entries.emplace_back(std::move(name), std::move(v));
    }
    return TableError::none;
}

TableError decode_array(std::string_view body, FieldArray& out, int depth) {
    out.clear();
    while (!body.empty()) {
        FieldValue v;
        if (auto e = decode_value_at(body, v, depth); e != TableError::none) return e;
        out.push_back(std::move(v));
    }
    return TableError::none;
}

// Splits a u32-length-prefixed block off the front of `in`.
bool take_block(std::string_view& in, std::string_view& block) {
    WireReader r(in);
    block = r.longstr();
    if (!r.ok()) return false;
    in.remove_prefix(r.position());
    return true;
}

template <typename T>
T from_bits(uint64_t raw) {
    if constexpr (sizeof(T) == 4) return std::bit_cast<T>(static_cast<uint32_t>(raw));
    else return std::bit_cast<T>(raw);
}

// `depth` = number of containers enclosing this value.
TableError decode_value_at(std::string_view& in, FieldValue& out, int depth) {
    if (in.empty()) return TableError::truncated;
    const char type = in[0];
    std::string_view rest = in.substr(1);
    WireReader r(rest);
    switch (type) {
    case 't': out.v = r.u8() != 0; break;
    case 'b': out.v = static_cast<int8_t>(r.u8()); break;
    case 'B': out.v = r.u8(); break;
    case 's': out.v = static_cast<int16_t>(r.u16()); break;
    case 'u': out.v = r.u16(); break;
    case 'I': out.v = static_cast<int32_t>(r.u32()); break;
    case 'i': out.v = r.u32(); break;
    case 'l':
    // 'L' is not in RabbitMQ's errata list, but RabbitMQ's parser accepts it
    // as a signed 64-bit integer and py-amqp (kombu, Celery) sends it for any
    // int outside the 32-bit range. It decodes to int64 and re-encodes as 'l'.
    case 'L': out.v = static_cast<int64_t>(r.u64()); break;
    case 'f': out.v = from_bits<float>(r.u32()); break;
    case 'd': out.v = from_bits<double>(r.u64()); break;
    case 'D': {
        Decimal d;
        d.scale = r.u8();
        d.value = r.u32();
        out.v = d;
        break;
    }
    case 'S': out.v = std::string(r.longstr()); break;
    case 'x': out.v = ByteArray{std::string(r.longstr())}; break;
    case 'T': out.v = Timestamp{r.u64()}; break;
    case 'V': out.v = Void{}; break;
    case 'F':
    case 'A': {
        if (depth >= kMaxDepth) return TableError::too_deep;
        std::string_view body;
        if (!take_block(rest, body)) return TableError::truncated;
        TableError e;
        if (type == 'F') {
            e = decode_entries(body, out.v.emplace<FieldTable>(), depth + 1);
        } else {
            e = decode_array(body, out.v.emplace<FieldArray>(), depth + 1);
        }
        if (e != TableError::none) return e;
        in = rest;
        return TableError::none;
    }
    default:
        return TableError::bad_type;
    }
    if (!r.ok()) return TableError::truncated;
    in = rest.substr(r.position());
    return TableError::none;
}

void put_name(std::string& out, std::string_view name) { put_shortstr(out, name.substr(0, 255)); }

}  // namespace

// ---- FieldTable -------------------------------------------------------------

const FieldValue* FieldTable::find(std::string_view name) const {
    for (const auto& [k, v] : entries) {
        if (k == name) return &v;
    }
    return nullptr;
}

void FieldTable::set(std::string name, FieldValue value) {
    for (auto& [k, v] : entries) {
        if (k == name) {
            v = std::move(value);
            return;
        }
    }
    entries.emplace_back(std::move(name), std::move(value));
}

bool FieldTable::erase(std::string_view name) {
    for (auto it = entries.begin(); it != entries.end(); ++it) {
        if (it->first == name) {
            entries.erase(it);
            return true;
        }
    }
    return false;
}

bool FieldTable::operator==(const FieldTable& other) const { return entries == other.entries; }

// ---- FieldValue -------------------------------------------------------------

char FieldValue::type_code() const { return kTypeCodes[v.index()]; }

std::optional<int64_t> FieldValue::as_int() const {
    return std::visit(
        [](const auto& x) -> std::optional<int64_t> {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
                return static_cast<int64_t>(x);
            } else {
                return std::nullopt;
            }
        },
        v);
}

std::optional<std::string_view> FieldValue::as_string() const {
    if (const auto* s = std::get_if<std::string>(&v)) return std::string_view(*s);
    if (const auto* b = std::get_if<ByteArray>(&v)) return std::string_view(b->bytes);
    return std::nullopt;
}

std::optional<bool> FieldValue::as_bool() const {
    if (const auto* b = std::get_if<bool>(&v)) return *b;
    return std::nullopt;
}

// ---- Codec ------------------------------------------------------------------

TableError decode_table(std::string_view& in, FieldTable& out) {
    std::string_view rest = in;
    std::string_view body;
    if (!take_block(rest, body)) return TableError::truncated;
    if (auto e = decode_entries(body, out, 1); e != TableError::none) return e;
    in = rest;
    return TableError::none;
}

TableError decode_value(std::string_view& in, FieldValue& out, int depth) {
    if (depth < 0) depth = 0;
    return decode_value_at(in, out, depth);
}

void encode_table(std::string& out, const FieldTable& t) {
    const size_t at = out.size();
    put_u32(out, 0);
    for (const auto& [name, value] : t.entries) {
        put_name(out, name);
        encode_value(out, value);
    }
    patch_u32(out, at, static_cast<uint32_t>(out.size() - at - 4));
}

void encode_value(std::string& out, const FieldValue& fv) {
    put_u8(out, static_cast<uint8_t>(fv.type_code()));
    std::visit(
        [&out](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>) {
                put_u8(out, x ? 1 : 0);
            } else if constexpr (std::is_same_v<T, int8_t> || std::is_same_v<T, uint8_t>) {
                put_u8(out, static_cast<uint8_t>(x));
            } else if constexpr (std::is_same_v<T, int16_t> || std::is_same_v<T, uint16_t>) {
                put_u16(out, static_cast<uint16_t>(x));
            } else if constexpr (std::is_same_v<T, int32_t> || std::is_same_v<T, uint32_t>) {
                put_u32(out, static_cast<uint32_t>(x));
            } else if constexpr (std::is_same_v<T, int64_t>) {
                put_u64(out, static_cast<uint64_t>(x));
            } else if constexpr (std::is_same_v<T, float>) {
                put_u32(out, std::bit_cast<uint32_t>(x));
            } else if constexpr (std::is_same_v<T, double>) {
                put_u64(out, std::bit_cast<uint64_t>(x));
            } else if constexpr (std::is_same_v<T, Decimal>) {
                put_u8(out, x.scale);
                put_u32(out, x.value);
            } else if constexpr (std::is_same_v<T, std::string>) {
                put_longstr(out, x);
            } else if constexpr (std::is_same_v<T, ByteArray>) {
                put_longstr(out, x.bytes);
            } else if constexpr (std::is_same_v<T, Timestamp>) {
                put_u64(out, x.seconds);
            } else if constexpr (std::is_same_v<T, FieldTable>) {
                encode_table(out, x);
            } else if constexpr (std::is_same_v<T, FieldArray>) {
                const size_t at = out.size();
                put_u32(out, 0);
                for (const auto& e : x) encode_value(out, e);
                patch_u32(out, at, static_cast<uint32_t>(out.size() - at - 4));
            } else {
                static_assert(std::is_same_v<T, Void>);
            }
        },
        fv.v);
}

}  // namespace sluice::amqp
