// The broker's side of durability: what it writes to storage::Store and when
// it may tell a client "done".
//
// Group commit: every durable change of the current turn goes into one
// gathering batch. When no commit is in flight, the batch is handed to the
// store's commit thread; while it syncs, the next batch gathers. Callbacks
// registered with after_sync() run on the broker thread once everything
// written before them is synced (publisher confirms, declare-ok of durable
// entities, purge-ok/delete-ok of durable queues).
//
// Records (keys in `meta`, fields length-prefixed so names may hold any byte):
//   'e' vhost name           → type, flags, arguments          (durable exchanges)
//   'q' vhost name           → queue id, flags, arguments      (durable queues)
//   'b' vhost src kind dst key args → ""                       (durable bindings)
//   'v', 'u', 'p', 'i'  vhosts, users, permissions: see broker.hpp and
//                       access_control.hpp (written through put_record)
// Queue entries in `msgs`: queue id | seq → inline message, or a reference to
// a body in `bodies` when one message went to several durable queues. An
// entry whose kind octet has the high bit set carries its expiry (u64 Unix
// ms) right after it, so TTLs survive a restart.
//
// Thread-safety: broker thread only (the store's thread reports back through
// the Executor).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/message.hpp"
#include "storage/store.hpp"

namespace sluice::broker {

class Broker;
class Exchange;
class Executor;
class Queue;
class VHost;
struct Binding;

struct RecoveryStats {
    size_t exchanges = 0;
    size_t queues = 0;
    size_t bindings = 0;
    size_t messages = 0;
    double seconds = 0;
};

class Durability {
public:
    Durability() = default;
    ~Durability();

    // Without a store every operation is a no-op and after_sync runs at once.
    void attach(storage::Store* store, Executor* executor);
    bool enabled() const { return store_ != nullptr; }
    storage::Store* store() const { return store_; }

    // Runs fn(ok) once everything written so far is synced (or failed).
    void after_sync(std::function<void(bool ok)> fn);

    // Back-pressure: the batch gathering while a commit is in flight holds
    // at least `limit` bytes (the store is behind the publishers). Once a
    // commit takes that batch away, on_caught_up runs (the broker then
    // reads its publishers again).
    bool backlogged() const { return store_ != nullptr && batch_.bytes() >= backlog_limit_; }
    void set_backlog_limit(size_t limit, std::function<void()> on_caught_up) {
        backlog_limit_ = limit;
        on_caught_up_ = std::move(on_caught_up);
    }

    void put_exchange(const VHost& vhost, const Exchange& exchange);
    void remove_exchange(const VHost& vhost, const Exchange& exchange);
    void put_queue(const VHost& vhost, const Queue& queue);
    void remove_queue(const VHost& vhost, const Queue& queue);
    // Durable only when both ends are; callers check.
    void put_binding(const VHost& vhost, const Exchange& source, const Binding& binding);
    void remove_binding(const VHost& vhost, const Exchange& source, const Binding& binding);
    // Records the broker keeps for others (users, permissions, vhosts):
    // written with the next batch, whatever `recovering` says.
    void put_record(std::string_view key, std::string_view value);
    void remove_record(std::string_view key);

    // A persistent message entering durable queues: stores its entries and
    // (when shared by several) its body once.
    void store_message(const MessagePtr& message, const std::vector<StoredEntry>& entries);
    // The entry is gone for good (acked, rejected, dropped).
    void remove_entry(const Queue& queue, uint64_t seq, const Message& message);

    // Paging: a message that is not stored (transient, or in a non-durable
    // queue) is written as a page entry so the queue can drop it from memory.
    // Page entries never survive a restart.
    void page_message(const Queue& queue, uint64_t seq, const Message& message, uint64_t expires_ms);
    // Reads back up to max_count entries of a queue with seq in [from, to],
    // in order. `stored` is false for page entries, which are removed as they
    // are read (the message lives in memory again). Returns the last seq read
    // (0 if none).
    uint64_t read_entries(const Queue& queue, uint64_t from, uint64_t to, size_t max_count,
                          const std::function<void(uint64_t seq, MessagePtr message, bool stored, uint64_t expires_ms)>& f);
    // Everything written from now on belongs to this batch generation; a
    // generation's writes are readable once synced_generation() reaches it.
    uint64_t gathering_generation() const { return gathering_generation_; }
    uint64_t synced_generation() const { return synced_generation_; }
    // These entries of a queue are gone (purge).
    void remove_entries(const Queue& queue, const std::vector<uint64_t>& seqs);
    // Every entry of a queue from `seq` on is gone (purge of a paged tail).
    void remove_entries_from(const Queue& queue, uint64_t seq);
    // One stored entry less refers to this shared body (0 = not shared).
    void release_body(uint64_t body_id);

    // Writes what is still gathering (graceful stop) and detaches: later
    // changes (connections torn down at exit) are not written.
    void shutdown();

    // Loads durable topology and messages into the broker (at start).
    RecoveryStats recover(Broker& broker);

private:
    void schedule_commit();
    void start_commit();
    void on_committed(const std::string& error);
    // Releases the shared bodies referred to by a queue's stored entries from
    // `seq` on (before they are range-deleted).
    void release_bodies_from(const Queue& queue, uint64_t seq);

    storage::Store* store_ = nullptr;
    Executor* executor_ = nullptr;
    storage::Batch batch_;
    std::string scratch_;  // encoding buffer, reused
    std::vector<std::function<void(bool)>> waiters_;            // wait for batch_
    std::vector<std::function<void(bool)>> in_flight_waiters_;  // wait for the batch being synced
    bool commit_in_flight_ = false;
    bool recovering_ = false;  // recovery re-creates entities without writing them again
    bool commit_scheduled_ = false;
    uint64_t next_body_id_ = 1;
    // Stored entries that point at each shared body; the body goes with the last.
    std::unordered_map<uint64_t, uint32_t> body_refs_;
    uint64_t gathering_generation_ = 1;
    uint64_t in_flight_generation_ = 0;
    uint64_t synced_generation_ = 0;
    size_t backlog_limit_ = SIZE_MAX;
    std::function<void()> on_caught_up_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace sluice::broker
