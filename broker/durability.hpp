// The broker's side of durability: which broker objects become which
// records, which queue entries refer to which shared bodies, paging out and
// reading back, and recovery into the broker. What is storage's lives in
// storage/: the byte formats (storage/records.hpp), group commit
// (storage/group_commit.hpp: a durable change waits for after_sync(), which
// runs once the batch holding it is synced — publisher confirms, declare-ok
// of durable entities, purge-ok/delete-ok of durable queues), each queue's
// log (storage/queue_log.hpp), reading the store at start
// (storage/recovery.hpp) and the spill file (storage/spill_file.hpp).
//
// Messages in `msgs`: each durable queue's storage::QueueLog. A record holds
// its expiry (u64 Unix ms, so TTLs survive a restart) and either the message
// inline or the id of a body in `bodies`, when one message of at least
// kSharedBodyMin bytes went to several durable queues (smaller ones are
// inline in each queue's record, as RabbitMQ embeds small messages in its
// queue index).
//
// Shared bodies are counted per entry, not per call (storage/shared_bodies.hpp
// knows, for every queue, which of its live entries point at which body). An
// entry's reference is dropped in the same batch that removes the entry, and
// only once (a second removal of the same entry — an ack still gathering and
// the queue's delete behind it — finds nothing to drop). The body goes in the
// batch that drops its last reference. Nothing here reads the database to
// decide what to release, so what the database has not seen yet (the
// gathering or in-flight batch) cannot be counted twice.
//
// Thread-safety: broker thread only (the store's thread reports back through
// the Executor).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/executor.hpp"
#include "broker/message.hpp"
#include "storage/group_commit.hpp"
#include "storage/queue_log.hpp"
#include "storage/shared_bodies.hpp"
#include "storage/spill_file.hpp"
#include "storage/stream_log.hpp"
#include "storage/store.hpp"

namespace sluice::broker {

class Broker;
class DedupCache;
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
    // Entries whose shared body was not in the store, and chunks whose
    // bytes in a segment file were missing or damaged: each is logged and
    // removed (the messages are lost; this is never silent).
    size_t missing_bodies = 0;
    double seconds = 0;
};

// Paged messages read back off the broker thread (Durability::read_*_off_thread).
// A key that may be in a durable window's disk part (dedup.hpp): where to
// look, and what the store's read thread found.
struct DedupLookup {
    DedupCache* window = nullptr;
    std::weak_ptr<char> alive;  // the window's
    std::string index_prefix;
    std::string key;
    uint64_t hash = 0;
    std::vector<uint64_t> generations;
    bool found = false;
    uint64_t seq = 0, expires_ms = 0;
};

// The read thread fills it; `done` then runs on the broker thread, which
// never waits for it (a get whose head is on disk waits as a continuation:
// Queue::head_ready_or_read).
struct PagedRead {
    struct Entry {
        uint64_t seq;
        MessagePtr message;
        uint64_t expires_ms;
    };
    std::vector<Entry> entries;
    uint64_t last = 0;        // stored entries: the last seq read (0 if none)
    bool ok = true;           // spilled runs: the bytes were read and decoded
    bool from_file = false;   // spilled runs: read from the spill file (not its buffer)
};
using PagedReadPtr = std::shared_ptr<PagedRead>;

// Held messages of a delay log read back (Durability::read_delayed_off_thread),
// in key order.
struct DelayedRead {
    struct Entry {
        uint64_t due_ms;
        uint64_t seq;
        MessagePtr message;
    };
    std::vector<Entry> entries;
    bool exhausted = false;  // the log has nothing after the last entry
};

