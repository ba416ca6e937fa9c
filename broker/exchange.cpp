#include "broker/exchange.hpp"

#include <algorithm>
#include <cmath>

#include "broker/amqp_error.hpp"
#include "broker/delayed_messages.hpp"
#include "broker/headers_match.hpp"
#include "broker/queue.hpp"
#include "net/amqp/properties.hpp"

namespace sluice::broker {

bool parse_exchange_type(std::string_view name, ExchangeType& out) {
    if (name == "direct") out = ExchangeType::direct;
    else if (name == "fanout") out = ExchangeType::fanout;
    else if (name == "topic") out = ExchangeType::topic;
    else if (name == "headers") out = ExchangeType::headers;
    else if (name == "x-consistent-hash") out = ExchangeType::consistent_hash;
    else if (name == "x-delayed-message") out = ExchangeType::delayed;
    else if (name == "x-message-deduplication") out = ExchangeType::deduplication;
    else return false;
    return true;
}

std::string_view exchange_type_name(ExchangeType t) {
    switch (t) {
        case ExchangeType::direct: return "direct";
        case ExchangeType::fanout: return "fanout";
        case ExchangeType::topic: return "topic";
        case ExchangeType::headers: return "headers";
        case ExchangeType::consistent_hash: return "x-consistent-hash";
        case ExchangeType::delayed: return "x-delayed-message";
        case ExchangeType::deduplication: return "x-message-deduplication";
    }
    return "direct";
}

DelayedTypeError parse_delayed_type(const amqp::FieldTable& arguments, ExchangeType& out) {
    const amqp::FieldValue* v = arguments.find("x-delayed-type");
    auto name = v && v->type_code() == 'S' ? v->as_string() : std::nullopt;
    if (!name) return {reply::precondition_failed, "Invalid argument, 'x-delayed-type' must be an existing exchange type"};
    if (*name == "x-delayed-message")
        return {reply::precondition_failed, "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'"};
    if (!parse_exchange_type(*name, out)) return {reply::command_invalid, "unknown exchange type '" + std::string(*name) + "'"};
    return {};
}

std::optional<int64_t> x_delay(const amqp::FieldTable* headers) {
    const amqp::FieldValue* v = headers ? headers->find("x-delay") : nullptr;
    if (!v) return std::nullopt;
    if (auto i = v->as_int()) return *i;
    // A float or double is truncated (Erlang's trunc/1); NaN, infinities and
    // values past any delay are no delay.
    auto truncated = [](double x) -> std::optional<int64_t> {
        if (!std::isfinite(x) || std::fabs(x) >= 1e18) return std::nullopt;
        return static_cast<int64_t>(x);
    };
    if (const auto* f = std::get_if<float>(&v->v)) return truncated(*f);
    if (const auto* d = std::get_if<double>(&v->v)) return truncated(*d);
    if (const auto* d = std::get_if<amqp::Decimal>(&v->v)) {
        int64_t value = d->value;
        for (uint8_t i = 0; i < d->scale && value != 0; ++i) value /= 10;
        return value;
    }
    if (const auto* s = std::get_if<std::string>(&v->v)) {
        // Erlang's binary_to_integer: an optional sign, then digits. (The
        // plugin fails the publish on anything else; here it is no delay.)
        std::string_view t = *s;
        bool negative = false;
        if (!t.empty() && (t[0] == '+' || t[0] == '-')) {
            negative = t[0] == '-';
            t.remove_prefix(1);
        }
        if (t.empty() || t.size() > 18) return std::nullopt;
        int64_t value = 0;
        for (char c : t) {
            if (c < '0' || c > '9') return std::nullopt;
            value = value * 10 + (c - '0');
        }
        return negative ? -value : value;
    }
    return std::nullopt;
}

std::string parse_hash_source(const amqp::FieldTable& arguments, HashSource& out) {
    out = HashSource{};
    // As the plugin: only a longstr counts; other types are ignored.
    auto string_arg = [&](const char* name) -> std::optional<std::string_view> {
        const amqp::FieldValue* v = arguments.find(name);
        if (!v || v->type_code() != 'S') return std::nullopt;
        return v->as_string();
    };
    auto header = string_arg("hash-header");
    auto property = string_arg("hash-property");
    if (header && property) return "hash-header and hash-property are mutually exclusive";
    if (header) {
        out.kind = HashSource::Kind::header;
        out.header = std::string(*header);
    } else if (property) {
        if (*property == "correlation_id") out.kind = HashSource::Kind::correlation_id;
        else if (*property == "message_id") out.kind = HashSource::Kind::message_id;
        else if (*property == "timestamp") out.kind = HashSource::Kind::timestamp;
        else return "Unsupported property: " + std::string(*property);
    }
    return "";
}

std::string validate_hash_weight(std::string_view key, uint32_t& weight) {
    // Erlang's list_to_integer: an optional sign, then decimal digits only.
    std::string_view digits = key;
    bool negative = false;
    if (!digits.empty() && (digits[0] == '+' || digits[0] == '-')) {
        negative = digits[0] == '-';
        digits.remove_prefix(1);
    }
    bool integer = !digits.empty();
    uint64_t v = 0;
    for (char c : digits) {
        if (c < '0' || c > '9') integer = false;
        else v = std::min<uint64_t>(v * 10 + uint64_t(c - '0'), uint64_t(1) << 40);
    }
    if (!integer) return "The binding key must be an integer: <<\"" + std::string(key) + "\">>";
    if (negative || v < 1) return "The binding key must be greater than 0";
    // Points are a weight, not a list: any size costs the same here, but
    // cap it where a double still holds it exactly.
    weight = static_cast<uint32_t>(std::min<uint64_t>(v, UINT32_MAX));
    return "";
}

Exchange::Exchange(std::string name, ExchangeType type, bool durable, bool auto_delete, bool internal,
                   amqp::FieldTable arguments)
    : name_(std::move(name)),
      type_(type),
      routing_type_(type),
      durable_(durable),
      auto_delete_(auto_delete),
      internal_(internal),
      arguments_(std::move(arguments)) {
    if (const amqp::FieldValue* ae = arguments_.find("alternate-exchange"))
        if (auto name = ae->as_string()) alternate_exchange_ = std::string(*name);
    // Declares were validated (VHost::declare_exchange); a stored exchange
    // was valid when declared.
    if (type_ == ExchangeType::delayed && parse_delayed_type(arguments_, routing_type_).code != 0)
        routing_type_ = ExchangeType::direct;  // declares are checked; only a damaged record gets here
    if (routing_type_ == ExchangeType::consistent_hash) parse_hash_source(arguments_, hash_source_);
    auto dedup = parse_dedup_arguments(arguments_, "exchange", name_, "", type_ == ExchangeType::deduplication);
    if (auto* s = std::get_if<std::optional<DedupSettings>>(&dedup); s && *s)
        dedup_ = std::make_unique<DedupCache>(std::move(**s));
}

Exchange::~Exchange() {
    if (delayed_) delayed_->detach();  // a timer or read still out finds it gone
}

bool Exchange::has_binding(Destination dest, std::string_view key) const {
    return std::any_of(bindings_.begin(), bindings_.end(),
                       [&](const Binding& b) { return b.destination == dest && b.key == key; });
}

bool Exchange::bind(Destination dest, std::string_view key, const amqp::FieldTable& args) {
    for (const auto& b : bindings_)
        if (b.destination == dest && b.key == key && b.arguments == args) return false;
    bool indexed = has_binding(dest, key);
    bindings_.push_back(Binding{dest, std::string(key), args});
    if (!indexed || routing_type_ == ExchangeType::headers) index_add(bindings_.back());
    return true;
}

bool Exchange::unbind(Destination dest, std::string_view key, const amqp::FieldTable& args) {
    auto it = std::find_if(bindings_.begin(), bindings_.end(), [&](const Binding& b) {
        return b.destination == dest && b.key == key && b.arguments == args;
    });
    if (it == bindings_.end()) return false;
    Binding removed = std::move(*it);
    bindings_.erase(it);
    if (!has_binding(dest, key)) index_remove(removed);
    return true;
}

std::vector<Binding> Exchange::unbind_all(Destination dest) {
    std::vector<Binding> removed;
    for (size_t i = bindings_.size(); i-- > 0;) {
        if (!(bindings_[i].destination == dest)) continue;
        removed.push_back(std::move(bindings_[i]));
        bindings_.erase(bindings_.begin() + static_cast<ptrdiff_t>(i));
        if (!has_binding(dest, removed.back().key)) index_remove(removed.back());
    }
    return removed;
}

void Exchange::index_add(const Binding& b) {
    switch (routing_type_) {
        case ExchangeType::delayed: break;  // never a routing type
        case ExchangeType::direct: direct_[b.key].push_back(b.destination); break;
        case ExchangeType::fanout:
        case ExchangeType::deduplication: fanout_.push_back(b.destination); break;
        case ExchangeType::topic: topic_.add(b.key, b.destination); break;
        case ExchangeType::headers: break;  // routed by scanning bindings_
        case ExchangeType::consistent_hash: ring_update(b.destination); break;
    }
}

void Exchange::ring_update(Destination dest) {
    ring_.remove(dest);
    for (const Binding& b : bindings_) {
        if (!(b.destination == dest)) continue;
        uint32_t weight = 1;
        if (!validate_hash_weight(b.key, weight).empty()) continue;  // refused at bind; never stored
        std::string identity = dest.queue ? "q:" + dest.queue->name() : "e:" + dest.exchange->name();
        ring_.add(dest, stable_hash(identity), weight);
        return;
    }
}

void Exchange::index_remove(const Binding& b) {
    auto erase_one = [](std::vector<Destination>& v, Destination d) {
        auto it = std::find(v.begin(), v.end(), d);
        if (it != v.end()) v.erase(it);
    };
    switch (routing_type_) {
        case ExchangeType::delayed: break;
        case ExchangeType::direct: {
            auto it = direct_.find(b.key);
            if (it == direct_.end()) break;
            erase_one(it->second, b.destination);
            if (it->second.empty()) direct_.erase(it);
            break;
        }
        case ExchangeType::fanout:
        case ExchangeType::deduplication: erase_one(fanout_, b.destination); break;
        case ExchangeType::topic: topic_.remove(b.key, b.destination); break;
        case ExchangeType::headers: break;
        case ExchangeType::consistent_hash: ring_update(b.destination); break;
    }
}

void Exchange::route(std::string_view routing_key, const amqp::BasicProperties* properties,
                     std::vector<Destination>& out) const {
    switch (routing_type_) {
        case ExchangeType::delayed: break;
        case ExchangeType::direct: {
            // unordered_map<std::string> has no heterogeneous find in C++20's
            // default setup; routing keys are short, so the temporary is SSO.
            auto it = direct_.find(std::string(routing_key));
            if (it != direct_.end())
                out.insert(out.end(), it->second.begin(), it->second.end());
            break;
        }
        case ExchangeType::fanout:
        case ExchangeType::deduplication:  // the plugin's type routes as fanout
            out.insert(out.end(), fanout_.begin(), fanout_.end());
            break;
        case ExchangeType::topic:
            topic_.match(routing_key, [&](Destination d) { out.push_back(d); });
            break;
        case ExchangeType::headers: {
            const amqp::FieldTable* headers = properties && properties->headers ? &*properties->headers : nullptr;
            for (const auto& b : bindings_)
                if (headers_match(b.arguments, headers)) out.push_back(b.destination);
            break;
        }
        case ExchangeType::consistent_hash: route_by_hash(routing_key, properties, out); break;
    }
}

void Exchange::route_by_hash(std::string_view routing_key, const amqp::BasicProperties* p,
                             std::vector<Destination>& out) const {
    if (ring_.empty()) return;
    // The bytes hashed; a message without the header or property is not
    // routed (it is returned if mandatory, or goes to the alternate exchange).
    std::string scratch;
    std::string_view key;
    using Kind = HashSource::Kind;
    switch (hash_source_.kind) {
        case Kind::routing_key: key = routing_key; break;
        case Kind::header: {
            const amqp::FieldValue* v = p && p->headers ? p->headers->find(hash_source_.header) : nullptr;
            if (!v) return;
            if (auto s = v->as_string()) key = *s;
            else if (auto i = v->as_int()) key = scratch = std::to_string(*i);
            else key = (amqp::encode_value(scratch, *v), std::string_view(scratch));
            break;
        }
        case Kind::correlation_id:
            if (!p || !p->correlation_id) return;
            key = *p->correlation_id;
            break;
        case Kind::message_id:
            if (!p || !p->message_id) return;
            key = *p->message_id;
            break;
        case Kind::timestamp:
            if (!p || !p->timestamp) return;
            key = scratch = std::to_string(*p->timestamp);
            break;
    }
    if (const Destination* d = ring_.pick(stable_hash(key))) out.push_back(*d);
}

}  // namespace sluice::broker
