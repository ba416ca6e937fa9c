// The management API's value conversions: UTF-8 and base64 for JSON strings,
// AMQP field tables and message properties to and from JSON.
#include <cctype>
#include <cmath>
#include <limits>

#include "net/management_api_internal.hpp"

namespace sluice::net::mgmt {

// --- conversions ------------------------------------------------------------------

bool valid_utf8(std::string_view s) {
    size_t i = 0;
    const size_t n = s.size();
    while (i < n) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
        else return false;
        if (i + len > n) return false;
        for (size_t k = 1; k < len; ++k) {
            unsigned char cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

json::string utf8(std::string_view s) {
    if (valid_utf8(s)) return json::string(s);
    json::string out;
    for (size_t i = 0; i < s.size();) {  // copy valid sequences, replace each bad byte
        size_t len = 1;
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c >= 0xC0) len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (c < 0x80 || (i + len <= s.size() && valid_utf8(s.substr(i, len)))) {
            out.append(s.substr(i, c < 0x80 ? 1 : len));
            i += c < 0x80 ? 1 : len;
        } else {
            out.append("\xEF\xBF\xBD");
            ++i;
        }
    }
    return out;
}

std::string url_encode(std::string_view in) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (char ch : in) {
        unsigned char c = static_cast<unsigned char>(ch);
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out.push_back(ch);
        } else {
            out.push_back('%');
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        }
    }
    return out;
}

json::object rate_json(double r) {
    json::object o;
    double rounded = std::isfinite(r) ? std::round(r * 10.0) / 10.0 : 0.0;
    if (rounded == std::floor(rounded) && std::fabs(rounded) < 1e15) o["rate"] = static_cast<int64_t>(rounded);
    else o["rate"] = rounded;
    return o;
}

json::value field_value_json(const amqp::FieldValue& fv) {
    return std::visit(
        [](const auto& x) -> json::value {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, bool>) return x;
            else if constexpr (std::is_integral_v<T>) return static_cast<int64_t>(x);
            else if constexpr (std::is_floating_point_v<T>) return std::isfinite(x) ? json::value(double(x)) : nullptr;
            else if constexpr (std::is_same_v<T, amqp::Decimal>) return double(x.value) / std::pow(10.0, x.scale);
            else if constexpr (std::is_same_v<T, std::string>) return utf8(x);
            else if constexpr (std::is_same_v<T, amqp::FieldArray>) {
                json::array a;
                for (const auto& e : x) a.push_back(field_value_json(e));
                return a;
            } else if constexpr (std::is_same_v<T, amqp::Timestamp>) return x.seconds;
            else if constexpr (std::is_same_v<T, amqp::FieldTable>) return table_json(x);
            else if constexpr (std::is_same_v<T, amqp::Void>) return nullptr;
            else return utf8(x.bytes);  // ByteArray
        },
        fv.v);
}

json::object table_json(const amqp::FieldTable& t) {
    json::object o;
    for (const auto& [k, v] : t.entries) o[utf8(k)] = field_value_json(v);
    return o;
}

namespace {

bool json_value(const json::value& v, amqp::FieldValue& out, std::string& error) {
    switch (v.kind()) {
        case json::kind::bool_: out = v.get_bool(); return true;
        case json::kind::int64: out = v.get_int64(); return true;
        case json::kind::uint64:
            if (v.get_uint64() > uint64_t(std::numeric_limits<int64_t>::max())) {
                error = "integer " + std::to_string(v.get_uint64()) + " does not fit a signed 64-bit value";
                return false;
            }
            out = int64_t(v.get_uint64());
            return true;
        case json::kind::double_: out = v.get_double(); return true;
        case json::kind::string: out = std::string(v.get_string().subview()); return true;
        case json::kind::null: out = amqp::Void{}; return true;
        case json::kind::array: {
            amqp::FieldArray a;
            for (const auto& e : v.get_array()) {
                amqp::FieldValue fv;
                if (!json_value(e, fv, error)) return false;
                a.push_back(std::move(fv));
            }
            out = std::move(a);
            return true;
        }
        case json::kind::object: {
            amqp::FieldTable t;
            if (!json_table(v, t, error)) return false;
            out = std::move(t);
            return true;
        }
    }
    error = "unsupported value";
    return false;
}

}  // namespace

