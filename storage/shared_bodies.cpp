#include "storage/shared_bodies.hpp"

namespace sluice::storage {

uint64_t SharedBodies::add(const std::vector<Entry>& entries) {
    const uint64_t id = next_id_++;
    if (entries.empty()) return id;
    refs_[id] = static_cast<uint32_t>(entries.size());
    for (const Entry& e : entries) by_queue_[e.queue_id][e.seq] = id;
    return id;
}

void SharedBodies::recovered(uint64_t queue_id, uint64_t seq, uint64_t body_id) {
    auto [it, fresh] = by_queue_[queue_id].emplace(seq, body_id);
    if (!fresh) return;  // the same entry twice counts once
    ++refs_[body_id];
    next_id_at_least(body_id + 1);
}

uint64_t SharedBodies::unref(uint64_t body_id) {
    auto it = refs_.find(body_id);
    if (it == refs_.end()) return 0;
    if (--it->second > 0) return 0;
    refs_.erase(it);
    return body_id;
}

uint64_t SharedBodies::drop(uint64_t queue_id, uint64_t seq) {
    if (by_queue_.empty()) return 0;
    auto q = by_queue_.find(queue_id);
    if (q == by_queue_.end()) return 0;
    auto it = q->second.find(seq);
    if (it == q->second.end()) return 0;  // not shared, or dropped already
    const uint64_t body_id = it->second;
    q->second.erase(it);
    if (q->second.empty()) by_queue_.erase(q);
    return unref(body_id);
}

std::vector<uint64_t> SharedBodies::drop_from(uint64_t queue_id, uint64_t seq) {
    std::vector<uint64_t> released;
    auto q = by_queue_.find(queue_id);
    if (q == by_queue_.end()) return released;
    auto& refs = q->second;
    for (auto it = refs.lower_bound(seq); it != refs.end();) {
        if (uint64_t body = unref(it->second)) released.push_back(body);
        it = refs.erase(it);
    }
    if (refs.empty()) by_queue_.erase(q);
    return released;
}

}  // namespace sluice::storage
