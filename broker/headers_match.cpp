#include "broker/headers_match.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <variant>

namespace sluice::broker {

namespace {

using amqp::FieldArray;
using amqp::FieldTable;
using amqp::FieldValue;

__extension__ typedef __int128 Int128;  // a timestamp header in ms may exceed int64

enum class Mode { all, any, all_with_x, any_with_x };

const FieldValue* first_entry(const FieldTable& t, std::string_view key) {
    for (const auto& [k, v] : t.entries)
        if (k == key) return &v;
    return nullptr;
}

// The message headers become a map in RabbitMQ: a repeated name keeps its last value.
const FieldValue* last_entry(const FieldTable* t, std::string_view key) {
    if (!t) return nullptr;
    for (auto it = t->entries.rbegin(); it != t->entries.rend(); ++it)
        if (it->first == key) return &it->second;
    return nullptr;
}

Mode parse_mode(const FieldTable& args) {
    const FieldValue* xm = first_entry(args, "x-match");
    if (!xm) return Mode::all;
    const auto* s = std::get_if<std::string>(&xm->v);
    if (!s) return Mode::all;
    if (*s == "any") return Mode::any;
    if (*s == "all-with-x") return Mode::all_with_x;
    if (*s == "any-with-x") return Mode::any_with_x;
    return Mode::all;  // "all", or a value that predates validation
}

// Erlang =:= on floats: no int/float coercion, and under OTP 27 +0.0 =/= -0.0.
bool erl_float_eq(double a, double b) { return a == b && std::signbit(a) == std::signbit(b); }

bool typed_eq(const FieldValue& a, const FieldValue& b);

bool tables_typed_eq(const FieldTable& a, const FieldTable& b) {
    if (a.entries.size() != b.entries.size()) return false;
    for (size_t i = 0; i < a.entries.size(); ++i)
        if (a.entries[i].first != b.entries[i].first || !typed_eq(a.entries[i].second, b.entries[i].second))
            return false;
    return true;
}

bool arrays_typed_eq(const FieldArray& a, const FieldArray& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
        if (!typed_eq(a[i], b[i])) return false;
    return true;
}

// Inside a table or array RabbitMQ keeps {Type, Value}: the wire type counts.
bool typed_eq(const FieldValue& a, const FieldValue& b) {
    if (a.v.index() != b.v.index()) return false;
    return std::visit(
        [&](const auto& x) -> bool {
            using T = std::decay_t<decltype(x)>;
            const T& y = std::get<T>(b.v);
            if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
                return erl_float_eq(x, y);
            else if constexpr (std::is_same_v<T, FieldTable>)
                return tables_typed_eq(x, y);
            else if constexpr (std::is_same_v<T, FieldArray>)
                return arrays_typed_eq(x, y);
            else
                return x == y;
        },
        a.v);
}

// A top-level value as the Erlang term RabbitMQ compares (types dropped).
struct Term {
    enum class Kind { integer, floating, boolean, binary, decimal, table, array, undefined };
    Kind kind = Kind::undefined;
    Int128 i = 0;
    double f = 0;
    bool b = false;
    std::string_view bin;
    amqp::Decimal dec;
    const FieldTable* table = nullptr;
    const FieldArray* array = nullptr;
};

Term to_term(const FieldValue& v, bool message_side) {
    Term t;
    std::visit(
        [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>) {
                t.kind = Term::Kind::boolean;
                t.b = x;
            } else if constexpr (std::is_integral_v<T>) {
                t.kind = Term::Kind::integer;
                t.i = x;
            } else if constexpr (std::is_floating_point_v<T>) {
                t.kind = Term::Kind::floating;
                t.f = x;
            } else if constexpr (std::is_same_v<T, amqp::Timestamp>) {
                t.kind = Term::Kind::integer;
                t.i = static_cast<Int128>(x.seconds) * (message_side ? 1000 : 1);
            } else if constexpr (std::is_same_v<T, amqp::Decimal>) {
                t.kind = Term::Kind::decimal;
                t.dec = x;
            } else if constexpr (std::is_same_v<T, std::string>) {
                t.kind = Term::Kind::binary;
                t.bin = x;
            } else if constexpr (std::is_same_v<T, amqp::ByteArray>) {
                t.kind = Term::Kind::binary;
                t.bin = x.bytes;
            } else if constexpr (std::is_same_v<T, FieldTable>) {
                t.kind = Term::Kind::table;
                t.table = &x;
            } else if constexpr (std::is_same_v<T, FieldArray>) {
                t.kind = Term::Kind::array;
                t.array = &x;
            } else {
                static_assert(std::is_same_v<T, amqp::Void>);
                t.kind = Term::Kind::undefined;
            }
        },
        v.v);
    return t;
}

bool values_match(const FieldValue& binding_value, const FieldValue& header_value) {
    Term p = to_term(binding_value, false);
    Term d = to_term(header_value, true);
    using K = Term::Kind;
    // A table and an array are both lists: equal only when both are empty.
    if ((p.kind == K::table && d.kind == K::array) || (p.kind == K::array && d.kind == K::table)) {
        bool p_empty = p.table ? p.table->entries.empty() : p.array->empty();
        bool d_empty = d.table ? d.table->entries.empty() : d.array->empty();
        return p_empty && d_empty;
    }
    if (p.kind != d.kind) return false;
    switch (p.kind) {
        case K::integer: return p.i == d.i;
        case K::floating: return erl_float_eq(p.f, d.f);
        case K::boolean: return p.b == d.b;
        case K::binary: return p.bin == d.bin;
        case K::decimal: return p.dec == d.dec;
        case K::table: return tables_typed_eq(*p.table, *d.table);
        case K::array: return arrays_typed_eq(*p.array, *d.array);
        case K::undefined: return false;  // a void binding value is a presence test, handled before
    }
    return false;
}

// One binding entry against the headers: skipped (x- keys), matched or failed.
enum class Outcome { skip, matched, failed };

Outcome match_one(const std::string& key, const FieldValue& value, const FieldTable* headers, bool with_x) {
    if (with_x ? key == "x-match" : key.starts_with("x-")) return Outcome::skip;
    const FieldValue* h = last_entry(headers, key);
    if (std::holds_alternative<amqp::Void>(value.v)) return h ? Outcome::matched : Outcome::failed;
    return h && values_match(value, *h) ? Outcome::matched : Outcome::failed;
}

// --- rendering values the way Erlang's ~tp would, for error texts ---

void render_binary(std::string& out, std::string_view s) {
    bool printable = true;
    for (unsigned char c : s)
        if (!((c >= 0x20 && c < 0x7f) || c == '\n' || c == '\t' || c == '\r')) printable = false;
    out += "<<";
    if (printable) {
        out += '"';
        for (char c : s) {
            if (c == '"' || c == '\\') {
                out += '\\';
                out += c;
            } else if (c == '\n') {
                out += "\\n";
            } else if (c == '\t') {
                out += "\\t";
            } else if (c == '\r') {
                out += "\\r";
            } else {
                out += c;
            }
        }
        out += '"';
    } else {
        for (size_t i = 0; i < s.size(); ++i) {
            if (i) out += ',';
            out += std::to_string(static_cast<unsigned char>(s[i]));
        }
    }
    out += ">>";
}

void render_double(std::string& out, double d) {
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, d);
    std::string s(buf, res.ptr);
    // Erlang always shows a fraction: 1.0, 1.0e10.
    size_t e = s.find('e');
    std::string mant = s.substr(0, e);
    std::string exp = e == std::string::npos ? "" : s.substr(e);
    if (mant.find('.') == std::string::npos && mant.find_first_of("ni") == std::string::npos) mant += ".0";
    if (!exp.empty() && exp.size() > 1 && exp[1] == '+') exp.erase(1, 1);
    out += mant;
    out += exp;
}