// Messages of at least this many body bytes routed to several durable
// queues are stored once and referenced by each entry.
inline constexpr size_t kSharedBodyMin = 4096;

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
    // The batch generation a call to after_sync() now would wait for
    // (storage::GroupCommit::pending_generation; 0: it would run at once).
    // Callers that wait for the same generation may share one callback.
    uint64_t pending_generation() const { return commit_ ? commit_->pending_generation() : 0; }

    // Back-pressure: the batch gathering while a commit is in flight holds
    // at least `limit` bytes (the store is behind the publishers). Once a
    // commit takes that batch away, on_caught_up runs (the broker then
    // reads its publishers again).
    bool backlogged() const { return commit_ && commit_->backlogged(); }
    void set_backlog_limit(size_t limit, std::function<void()> on_caught_up) {
        backlog_limit_ = limit;
        on_caught_up_ = std::move(on_caught_up);
        if (commit_) commit_->set_backlog_limit(backlog_limit_, on_caught_up_);
    }

    void put_exchange(const VHost& vhost, const Exchange& exchange);
    void remove_exchange(const VHost& vhost, const Exchange& exchange);
    void put_queue(const VHost& vhost, const Queue& queue);
    void remove_queue(const VHost& vhost, const Queue& queue);
    // Durable only when both ends are; callers check.
    void put_binding(const VHost& vhost, const Exchange& source, const Binding& binding);
    void remove_binding(const VHost& vhost, const Exchange& source, const Binding& binding);
    // Deduplication windows (dedup.hpp). A durable object's window is
    // durable: attach_dedup gives it its place in `meta` (nothing without a
    // store). An entry goes into the batch gathering now, the one the
    // confirm of the message that admitted it waits for. The entries a
    // window has let go (by size or TTL) are deleted by one range delete
    // once enough of them have left (never one tombstone per message);
    // recovery reads whatever is there and applies the same rules. An
    // object's deletion deletes its whole range.
    void attach_dedup(const VHost& vhost, bool exchange, std::string_view name, DedupCache& cache) const;
    // Each entry is written twice: in insertion order (for recovery and the
    // range deletes) and in the key-addressed index of its generation (for
    // lookups of keys that left memory, read_dedup_off_thread).
    void put_dedup(DedupCache& cache, uint64_t seq, uint64_t expires_ms, std::string_view key);
    void trim_dedup(DedupCache& cache, bool now = false);
    void remove_dedup(const DedupCache& cache);
    // Looks keys up in windows' indexes on the store's read thread (the
    // broker thread never reads the store); `done` runs on the broker
    // thread once every lookup has its answer, unless the Durability went.
    void read_dedup_off_thread(std::shared_ptr<std::vector<DedupLookup>> lookups, std::function<void()> done);

    // Records the broker keeps for others (users, permissions, vhosts):
    // written with the next batch, whatever `recovering` says.
    void put_record(std::string_view key, std::string_view value);
    void remove_record(std::string_view key);

    // A persistent message entering durable queues: stores its entries and
    // (when shared by several and large) its body once.
    void store_message(const MessagePtr& message, const std::vector<StoredEntry>& entries);
    // The entry is gone for good (acked, rejected, dropped). Idempotent for
    // the entry's shared-body reference.
    void remove_entry(const Queue& queue, uint64_t seq);

    // The delay logs of x-delayed-message exchanges (delayed_messages.hpp):
    // one key per held message in `msgs`. A durable exchange's log has a
    // 'd' record (id, messages, next seq), put here and rewritten with
    // every batch that changes its count; remove_exchange() drops the log.
    void put_delay_log(const VHost& vhost, const Exchange& exchange, uint64_t id);
    void delay_log_changed(uint64_t id, uint64_t messages, uint64_t next_seq);
    void hold_delayed(uint64_t id, uint64_t due_ms, uint64_t seq, const Message& message);
    void release_delayed(uint64_t id, uint64_t due_ms, uint64_t seq);
    // Reads up to max_count held messages (and about max_bytes) from key
    // (due_ms, seq) on, on the store's read thread, once everything written
    // so far is synced (so the read sees it). `done` runs on the broker
    // thread; not at all once this Durability is gone.
    void read_delayed_off_thread(uint64_t id, uint64_t due_ms, uint64_t seq, size_t max_count, size_t max_bytes,
                                 std::function<void(DelayedRead&)> done);

    // Paging of messages that are not stored (transient, or in a non-durable
    // queue): they go to the spill file (storage/spill_file.hpp), in runs —
    // up to 128 KiB of a queue's page-outs encoded into one buffer, written
    // with one append at the end of the turn in which it stops growing.
    // Nothing is synced and nothing survives a restart. Null when paging
    // has no spill file.
    storage::SpillFile* spill() const { return spill_.get(); }
    // Bytes of spill runs still in memory (not sealed into the spill file),
    // over all queues: past a budget, every open run is sealed.
    void add_spill_pending(size_t n) {
        spill_pending_ += n;
        if (spill_pending_ > kSpillPendingBudget) schedule_commit();  // seal at the end of this turn
    }
    void sub_spill_pending(size_t n) { spill_pending_ -= std::min(spill_pending_, n); }
    static constexpr size_t kSpillPendingBudget = 4u << 20;
    // Appends one message's spill record (its place, expiry and bytes).
    static void encode_spill_record(std::string& out, uint64_t seq, uint64_t expires_ms, const Message& message);
    // Decodes a run's records, in order. False if the bytes are damaged.
    static bool decode_spill_run(std::string_view run,
                                 const std::function<void(uint64_t seq, MessagePtr message, uint64_t expires_ms)>& f);
    // The queue has an open run: seal_runs() is called on it at the end of
    // this turn (and of later ones while it keeps an open run), then the
    // spill file is flushed.
    void seal_at_turn_end(std::weak_ptr<Queue> queue);

    // Reads back up to max_count stored entries of a queue with seq in
    // [from, to], in order, on the store's read thread: the broker thread
    // never waits on the disk. Entries that were live when called; check
    // entry_live() before using one. `done` runs on the broker thread. Null
    // when there is nothing to read.
    PagedReadPtr read_entries_off_thread(const Queue& queue, uint64_t from, uint64_t to, size_t max_count,
                                         std::function<void(PagedRead&)> done);
    // A sealed spill run, read on the store's read thread (or from memory
    // if it is still buffered). Release the extent only in `done`: the
    // read uses its segment's file until then.
    PagedReadPtr read_spill_off_thread(const storage::SpillExtent& extent, std::function<void(PagedRead&)> done);
    // Whether a stored entry is still live (a read off the thread may
    // return one removed since).
    bool entry_live(const Queue& queue, uint64_t seq) const;

    // These entries of a queue are gone (purge; seqs ascending).
    void remove_entries(const Queue& queue, const std::vector<uint64_t>& seqs);
    // Every entry of a queue from `seq` on is gone (purge of a paged tail).
    void remove_entries_from(const Queue& queue, uint64_t seq);
    // Shared bodies alive, and references to them (for tests and metrics).
    size_t shared_bodies() const { return shared_bodies_.bodies(); }

    // The store could not be reopened after a failed write (Store::down()):
    // called once, at the commit that found it. The owner stops serving
    // (sluiced exits; the next start recovers what the store holds).
    void set_on_store_lost(std::function<void(const std::string& why)> fn) {
        on_store_lost_ = std::move(fn);
        if (commit_) commit_->set_on_store_lost(on_store_lost_);
    }

    // Streams (broker/stream.hpp): each stream's storage::StreamLog, whose
    // appends join every batch like the queue logs' chunks. `on_committed`
    // runs on the broker thread after each batch that added to the stream
    // is synced (its readers may read further). Retention (x-max-length-
    // bytes, x-max-age) is applied before each flush that writes to it.
    struct StreamRetention {
        std::optional<uint64_t> max_bytes;
        std::optional<uint64_t> max_age_ms;
    };
    storage::StreamLog* open_stream(const Queue& queue, uint64_t segment_bytes, StreamRetention retention,
                                    std::function<void()> on_committed);
    // The stream's broker side is gone (the log stays until the queue's delete).
    void close_stream(uint64_t queue_id) {
        if (auto it = streams_.find(queue_id); it != streams_.end()) it->second.on_committed = nullptr;
    }
    // Appends the message's record; returns its offset.
    uint64_t stream_append(const Queue& queue, const Message& message, uint64_t now_ms);
    // The store's read thread's owner, for readers posting results back.
    Executor* executor() const { return executor_; }
    // A stream record's payload as a message (any thread).
    static MessagePtr decode_stream_record(std::string_view payload, uint64_t offset);

    // Runs fn on the broker thread, later (never inline); dropped when
    // there is no store (nothing then waits for the disk).
    void post(std::function<void()> fn) {
        if (executor_) executor_->post(std::move(fn));
    }

    // Writes what is still gathering (graceful stop) and detaches: later
    // changes (connections torn down at exit) are not written.
    void shutdown();

    // Loads durable topology and messages into the broker (at start).
    RecoveryStats recover(Broker& broker);

    // A segment file whose stored chunks are under a quarter of it and has
    // not emptied further for this long is compacted (its chunks put again
    // elsewhere, then it goes). Tests shorten it.
    void set_segment_compaction_quiet(std::chrono::steady_clock::duration d) { compaction_quiet_ = d; }
    uint64_t segment_files_compacted() const { return segments_compacted_; }

