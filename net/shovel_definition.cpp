#include "net/shovel_definition.hpp"

#include <boost/json.hpp>
#include <charconv>
#include <cmath>

#include "net/management_api_internal.hpp"

namespace sluice::net {

namespace json = boost::json;

namespace {

bool percent_decode_uri(std::string_view in, std::string& out) { return mgmt::percent_decode(in, out, false); }

template <typename T>
bool parse_number(std::string_view s, T& out) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && end == s.data() + s.size() && !s.empty();
}

// The keys RabbitMQ's shovel accepts for AMQP 0-9-1 (both its current names
// and the older ones it still reads).
constexpr std::string_view kKnownKeys[] = {
    "src-uri", "src-protocol", "src-queue", "src-queue-args", "src-exchange", "src-exchange-key",
    "src-prefetch-count", "prefetch-count", "src-delete-after", "delete-after", "dest-uri", "dest-protocol",
    "dest-queue", "dest-queue-args", "dest-exchange", "dest-exchange-key", "dest-publish-properties",
    "publish-properties", "dest-add-forward-headers", "add-forward-headers", "dest-add-timestamp-header",
    "add-timestamp-header", "ack-mode", "reconnect-delay", "src-consumer-args", "dest-predeclared",
    "src-predeclared"};

class Reader {
public:
    explicit Reader(const json::object& o) : o_(o) {}
    std::string error;

    const json::value* get(std::string_view key, std::string_view legacy = {}) const {
        if (auto it = o_.find(key); it != o_.end()) return &it->value();
        if (!legacy.empty())
            if (auto it = o_.find(legacy); it != o_.end()) return &it->value();
        return nullptr;
    }
    bool string(std::string_view key, std::string& out) {
        const json::value* v = get(key);
        if (!v) return false;
        if (!v->is_string()) return fail(std::string(key) + " should be a string");
        out = std::string(v->get_string());
        return true;
    }
    bool number(std::string_view key, std::string_view legacy, double& out) {
        const json::value* v = get(key, legacy);
        if (!v) return false;
        if (!v->is_number()) return fail(std::string(key) + " should be a number");
        out = v->to_number<double>();
        return true;
    }
    bool boolean(std::string_view key, std::string_view legacy, bool& out) {
        const json::value* v = get(key, legacy);
        if (!v) return false;
        if (!v->is_bool()) return fail(std::string(key) + " should be a boolean");
        out = v->get_bool();
        return true;
    }
    bool table(std::string_view key, std::optional<amqp::FieldTable>& out) {
        const json::value* v = get(key);
        if (!v) return false;
        amqp::FieldTable t;
        std::string why;
        if (!v->is_object() || !mgmt::json_table(*v, t, why))
            return fail(std::string(key) + " should be an object of arguments" + (why.empty() ? "" : ": " + why));
        out = std::move(t);
        return true;
    }
    bool uris(std::string_view key, std::vector<AmqpUri>& out) {
        const json::value* v = get(key);
        if (!v) return fail(std::string(key) + " is mandatory");
        std::vector<const json::value*> items;
        if (v->is_array())
            for (const auto& u : v->get_array()) items.push_back(&u);
        else
            items.push_back(v);
        if (items.empty()) return fail(std::string(key) + " should not be empty");
        for (const json::value* u : items) {
            if (!u->is_string()) return fail(std::string(key) + " should be a string or a list of strings");
            AmqpUri uri;
            std::string why = parse_amqp_uri(u->get_string(), uri);
            if (!why.empty()) return fail("\"" + std::string(u->get_string()) + "\" not a valid URI: " + why);
            out.push_back(std::move(uri));
        }
        return true;
    }
    bool fail(std::string why) {
        if (error.empty()) error = std::move(why);
        return false;
    }

private:
    const json::object& o_;
};

std::string check_protocol(const Reader& r, std::string_view key) {
    const json::value* v = r.get(key);
    if (!v) return "";
    if (!v->is_string()) return std::string(key) + " should be a string";
    if (v->get_string() == "amqp091") return "";
    if (v->get_string() == "amqp10") return std::string(key) + " amqp10 is not supported (Sluice speaks AMQP 0-9-1)";
    return std::string(key) + " should be amqp091 or amqp10";
}

}  // namespace