bool json_table(const json::value& v, amqp::FieldTable& out, std::string& error) {
    out = {};
    if (v.is_null()) return true;
    if (!v.is_object()) {
        error = "expected a JSON object";
        return false;
    }
    for (const auto& kv : v.get_object()) {
        if (kv.key().size() > 255) {
            error = "field name longer than 255 bytes";
            return false;
        }
        amqp::FieldValue fv;
        if (!json_value(kv.value(), fv, error)) return false;
        out.set(std::string(kv.key()), std::move(fv));
    }
    return true;
}

json::object properties_json(const amqp::BasicProperties& p) {
    json::object o;
    auto str = [&](const char* k, const std::optional<std::string>& v) {
        if (v) o[k] = utf8(*v);
    };
    str("content_type", p.content_type);
    str("content_encoding", p.content_encoding);
    if (p.headers) o["headers"] = table_json(*p.headers);
    if (p.delivery_mode) o["delivery_mode"] = *p.delivery_mode;
    if (p.priority) o["priority"] = *p.priority;
    str("correlation_id", p.correlation_id);
    str("reply_to", p.reply_to);
    str("expiration", p.expiration);
    str("message_id", p.message_id);
    if (p.timestamp) o["timestamp"] = *p.timestamp;
    str("type", p.type);
    str("user_id", p.user_id);
    str("app_id", p.app_id);
    str("cluster_id", p.cluster_id);
    return o;
}

bool json_properties(const json::object& o, amqp::BasicProperties& out, std::string& error) {
    for (const auto& kv : o) {
        std::string_view k = kv.key();
        const json::value& v = kv.value();
        if (v.is_null()) continue;
        auto short_str = [&](std::optional<std::string>& field) {
            if (!v.is_string()) {
                error = "property '" + std::string(k) + "' must be a string";
                return false;
            }
            if (v.get_string().size() > 255) {
                error = "property '" + std::string(k) + "' is longer than 255 bytes";
                return false;
            }
            field = std::string(v.get_string().subview());
            return true;
        };
        auto octet = [&](std::optional<uint8_t>& field, int64_t lo, int64_t hi) {
            if (!v.is_int64() && !v.is_uint64()) {
                error = "property '" + std::string(k) + "' must be an integer";
                return false;
            }
            int64_t x = v.is_int64() ? v.get_int64() : int64_t(std::min<uint64_t>(v.get_uint64(), 1u << 20));
            if (x < lo || x > hi) {
                error = "property '" + std::string(k) + "' must be from " + std::to_string(lo) + " to " +
                        std::to_string(hi);
                return false;
            }
            field = uint8_t(x);
            return true;
        };
        bool ok = true;
        if (k == "content_type") ok = short_str(out.content_type);
        else if (k == "content_encoding") ok = short_str(out.content_encoding);
        else if (k == "correlation_id") ok = short_str(out.correlation_id);
        else if (k == "reply_to") ok = short_str(out.reply_to);
        else if (k == "expiration") ok = short_str(out.expiration);
        else if (k == "message_id") ok = short_str(out.message_id);
        else if (k == "type") ok = short_str(out.type);
        else if (k == "user_id") ok = short_str(out.user_id);
        else if (k == "app_id") ok = short_str(out.app_id);
        else if (k == "cluster_id") ok = short_str(out.cluster_id);
        else if (k == "delivery_mode") ok = octet(out.delivery_mode, 1, 2);
        else if (k == "priority") ok = octet(out.priority, 0, 255);
        else if (k == "timestamp") {
            if (v.is_uint64()) out.timestamp = v.get_uint64();
            else if (v.is_int64() && v.get_int64() >= 0) out.timestamp = uint64_t(v.get_int64());
            else {
                error = "property 'timestamp' must be a non-negative integer (seconds since the epoch)";
                ok = false;
            }
        } else if (k == "headers") {
            amqp::FieldTable t;
            if (!json_table(v, t, error)) {
                error = "property 'headers': " + error;
                ok = false;
            } else if (!t.empty()) {
                out.headers = std::move(t);
            }
        } else {
            error = "unknown property '" + std::string(k) + "'";
            ok = false;
        }
        if (!ok) return false;
    }
    return true;
}

}  // namespace sluice::net::mgmt
