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
// DedupCache is the window's memory part: a hash of key → (insertion seq,
// expiry) and the keys in insertion order, so the oldest go first when the
// window is over its size (or its memory cap) and expired ones go when they
// reach the front. The insertion seq is also the key's place on disk
// (Durability::put_dedup), so that the entries a window has let go are
// deleted by one range delete, not one tombstone each.
//
// Memory is bounded whatever x-cache-size says: at most memory_cap() keys
// (BrokerConfig::dedup_memory_keys). A durable window larger than that
// spills(): its older keys are only on disk, behind a key-addressed index
// in generations with a capped Bloom filter each here; a publish whose key
// a filter points at is looked up off the broker thread first
// (VHost::dedup_lookups) and what is found is promote()d back. A transient
// window larger than the cap forgets its oldest keys.
// docs/deduplication.md says why.
//
// Thread-safety: broker thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

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
    explicit DedupCache(DedupSettings settings) : settings_(std::move(settings)) { set_memory_cap(65536); }

    const DedupSettings& settings() const { return settings_; }

    // At most this many keys in memory (the most recent; BrokerConfig::
    // dedup_memory_keys). Set before the window is used.
    void set_memory_cap(uint64_t cap);
    uint64_t memory_cap() const { return memory_cap_; }

    // The message's key (its header's value, encoded with its type so that
    // 1 and "1" differ) into `out`; false when it has none.
    bool key_of(const amqp::BasicProperties& properties, std::string& out) const;
    // When a key admitted now expires (0: never): the message's own
    // `x-cache-ttl` header, else the window's TTL.
    uint64_t expiry_of(const amqp::BasicProperties& properties, uint64_t now_ms) const;

    // Whether `key` is in the memory part of the window at `now_ms`.
    bool contains(std::string_view key, uint64_t now_ms) const;
    // Adds `key` (not contained) and returns its insertion seq; the oldest
    // entries beyond the memory cap, and expired ones at the front, leave
    // memory.
    uint64_t insert(std::string_view key, uint64_t expires_ms, uint64_t now_ms);
    // Recovery: an entry read back, in insertion order.
    void restore(uint64_t seq, std::string_view key, uint64_t expires_ms, uint64_t now_ms);

    size_t size() const { return entries_.size(); }
    // Places in insertion order, stale ones included (memory; tests).
    size_t places() const { return order_.size(); }
    uint64_t next_seq() const { return next_seq_; }
    // Every entry inserted before this seq has left the window (memory
    // and disk): the oldest in memory while the window fits in memory,
    // else the last x-cache-size insertions' first.
    uint64_t first_live_seq() const;

    // Where its entries live in the store's `meta` ("" when the window is
    // not durable), and the seq below which they have been deleted there.
    const std::string& disk_prefix() const { return disk_prefix_; }
    void set_disk_prefix(std::string prefix);
    uint64_t trimmed_below = 0;
    uint64_t index_trimmed_generations = 0;  // index generations below it deleted on disk

    // A durable window larger than its memory cap: keys that left memory
    // are still in the window, on disk, found through a key-addressed
    // index in generations of generation_size() seqs (storage/records.hpp).
    bool spills() const { return !disk_prefix_.empty() && settings_.cache_size > memory_cap_; }
    uint64_t generation_size() const { return generation_size_; }
    static uint64_t hash_key(std::string_view key);
    // A written key (its entry and index record are in the store's batch
    // of generation `batch`, 0: already applied): the generation's filter
    // learns it, and it stays in memory until that batch is in the store
    // (a lookup reads the store, which does not have it before). Returns
    // true when the caller is to call note_synced(batch) once it is.
    bool note_written(uint64_t seq, uint64_t hash, uint64_t batch);
    // Batch generation `batch` is in the store: its keys may leave memory.
    void note_synced(uint64_t batch);
    // The generations whose index on disk may hold `key` (not in memory):
    // those with seqs that left memory but not the window, whose filter
    // says maybe. Empty: the key is not in the window.
    void disk_candidates(uint64_t hash, std::vector<uint64_t>& generations) const;
    // A key found on disk (by a lookup off the broker thread) comes back
    // into memory with its seq and expiry, so the publish that asked sees it.
    void promote(std::string_view key, uint64_t seq, uint64_t expires_ms, uint64_t now_ms);
    // Gone when the window is (a lookup in flight checks it).
    std::weak_ptr<char> alive() const { return alive_; }

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
        bool promoted;           // came back from disk: not an insertion in seq order
    };
    // A fixed-size Bloom filter per index generation: its size does not
    // grow with x-cache-size (capped, see dedup.cpp).
    struct Filter {
        uint64_t generation;
        std::vector<uint64_t> bits;
    };
    void add(uint64_t seq, std::string_view key, uint64_t expires_ms, bool promoted);
    void filter_add(uint64_t seq, uint64_t hash);
    // Written and not yet in the store: kept in memory whatever the cap
    // (bounded by the store's backlog limit, which stops publishers).
    bool pinned(uint64_t seq) const { return !unsynced_.empty() && seq >= unsynced_.front().first_seq; }
    void evict(uint64_t now_ms);
    void drop_old_filters();

    DedupSettings settings_;
    uint64_t memory_cap_ = 0;
    uint64_t generation_size_ = 64;
    std::unordered_map<std::string, Slot, Hash, std::equal_to<>> entries_;
    // Insertion order; an entry whose key was inserted again since (after
    // it expired) is stale and skipped.
    std::deque<Order> order_;
    uint64_t next_seq_ = 1;
    // Inserted seqs below it have left memory (those at or above it, not).
    uint64_t evicted_below_ = 1;
    std::deque<Filter> filters_;
    struct Unsynced {
        uint64_t batch;
        uint64_t first_seq;
    };
    std::deque<Unsynced> unsynced_;  // batches holding written keys, oldest first
    std::string disk_prefix_;
    std::shared_ptr<char> alive_ = std::make_shared<char>();
};

}  // namespace sluice::broker
