// Message deduplication, as LavinMQ and the rabbitmq-message-deduplication
// plugin name it: an exchange or a queue with a window of the keys it has
// admitted (the value of a message header, `x-deduplication-header` unless
// the object's argument of that name names another), and a message whose key
// is in the window is dropped.
//
// Arguments (exchange or queue): `x-message-deduplication` (bool; implied by
// the plugin's exchange type `x-message-deduplication`), `x-cache-size`
// (entries, default 128 as LavinMQ), `x-cache-ttl` (ms an entry lives; none:
// until evicted by size), `x-deduplication-header` (the header holding the
// key), `x-cache-persistence` ("memory" or "disk", accepted and not read:
// the window of a durable object is always durable, see durability.hpp).
// A message may carry `x-cache-ttl` (ms) to override the object's TTL for
// its own key, as the plugin.
//
// DedupCache is the window in memory: a hash of key → (insertion seq,
// expiry) and the keys in insertion order, so the oldest go first when the
// window is over its size and expired ones go when they reach the front. The
// insertion seq is also the key's place on disk (Durability::put_dedup), so
// that the entries a window has let go are deleted by one range delete, not
// one tombstone each.
//
// Thread-safety: broker thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>

#include "broker/amqp_error.hpp"
#include "net/amqp/field_table.hpp"

namespace sluice::amqp {
struct BasicProperties;
}

namespace sluice::broker {

inline constexpr std::string_view kDedupHeader = "x-deduplication-header";

struct DedupSettings {
    uint64_t cache_size = 128;
    uint64_t ttl_ms = 0;  // 0: an entry lives until evicted by size
    std::string header{kDedupHeader};
};

// The deduplication settings an exchange's or queue's arguments ask for:
// nullopt when deduplication is off (`forced`: on whatever the arguments
// say — the plugin's exchange type), or 406 with why an argument is invalid.
// `kind` is "exchange" or "queue", for the error text.
std::variant<std::optional<DedupSettings>, AmqpError> parse_dedup_arguments(const amqp::FieldTable& args,
                                                                           std::string_view kind,
                                                                           std::string_view name,
                                                                           std::string_view vhost, bool forced);

class DedupCache {
public:
    explicit DedupCache(DedupSettings settings) : settings_(std::move(settings)) {}

    const DedupSettings& settings() const { return settings_; }

    // The message's key (its header's value, encoded with its type so that
    // 1 and "1" differ) into `out`; false when it has none.
    bool key_of(const amqp::BasicProperties& properties, std::string& out) const;
    // When a key admitted now expires (0: never): the message's own
    // `x-cache-ttl` header, else the window's TTL.
    uint64_t expiry_of(const amqp::BasicProperties& properties, uint64_t now_ms) const;

    // Whether `key` is in the window at `now_ms`.
    bool contains(std::string_view key, uint64_t now_ms) const;
    // Adds `key` (not contained) and returns its insertion seq; the oldest
    // entries beyond the size, and expired ones at the front, leave.
    uint64_t insert(std::string_view key, uint64_t expires_ms, uint64_t now_ms);
    // Recovery: an entry read back, in insertion order.
    void restore(uint64_t seq, std::string_view key, uint64_t expires_ms, uint64_t now_ms);

    size_t size() const { return entries_.size(); }
    // Places in insertion order, stale ones included (memory; tests).
    size_t places() const { return order_.size(); }
    // Every entry inserted before this seq has left the window.
    uint64_t first_live_seq() const { return order_.empty() ? next_seq_ : order_.front().seq; }

    // Where its entries live in the store's `meta` ("" when the window is
    // not durable), and the seq below which they have been deleted there.
    const std::string& disk_prefix() const { return disk_prefix_; }
    void set_disk_prefix(std::string prefix) { disk_prefix_ = std::move(prefix); }
    uint64_t trimmed_below = 0;

private:
    struct Slot {
        uint64_t seq;
        uint64_t expires_ms;
    };
    struct Hash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
    };
    struct Order {
        uint64_t seq;
        const std::string* key;  // the map's own key: nodes are stable, erased only from here
    };
    void add(uint64_t seq, std::string_view key, uint64_t expires_ms);
    void evict(uint64_t now_ms);

    DedupSettings settings_;
    std::unordered_map<std::string, Slot, Hash, std::equal_to<>> entries_;
    // Insertion order; an entry whose key was inserted again since (after
    // it expired) is stale and skipped.
    std::deque<Order> order_;
    uint64_t next_seq_ = 1;
    std::string disk_prefix_;
};

}  // namespace sluice::broker
