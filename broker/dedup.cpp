#include "broker/dedup.hpp"

#include "net/amqp/properties.hpp"

namespace sluice::broker {

std::variant<std::optional<DedupSettings>, AmqpError> parse_dedup_arguments(const amqp::FieldTable& args,
                                                                           std::string_view kind,
                                                                           std::string_view name,
                                                                           std::string_view vhost, bool forced) {
    auto invalid = [&](std::string_view arg, std::string_view why) {
        return amqp_error(reply::precondition_failed, "invalid arg '" + std::string(arg) + "' for " +
                                                          std::string(kind) + " '" + std::string(name) +
                                                          "' in vhost '" + std::string(vhost) + "': " +
                                                          std::string(why));
    };
    bool on = forced;
    if (const amqp::FieldValue* v = args.find("x-message-deduplication")) {
        auto b = v->as_bool();
        if (!b) return invalid("x-message-deduplication", "expected a boolean");
        on = on || *b;
    }
    if (!on) return std::optional<DedupSettings>{};
    DedupSettings s;
    if (const amqp::FieldValue* v = args.find("x-cache-size")) {
        auto i = v->as_int();
        if (!i || *i < 1) return invalid("x-cache-size", "expected a positive integer");
        s.cache_size = static_cast<uint64_t>(*i);
    }
    if (const amqp::FieldValue* v = args.find("x-cache-ttl")) {
        auto i = v->as_int();
        if (!i || *i < 1) return invalid("x-cache-ttl", "expected a positive integer (milliseconds)");
        s.ttl_ms = static_cast<uint64_t>(*i);
    }
    if (const amqp::FieldValue* v = args.find("x-deduplication-header")) {
        auto h = v->type_code() == 'S' ? v->as_string() : std::nullopt;
        if (!h || h->empty()) return invalid("x-deduplication-header", "expected a header name");
        s.header = std::string(*h);
    }
    if (const amqp::FieldValue* v = args.find("x-cache-persistence")) {
        auto p = v->type_code() == 'S' ? v->as_string() : std::nullopt;
        if (!p || (*p != "memory" && *p != "disk"))
            return invalid("x-cache-persistence", "expected \"memory\" or \"disk\"");
    }
    return std::optional<DedupSettings>{std::move(s)};
}

bool DedupCache::key_of(const amqp::BasicProperties& properties, std::string& out) const {
    if (!properties.headers) return false;
    const amqp::FieldValue* v = properties.headers->find(settings_.header);
    if (!v) return false;
    out.clear();
    amqp::encode_value(out, *v);
    return true;
}

uint64_t DedupCache::expiry_of(const amqp::BasicProperties& properties, uint64_t now_ms) const {
    uint64_t ttl = settings_.ttl_ms;
    if (properties.headers)
        if (const amqp::FieldValue* v = properties.headers->find("x-cache-ttl"))
            if (auto i = v->as_int(); i && *i > 0) ttl = static_cast<uint64_t>(*i);
    return ttl ? now_ms + ttl : 0;
}

bool DedupCache::contains(std::string_view key, uint64_t now_ms) const {
    auto it = entries_.find(key);
    return it != entries_.end() && (it->second.expires_ms == 0 || it->second.expires_ms > now_ms);
}

void DedupCache::add(uint64_t seq, std::string_view key, uint64_t expires_ms) {
    auto it = entries_.find(key);
    if (it == entries_.end()) it = entries_.emplace(std::string(key), Slot{seq, expires_ms}).first;
    else it->second = Slot{seq, expires_ms};  // its older place in order_ is now stale
    order_.push_back(Order{seq, &it->first});
}

uint64_t DedupCache::insert(std::string_view key, uint64_t expires_ms, uint64_t now_ms) {
    uint64_t seq = next_seq_++;
    add(seq, key, expires_ms);
    evict(now_ms);
    return seq;
}

void DedupCache::restore(uint64_t seq, std::string_view key, uint64_t expires_ms, uint64_t now_ms) {
    if (seq < next_seq_) return;  // out of order: cannot be
    next_seq_ = seq + 1;
    if (expires_ms != 0 && expires_ms <= now_ms) return;
    add(seq, key, expires_ms);
    evict(now_ms);
}

void DedupCache::evict(uint64_t now_ms) {
    while (!order_.empty()) {
        const Order& front = order_.front();
        auto it = entries_.find(*front.key);
        const bool stale = it->second.seq != front.seq;
        if (!stale) {
            const bool expired = it->second.expires_ms != 0 && it->second.expires_ms <= now_ms;
            if (!expired && entries_.size() <= settings_.cache_size) break;
            order_.pop_front();
            entries_.erase(it);
            continue;
        }
        order_.pop_front();
    }
    // Keys inserted again after they expired leave stale places behind the
    // front: drop them once they are as many as the live ones.
    if (order_.size() > 2 * entries_.size() + 1024) {
        std::deque<Order> live;
        for (const Order& o : order_)
            if (entries_.find(*o.key)->second.seq == o.seq) live.push_back(o);
        order_ = std::move(live);
    }
}

}  // namespace sluice::broker
