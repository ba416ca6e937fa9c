// Reading a store at start: the broker's records (storage/records.hpp) in
// key order, with damaged ones skipped, and the sweep of what no record
// refers to any more. The broker applies what this reads
// (broker/durability.cpp, Durability::recover); the queues' logs are read by
// storage::QueueLog::recover.
//
// Threads: the owner's thread, before the store takes commits.
#pragma once

#include <cstdint>
#include <functional>
#include <unordered_set>
#include <vector>

#include "storage/records.hpp"
#include "storage/store.hpp"

namespace sluice::storage::recovery {

// Visit every readable record of a kind (a damaged key or value is skipped).
void exchanges(const Store& store, const std::function<void(const records::ExchangeRecord&)>& f);
void queues(const Store& store, const std::function<void(const records::QueueRecord&)>& f);
void bindings(const Store& store, const std::function<void(const records::BindingRecord&)>& f);
void delay_logs(const Store& store, const std::function<void(const records::DelayLogRecord&)>& f);
// Deduplication windows' entries, each object's in insertion order.
void dedup_entries(const Store& store, const std::function<void(const records::DedupRecord&)>& f);

// The ids of the shared bodies in `bodies`, and the next id to use.
struct Bodies {
    std::unordered_set<uint64_t> ids;
    uint64_t next_id = 1;
};
Bodies bodies(const Store& store);

// Deletes, in `batch`, the message ranges of every queue id that is not in
// `live` (sorted): queues deleted, or not durable, before the restart.
void remove_other_queues(const Store& store, Batch& batch, const std::vector<uint64_t>& live);

}  // namespace sluice::storage::recovery