void render(std::string& out, const FieldValue& v, bool typed);

void render_table(std::string& out, const FieldTable& t) {
    out += '[';
    for (size_t i = 0; i < t.entries.size(); ++i) {
        if (i) out += ',';
        out += '{';
        render_binary(out, t.entries[i].first);
        out += ',';
        out += erlang_type_name(t.entries[i].second);
        out += ',';
        render(out, t.entries[i].second, false);
        out += '}';
    }
    out += ']';
}

void render(std::string& out, const FieldValue& v, bool typed) {
    if (typed) {
        out += '{';
        out += erlang_type_name(v);
        out += ',';
    }
    std::visit(
        [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>) {
                out += x ? "true" : "false";
            } else if constexpr (std::is_integral_v<T>) {
                out += std::to_string(static_cast<int64_t>(x));
            } else if constexpr (std::is_floating_point_v<T>) {
                render_double(out, x);
            } else if constexpr (std::is_same_v<T, amqp::Timestamp>) {
                out += std::to_string(x.seconds);
            } else if constexpr (std::is_same_v<T, amqp::Decimal>) {
                out += '{' + std::to_string(x.scale) + ',' + std::to_string(x.value) + '}';
            } else if constexpr (std::is_same_v<T, std::string>) {
                render_binary(out, x);
            } else if constexpr (std::is_same_v<T, amqp::ByteArray>) {
                render_binary(out, x.bytes);
            } else if constexpr (std::is_same_v<T, FieldTable>) {
                render_table(out, x);
            } else if constexpr (std::is_same_v<T, FieldArray>) {
                out += '[';
                for (size_t i = 0; i < x.size(); ++i) {
                    if (i) out += ',';
                    render(out, x[i], true);
                }
                out += ']';
            } else {
                out += "undefined";
            }
        },
        v.v);
    if (typed) out += '}';
}

}  // namespace

const char* erlang_type_name(const amqp::FieldValue& v) {
    static constexpr const char* names[] = {"bool",     "byte",        "unsignedbyte", "short",   "unsignedshort",
                                            "signedint", "unsignedint", "long",        "float",   "double",
                                            "decimal",  "longstr",     "array",        "timestamp", "table",
                                            "void",     "binary"};
    static_assert(std::variant_size_v<amqp::FieldValue::Variant> == sizeof(names) / sizeof(names[0]));
    return names[v.v.index()];
}

bool headers_match(const amqp::FieldTable& binding_args, const amqp::FieldTable* message_headers) {
    const Mode mode = parse_mode(binding_args);
    const bool with_x = mode == Mode::all_with_x || mode == Mode::any_with_x;
    const bool any = mode == Mode::any || mode == Mode::any_with_x;
    for (const auto& [key, value] : binding_args.entries) {
        Outcome o = match_one(key, value, message_headers, with_x);
        if (any && o == Outcome::matched) return true;
        if (!any && o == Outcome::failed) return false;
    }
    return !any;
}

std::string validate_headers_binding(const amqp::FieldTable& binding_args) {
    const FieldValue* xm = first_entry(binding_args, "x-match");
    if (!xm) return "";
    std::string out;
    if (const auto* s = std::get_if<std::string>(&xm->v)) {
        if (*s == "all" || *s == "any" || *s == "all-with-x" || *s == "any-with-x") return "";
        out = "Invalid x-match field value ";
        render_binary(out, *s);
        out += "; expected all, any, all-with-x, or any-with-x";
        return out;
    }
    out = "Invalid x-match field type ";
    out += erlang_type_name(*xm);
    out += " (value ";
    render(out, *xm, false);
    out += "); expected longstr";
    return out;
}

}  // namespace sluice::broker