private:
    storage::Batch& batch() { return commit_->batch(); }
    // A stored record's message (a shared body is read from the store).
    static MessagePtr decode_record(const storage::Store& store, const storage::LogRecord& r);
    // GroupCommit's hooks: queue logs' changes into the batch; open spill
    // runs sealed and written at the end of a turn; a commit's result.
    void flush_logs(storage::Batch& batch);
    void seal_spill_runs();
    void on_committed(bool ok);
    // Starts moving the chunks of sparse segment files (read off the broker
    // thread, put again by the next flush).
    void compact_segments();
    void schedule_commit();
    // Reads the deduplication windows' entries back (durability_dedup.cpp);
    // deletes those of objects that are gone.
    void recover_dedup(Broker& broker);
    // Removes a body (in the gathering batch) that its last entry released.
    void remove_body(uint64_t body_id);

    storage::Store* store_ = nullptr;
    std::unique_ptr<storage::GroupCommit> commit_;
    std::unique_ptr<storage::SpillFile> spill_;
    std::vector<std::weak_ptr<Queue>> open_runs_;  // queues with an unsealed spill run
    size_t spill_pending_ = 0;
    Executor* executor_ = nullptr;
    std::string scratch_;  // encoding buffer, reused
    std::vector<storage::SharedBodies::Entry> shared_entries_;  // store_message's, reused
    bool recovering_ = false;  // recovery re-creates entities without writing them again
    // Stored entries that point at each shared body; the body goes with the last.
    storage::SharedBodies shared_bodies_;
    // Per durable queue id: its stored messages, and which logs the
    // gathering and the in-flight batch hold (storage/queue_log.hpp).
    storage::QueueLogs queue_logs_;
    size_t stream_open_bytes_ = 0;  // streams' bytes not yet in a batch (back-pressure, with the queue logs')
    // Queue key ranges whose data the gathering (in-flight) batch deletes:
    // once it is written, the store compacts them (Store::reclaim).
    std::vector<uint64_t> reclaims_, in_flight_reclaims_;
    struct StreamState {
        std::unique_ptr<storage::StreamLog> log;
        StreamRetention retention;
        std::function<void()> on_committed;
    };
    std::unordered_map<uint64_t, StreamState> streams_;
    std::vector<uint64_t> dirty_streams_, in_flight_streams_;
    // Key ranges [begin, end) of dropped stream segments, compacted once written.
    std::vector<std::pair<std::string, std::string>> stream_reclaims_, in_flight_stream_reclaims_;
    void flush_streams(storage::Batch& batch);
    // Durable delay logs by id: their 'd' record's key and the figures the
    // next batch writes into it (dirty ones).
    struct DelayLogRecord {
        std::string key;
        uint64_t messages = 0;
        uint64_t next_seq = 1;
        bool dirty = false;
    };
    std::unordered_map<uint64_t, DelayLogRecord> delay_logs_;
    std::vector<uint64_t> dirty_delay_logs_;
    void flush_delay_logs(storage::Batch& batch);
    size_t backlog_limit_ = SIZE_MAX;
    std::function<void()> on_caught_up_;
    std::function<void(const std::string&)> on_store_lost_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
    std::chrono::steady_clock::duration compaction_quiet_ = std::chrono::seconds(30);
    uint64_t segments_compacted_ = 0;  // files whose chunks were all moved
};

}  // namespace sluice::broker