std::string AmqpUri::redacted() const {
    if (!password) return text;
    std::string_view t = text;
    size_t scheme = t.find("://");
    size_t at = t.rfind('@');
    if (scheme == std::string_view::npos || at == std::string_view::npos) return text;
    size_t colon = t.find(':', scheme + 3);
    if (colon == std::string_view::npos || colon > at) return text;
    return std::string(t.substr(0, colon)) + std::string(t.substr(at));
}

std::string parse_amqp_uri(std::string_view text, AmqpUri& out) {
    out = AmqpUri{};
    out.text = std::string(text);
    constexpr std::string_view kScheme = "amqp://";
    if (text.substr(0, 8) == "amqps://") return "amqps is not supported by Sluice's shovels yet; use amqp://";
    if (text.substr(0, kScheme.size()) != kScheme) return "the scheme should be amqp://";
    std::string_view rest = text.substr(kScheme.size());
    std::string_view query;
    if (size_t q = rest.find('?'); q != std::string_view::npos) {
        query = rest.substr(q + 1);
        rest = rest.substr(0, q);
    }
    std::string_view authority = rest.substr(0, rest.find('/'));
    std::optional<std::string_view> path;
    if (authority.size() < rest.size()) path = rest.substr(authority.size() + 1);
    if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
        std::string_view userinfo = authority.substr(0, at);
        authority = authority.substr(at + 1);
        size_t colon = userinfo.find(':');
        std::string user, password;
        if (!percent_decode_uri(userinfo.substr(0, colon), user)) return "bad percent-encoding in the user";
        out.user = std::move(user);
        if (colon != std::string_view::npos) {
            if (!percent_decode_uri(userinfo.substr(colon + 1), password)) return "bad percent-encoding in the password";
            out.password = std::move(password);
        }
    }
    std::string_view host = authority, port;
    if (!host.empty() && host.front() == '[') {
        size_t close = host.find(']');
        if (close == std::string_view::npos) return "unterminated [ in the host";
        if (close + 1 < host.size()) {
            if (host[close + 1] != ':') return "junk after the host";
            port = host.substr(close + 2);
        }
        host = host.substr(1, close - 1);
    } else if (size_t colon = host.find(':'); colon != std::string_view::npos) {
        port = host.substr(colon + 1);
        host = host.substr(0, colon);
    }
    if (!percent_decode_uri(host, out.host)) return "bad percent-encoding in the host";
    if (!port.empty() && (!parse_number(port, out.port) || out.port == 0)) return "bad port";
    if (path) {
        if (path->find('/') != std::string_view::npos) return "the vhost must be one path segment (%2F for '/')";
        if (!percent_decode_uri(*path, out.vhost)) return "bad percent-encoding in the vhost";
    }
    while (!query.empty()) {
        std::string_view kv = query.substr(0, query.find('&'));
        query.remove_prefix(std::min(query.size(), kv.size() + 1));
        size_t eq = kv.find('=');
        if (kv.substr(0, eq) == "heartbeat" && (eq == std::string_view::npos || !parse_number(kv.substr(eq + 1), out.heartbeat_s)))
            return "heartbeat should be a number of seconds";
    }
    return "";
}

