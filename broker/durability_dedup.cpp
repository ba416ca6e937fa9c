// Durability of deduplication windows (broker/dedup.hpp): where a durable
// window's entries live in `meta`, their writes with the batch of the
// message that admitted them, range deletes of what a window let go, and
// reading them back at start. See durability.hpp.
#include "broker/durability.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "broker/broker.hpp"
#include "broker/dedup.hpp"
#include "broker/exchange.hpp"
#include "broker/queue.hpp"
#include "broker/vhost.hpp"
#include "storage/records.hpp"
#include "storage/recovery.hpp"

namespace sluice::broker {

using storage::Column;

void Durability::attach_dedup(const VHost& v, bool exchange, std::string_view name, DedupCache& cache) const {
    if (store_) cache.set_disk_prefix(storage::records::dedup_prefix(exchange, v.name(), name));
}

void Durability::put_dedup(DedupCache& cache, uint64_t seq, uint64_t expires_ms, std::string_view key) {
    if (!store_ || cache.disk_prefix().empty()) return;
    scratch_.clear();
    storage::append_u64_key(scratch_, expires_ms);
    scratch_.append(key);
    batch().put(Column::meta, storage::records::dedup_key(cache.disk_prefix(), seq), scratch_);
    // Its index record, in the same batch. Written for every durable window,
    // not only those that spill now: the memory cap may be lower after a
    // restart.
    const uint64_t hash = DedupCache::hash_key(key);
    batch().put(Column::meta,
                storage::records::dedup_index_key(storage::records::dedup_index_prefix(cache.disk_prefix()),
                                                  seq / cache.generation_size(), hash),
                storage::records::dedup_index_value(seq, expires_ms, key));
    schedule_commit();
    const uint64_t gen = pending_generation();
    if (cache.note_written(seq, hash, gen))
        after_sync([&cache, alive = cache.alive(), gen](bool) {
            if (!alive.expired()) cache.note_synced(gen);
        });
}

void Durability::trim_dedup(DedupCache& cache, bool now) {
    if (!store_ || cache.disk_prefix().empty()) return;
    const uint64_t below = cache.first_live_seq();
    if (below <= cache.trimmed_below) return;
    // A range delete per step of entries gone: the disk holds at most the
    // window and one step more.
    const uint64_t step = std::clamp<uint64_t>(cache.settings().cache_size / 4, 64, 65536);
    if (!now && below - cache.trimmed_below < step) return;
    batch().remove_range(Column::meta, storage::records::dedup_key(cache.disk_prefix(), 0),
                         storage::records::dedup_key(cache.disk_prefix(), below));
    cache.trimmed_below = below;
    // The index goes by whole generations: those wholly below the window.
    const uint64_t generations = below / cache.generation_size();
    if (generations > cache.index_trimmed_generations) {
        const std::string index = storage::records::dedup_index_prefix(cache.disk_prefix());
        batch().remove_range(Column::meta,
                             storage::records::dedup_index_key(index, cache.index_trimmed_generations, 0),
                             storage::records::dedup_index_key(index, generations, 0));
        cache.index_trimmed_generations = generations;
    }
    schedule_commit();
}

void Durability::remove_dedup(const DedupCache& cache) {
    if (!store_ || cache.disk_prefix().empty()) return;
    batch().remove_range(Column::meta, cache.disk_prefix(), storage::records::dedup_end(cache.disk_prefix()));
    const std::string index = storage::records::dedup_index_prefix(cache.disk_prefix());
    batch().remove_range(Column::meta, index, storage::records::dedup_end(index));
    schedule_commit();
}

void Durability::read_dedup_off_thread(std::shared_ptr<std::vector<DedupLookup>> lookups, std::function<void()> done) {
    storage::Store* store = store_;
    store_->read_off_thread([store, lookups, executor = executor_, alive = std::weak_ptr<bool>(alive_),
                             done = std::move(done)] {
        std::string value;
        for (DedupLookup& l : *lookups) {
            for (uint64_t g : l.generations) {
                if (!store->get(Column::meta, storage::records::dedup_index_key(l.index_prefix, g, l.hash), value))
                    continue;
                uint64_t seq = 0, expires_ms = 0;
                std::string_view key;
                // Another key of the same hash overwrote it: not this one.
                if (!storage::records::decode_dedup_index_value(value, seq, expires_ms, key) || key != l.key) continue;
                if (!l.found || seq > l.seq) {
                    l.found = true;
                    l.seq = seq;
                    l.expires_ms = expires_ms;
                }
            }
        }
        executor->post([alive, done] {
            if (!alive.expired()) done();
        });
    });
}

void Durability::recover_dedup(Broker& broker) {
    namespace rec = storage::recovery;
    const uint64_t now = broker.now_ms();
    std::string orphan;
    std::vector<DedupCache*> windows;
    rec::dedup_entries(*store_, [&](const storage::records::DedupRecord& r) {
        if (!orphan.empty() && r.prefix == orphan) return;
        DedupCache* cache = nullptr;
        if (VHost* vhost = broker.find_vhost(r.vhost)) {
            if (r.exchange) {
                if (Exchange* e = vhost->find_exchange(r.name)) cache = e->dedup();
            } else if (QueuePtr q = vhost->find_queue(r.name)) {
                cache = q->dedup();
            }
        }
        if (!cache || cache->disk_prefix() != r.prefix) {
            orphan = std::string(r.prefix);
            batch().remove_range(Column::meta, orphan, storage::records::dedup_end(orphan));
            const std::string index = storage::records::dedup_index_prefix(orphan);
            batch().remove_range(Column::meta, index, storage::records::dedup_end(index));
            return;
        }
        if (windows.empty() || windows.back() != cache) windows.push_back(cache);
        cache->restore(r.seq, r.key, r.expires_ms, now);
    });
    // What the rules let go while reading back goes from the disk too.
    for (DedupCache* cache : windows) trim_dedup(*cache, true);
}

}  // namespace sluice::broker
