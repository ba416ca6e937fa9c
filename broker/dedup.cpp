#include "broker/dedup.hpp"

#include <algorithm>

#include "broker/stable_hash.hpp"
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

namespace {

// A filter's bits: 10 per key of its generation, but never more than this
// (2 MiB), whatever x-cache-size says; a window has at most 6 generations
// with a filter. 4 probes: ~2 % false positives at 8 bits a key.
constexpr uint64_t kMaxFilterBits = uint64_t{16} << 20;
constexpr int kFilterProbes = 4;


}  // namespace

uint64_t DedupCache::hash_key(std::string_view key) {
    return stable_hash(key);  // stable across builds: it is in the disk index
}

void DedupCache::set_memory_cap(uint64_t cap) {
    memory_cap_ = std::max<uint64_t>(1, std::min(settings_.cache_size, cap));
    generation_size_ = std::max<uint64_t>(64, (settings_.cache_size + 3) / 4);
}

void DedupCache::set_disk_prefix(std::string prefix) { disk_prefix_ = std::move(prefix); }

uint64_t DedupCache::first_live_seq() const {
    if (!spills()) return order_.empty() ? next_seq_ : order_.front().seq;
    return next_seq_ > settings_.cache_size ? next_seq_ - settings_.cache_size : 1;
}

bool DedupCache::contains(std::string_view key, uint64_t now_ms) const {
    auto it = entries_.find(key);
    if (it == entries_.end() || (it->second.expires_ms != 0 && it->second.expires_ms <= now_ms)) return false;
    return !spills() || it->second.seq >= first_live_seq();
}

void DedupCache::add(uint64_t seq, std::string_view key, uint64_t expires_ms, bool promoted) {
    auto it = entries_.find(key);
    if (it == entries_.end()) it = entries_.emplace(std::string(key), Slot{seq, expires_ms}).first;
    else it->second = Slot{seq, expires_ms};  // its older place in order_ is now stale
    order_.push_back(Order{seq, &it->first, promoted});
}

uint64_t DedupCache::insert(std::string_view key, uint64_t expires_ms, uint64_t now_ms) {
    uint64_t seq = next_seq_++;
    add(seq, key, expires_ms, false);
    evict(now_ms);
    return seq;
}

void DedupCache::restore(uint64_t seq, std::string_view key, uint64_t expires_ms, uint64_t now_ms) {
    if (seq < next_seq_) return;  // out of order: cannot be
    next_seq_ = seq + 1;
    if (expires_ms != 0 && expires_ms <= now_ms) return;
    filter_add(seq, hash_key(key));  // on disk already
    add(seq, key, expires_ms, false);
    evict(now_ms);
}

void DedupCache::promote(std::string_view key, uint64_t seq, uint64_t expires_ms, uint64_t now_ms) {
    if (expires_ms != 0 && expires_ms <= now_ms) return;
    if (seq >= next_seq_ || seq < first_live_seq()) return;
    auto it = entries_.find(key);
    if (it != entries_.end() && it->second.seq >= seq) return;  // memory knows as much or more
    add(seq, key, expires_ms, true);
    evict(now_ms);
}

bool DedupCache::note_written(uint64_t seq, uint64_t hash, uint64_t batch) {
    if (!spills()) return false;
    filter_add(seq, hash);
    if (batch == 0) return false;
    if (!unsynced_.empty() && unsynced_.back().batch == batch) return false;
    unsynced_.push_back(Unsynced{batch, seq});
    return true;
}

void DedupCache::note_synced(uint64_t batch) {
    bool any = false;
    while (!unsynced_.empty() && unsynced_.front().batch <= batch) {
        unsynced_.pop_front();
        any = true;
    }
    if (any) evict(0);  // 0: by size only
}

void DedupCache::filter_add(uint64_t seq, uint64_t hash) {
    const uint64_t generation = seq / generation_size_;
    Filter* f = nullptr;
    for (auto it = filters_.rbegin(); it != filters_.rend(); ++it)
        if (it->generation == generation) {
            f = &*it;
            break;
        }
    if (!f) {
        if (!filters_.empty() && filters_.back().generation > generation) return;  // older than every filter: gone
        const uint64_t bits = std::min(kMaxFilterBits, generation_size_ * 10);
        filters_.push_back(Filter{generation, std::vector<uint64_t>((bits + 63) / 64)});
        f = &filters_.back();
        drop_old_filters();
    }
    const uint64_t n = f->bits.size() * 64;
    const uint64_t step = mix64(hash ^ 0x9e3779b97f4a7c15ULL) | 1;
    for (int i = 0; i < kFilterProbes; ++i) {
        const uint64_t b = (hash + i * step) % n;
        f->bits[b / 64] |= uint64_t{1} << (b % 64);
    }
}

void DedupCache::drop_old_filters() {
    const uint64_t live = first_live_seq() / generation_size_;
    while (!filters_.empty() && filters_.front().generation < live) filters_.pop_front();
}

void DedupCache::disk_candidates(uint64_t hash, std::vector<uint64_t>& generations) const {
    generations.clear();
    if (!spills()) return;
    const uint64_t live = first_live_seq();
    if (evicted_below_ <= live) return;  // everything still in the window is in memory
    const uint64_t first = live / generation_size_, last = (evicted_below_ - 1) / generation_size_;
    const uint64_t step = mix64(hash ^ 0x9e3779b97f4a7c15ULL) | 1;
    for (const Filter& f : filters_) {
        if (f.generation < first || f.generation > last) continue;
        const uint64_t n = f.bits.size() * 64;
        bool maybe = true;
        for (int i = 0; i < kFilterProbes && maybe; ++i) {
            const uint64_t b = (hash + i * step) % n;
            maybe = f.bits[b / 64] & (uint64_t{1} << (b % 64));
        }
        if (maybe) generations.push_back(f.generation);
    }
}

void DedupCache::evict(uint64_t now_ms) {
    const uint64_t live = spills() ? first_live_seq() : 0;
    while (!order_.empty()) {
        const Order& front = order_.front();
        auto it = entries_.find(*front.key);
        const bool stale = it->second.seq != front.seq;
        if (!stale) {
            const bool expired = it->second.expires_ms != 0 && it->second.expires_ms <= now_ms;
            if (!expired && it->second.seq >= live && (entries_.size() <= memory_cap_ || pinned(front.seq))) break;
            if (!front.promoted) evicted_below_ = std::max(evicted_below_, front.seq + 1);
            order_.pop_front();
            entries_.erase(it);
            continue;
        }
        if (!front.promoted) evicted_below_ = std::max(evicted_below_, front.seq + 1);
        order_.pop_front();
    }
    // Keys inserted again after they expired leave stale places behind the
    // front: drop them once they are as many as the live ones.
    if (order_.size() > 2 * entries_.size() + 1024) {
        std::deque<Order> live_places;
        for (const Order& o : order_)
            if (entries_.find(*o.key)->second.seq == o.seq) live_places.push_back(o);
        order_ = std::move(live_places);
    }
    if (!filters_.empty()) drop_old_filters();
}

}  // namespace sluice::broker