std::string parse_shovel_definition(std::string_view json_text, ShovelDefinition& out) {
    out = ShovelDefinition{};
    boost::system::error_code ec;
    json::value doc = json::parse(json_text, ec);
    if (ec) return "the value is not JSON: " + ec.message();
    if (!doc.is_object()) return "the value should be a JSON object";
    const json::object& o = doc.get_object();
    for (const auto& kv : o) {
        bool known = false;
        for (std::string_view k : kKnownKeys) known = known || kv.key() == k;
        if (!known) return "Unrecognised terms [" + std::string(kv.key()) + "] in shovel definition";
    }
    Reader r(o);
    for (std::string_view key : {"src-protocol", "dest-protocol"})
        if (std::string why = check_protocol(r, key); !why.empty()) return why;
    r.uris("src-uri", out.src_uris);
    r.uris("dest-uri", out.dest_uris);
    const bool src_queue = r.string("src-queue", out.src_queue);
    out.src_is_exchange = r.string("src-exchange", out.src_exchange);
    r.string("src-exchange-key", out.src_exchange_key);
    if (!r.error.empty()) return r.error;
    if (src_queue == out.src_is_exchange)
        return src_queue ? "Cannot specify 'src-exchange' and 'src-queue'" : "Must specify 'src-exchange' or 'src-queue'";
    r.table("src-queue-args", out.src_queue_args);
    r.table("src-consumer-args", out.src_consumer_args);
    r.boolean("src-predeclared", {}, out.src_predeclared);
    r.boolean("dest-predeclared", {}, out.dest_predeclared);
    const bool dest_queue = r.string("dest-queue", out.dest_queue);
    std::string s;
    if (r.string("dest-exchange", s)) out.dest_exchange = s;
    if (r.string("dest-exchange-key", s)) out.dest_exchange_key = s;
    if (dest_queue && out.dest_exchange) return "Cannot specify 'dest-exchange' and 'dest-queue'";
    r.table("dest-queue-args", out.dest_queue_args);
    if (const json::value* v = r.get("dest-publish-properties", "publish-properties")) {
        std::string why;
        if (!v->is_object() || !mgmt::json_properties(v->get_object(), out.dest_publish_properties, why))
            return "dest-publish-properties should be an object of message properties" + (why.empty() ? "" : ": " + why);
    }
    double n = 0;
    if (r.number("src-prefetch-count", "prefetch-count", n)) {
        if (n < 1 || n > 65535 || n != std::floor(n)) return "src-prefetch-count should be an integer from 1 to 65535";
        out.prefetch_count = static_cast<uint32_t>(n);
    }
    if (r.number("reconnect-delay", {}, n)) {
        if (n < 0 || n > 86400) return "reconnect-delay should be a number of seconds from 0 to 86400";
        out.reconnect_delay_s = n;
    }
    r.boolean("dest-add-forward-headers", "add-forward-headers", out.add_forward_headers);
    r.boolean("dest-add-timestamp-header", "add-timestamp-header", out.add_timestamp_header);
    if (r.string("ack-mode", s)) {
        if (s == "on-confirm") out.ack_mode = AckMode::on_confirm;
        else if (s == "on-publish") out.ack_mode = AckMode::on_publish;
        else if (s == "no-ack") out.ack_mode = AckMode::no_ack;
        else return "ack-mode should be one of on-confirm, on-publish, no-ack";
    }
    if (const json::value* v = r.get("src-delete-after", "delete-after")) {
        if (v->is_string() && v->get_string() == "never") {
            out.delete_after = ShovelDefinition::DeleteAfter::never;
        } else if (v->is_string() && v->get_string() == "queue-length") {
            out.delete_after = ShovelDefinition::DeleteAfter::queue_length;
        } else if (v->is_int64() && v->get_int64() >= 0) {
            out.delete_after = ShovelDefinition::DeleteAfter::count;
            out.delete_after_count = static_cast<uint64_t>(v->get_int64());
        } else if (v->is_uint64()) {
            out.delete_after = ShovelDefinition::DeleteAfter::count;
            out.delete_after_count = v->get_uint64();
        } else {
            return "src-delete-after should be number, \"never\" or \"queue-length\", actually was " +
                   json::serialize(*v);
        }
    }
    if (out.delete_after == ShovelDefinition::DeleteAfter::count && out.ack_mode == AckMode::no_ack)
        return "Cannot specify 'no-ack' and numerical 'delete-after'";
    return r.error;
}

}  // namespace sluice::net
