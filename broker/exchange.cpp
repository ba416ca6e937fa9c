#include "broker/exchange.hpp"

#include <algorithm>

#include "broker/headers_match.hpp"

namespace sluice::broker {

bool parse_exchange_type(std::string_view name, ExchangeType& out) {
    if (name == "direct") out = ExchangeType::direct;
    else if (name == "fanout") out = ExchangeType::fanout;
    else if (name == "topic") out = ExchangeType::topic;
    else if (name == "headers") out = ExchangeType::headers;
    else return false;
    return true;
}

std::string_view exchange_type_name(ExchangeType t) {
    switch (t) {
        case ExchangeType::direct: return "direct";
        case ExchangeType::fanout: return "fanout";
        case ExchangeType::topic: return "topic";
        case ExchangeType::headers: return "headers";
    }
    return "direct";
}

Exchange::Exchange(std::string name, ExchangeType type, bool durable, bool auto_delete, bool internal,
                   amqp::FieldTable arguments)
    : name_(std::move(name)),
      type_(type),
      durable_(durable),
      auto_delete_(auto_delete),
      internal_(internal),
      arguments_(std::move(arguments)) {
    if (const amqp::FieldValue* ae = arguments_.find("alternate-exchange"))
        if (auto name = ae->as_string()) alternate_exchange_ = std::string(*name);
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
    if (!indexed || type_ == ExchangeType::headers) index_add(bindings_.back());
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
    switch (type_) {
        case ExchangeType::direct: direct_[b.key].push_back(b.destination); break;
        case ExchangeType::fanout: fanout_.push_back(b.destination); break;
        case ExchangeType::topic: topic_.add(b.key, b.destination); break;
        case ExchangeType::headers: break;  // routed by scanning bindings_
    }
}

void Exchange::index_remove(const Binding& b) {
    auto erase_one = [](std::vector<Destination>& v, Destination d) {
        auto it = std::find(v.begin(), v.end(), d);
        if (it != v.end()) v.erase(it);
    };
    switch (type_) {
        case ExchangeType::direct: {
            auto it = direct_.find(b.key);
            if (it == direct_.end()) break;
            erase_one(it->second, b.destination);
            if (it->second.empty()) direct_.erase(it);
            break;
        }
        case ExchangeType::fanout: erase_one(fanout_, b.destination); break;
        case ExchangeType::topic: topic_.remove(b.key, b.destination); break;
        case ExchangeType::headers: break;
    }
}

void Exchange::route(std::string_view routing_key, const amqp::FieldTable* headers,
                     std::vector<Destination>& out) const {
    switch (type_) {
        case ExchangeType::direct: {
            // unordered_map<std::string> has no heterogeneous find in C++20's
            // default setup; routing keys are short, so the temporary is SSO.
            auto it = direct_.find(std::string(routing_key));
            if (it != direct_.end())
                out.insert(out.end(), it->second.begin(), it->second.end());
            break;
        }
        case ExchangeType::fanout:
            out.insert(out.end(), fanout_.begin(), fanout_.end());
            break;
        case ExchangeType::topic:
            topic_.match(routing_key, [&](Destination d) { out.push_back(d); });
            break;
        case ExchangeType::headers:
            for (const auto& b : bindings_)
                if (headers_match(b.arguments, headers)) out.push_back(b.destination);
            break;
    }
}

}  // namespace sluice::broker
