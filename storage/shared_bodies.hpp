// Which stored queue entries refer to which shared body, and when a body has
// no entry left: the reference counting behind issue 12's "a confirmed
// message survives the delete of any queue sharing its body".
//
// A persistent message of at least a few KiB routed to several durable
// queues is stored once, in `bodies`, and each queue's log holds an entry
// that names it (storage/records.hpp). The count is per entry, not per call:
// this knows, for every queue, which of its live entries (seq) point at
// which body, so dropping an entry twice — an ack still gathering in the
// batch and the queue's delete behind it — drops its reference once. The
// caller removes the body from the store in the same batch that removes the
// entry that released it, so the count only changes with the entries. It
// reads nothing from the database (which has not seen the gathering batch).
//
// Thread-safety: one thread (the broker's).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <unordered_map>
#include <vector>

namespace sluice::storage {

class SharedBodies {
public:
    struct Entry {
        uint64_t queue_id = 0;
        uint64_t seq = 0;
    };

    // A new body referred to by these entries: its id.
    uint64_t add(const std::vector<Entry>& entries);
    // Recovery: one entry found in a queue's log that refers to `body_id`.
    void recovered(uint64_t queue_id, uint64_t seq, uint64_t body_id);
    // Ids are never reused: the next one is at least this.
    void next_id_at_least(uint64_t id) { next_id_ = id > next_id_ ? id : next_id_; }

    // The entry goes: the id of the body whose last reference it was, or 0
    // (not shared, dropped already, or other entries still refer to it).
    uint64_t drop(uint64_t queue_id, uint64_t seq);
    // Every entry of the queue from `seq` on goes (a purge of its paged
    // tail, or the queue's delete with seq 0): the bodies they released.
    std::vector<uint64_t> drop_from(uint64_t queue_id, uint64_t seq);

    bool referenced(uint64_t body_id) const { return refs_.count(body_id) != 0; }
    size_t bodies() const { return refs_.size(); }

private:
    uint64_t unref(uint64_t body_id);

    uint64_t next_id_ = 1;
    std::unordered_map<uint64_t, uint32_t> refs_;  // body id → entries referring to it
    // Per queue id: its live entries that refer to a shared body (seq → body id).
    std::unordered_map<uint64_t, std::map<uint64_t, uint64_t>> by_queue_;
};

}  // namespace sluice::storage
