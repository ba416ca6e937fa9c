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

void Durability::put_dedup(const DedupCache& cache, uint64_t seq, uint64_t expires_ms, std::string_view key) {
    if (!store_ || cache.disk_prefix().empty()) return;
    scratch_.clear();
    storage::append_u64_key(scratch_, expires_ms);
    scratch_.append(key);
    batch().put(Column::meta, storage::records::dedup_key(cache.disk_prefix(), seq), scratch_);
    schedule_commit();
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
    schedule_commit();
}

void Durability::remove_dedup(const DedupCache& cache) {
    if (!store_ || cache.disk_prefix().empty()) return;
    batch().remove_range(Column::meta, cache.disk_prefix(), storage::records::dedup_end(cache.disk_prefix()));
    schedule_commit();
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
            return;
        }
        if (windows.empty() || windows.back() != cache) windows.push_back(cache);
        cache->restore(r.seq, r.key, r.expires_ms, now);
    });
    // What the rules let go while reading back goes from the disk too.
    for (DedupCache* cache : windows) trim_dedup(*cache, true);
}

}  // namespace sluice::broker
