// One durable queue's stored messages, in chunks: a chunk is every record a
// queue stored in one batch (one key, one value), with a live-bit per
// record; an ack clears a bit, a chunk whose last bit clears is deleted
// whole, and a partly acknowledged one gets a small ack record (its live
// bits) written with the next batch. This is the shape of RabbitMQ's
// classic-queue v2 index and LavinMQ's segments: a persistent message costs
// a share of one put, not a put, a WAL record and a tombstone of its own.
//
// Keys in `msgs`:
//   queue id (u64 BE) | first seq (u64 BE)         → chunk
//   queue id (u64 BE) | first seq (u64 BE) | 'a'   → ack record: live bits
// A chunk: 0x04, then records [seq u64][kind u8][expires u64][len u32][payload],
// seqs rising, with gaps where records were removed before the chunk was
// first written. Live bit i is seq first + i.
// A value whose first octet is not 0x04 is a single-record entry of the
// previous format (kind, optional expiry, payload), read as a chunk of one.
// Kinds and payloads belong to the caller (broker/durability.cpp).
//
// When bytes are safe: a chunk's bytes go into the batch handed to
// flush(); until that batch is synced they are also kept here (readable
// without the store). Acks reach the disk with a later batch (they force
// no sync of their own): after a crash, an acknowledged message whose ack
// record was not yet synced comes back, flagged redelivered — never the
// other way round.
//
// Threads: the owner thread (the broker thread) only.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "storage/store.hpp"

namespace sluice::storage {

struct LogRecord {
    uint64_t seq = 0;
    uint8_t kind = 0;
    uint64_t expires_ms = 0;
    std::string_view payload;
};

class QueueLog {
public:
    explicit QueueLog(uint64_t queue_id) : queue_id_(queue_id) {}

    uint64_t queue_id() const { return queue_id_; }
    // Stored records not yet removed.
    uint64_t live() const { return live_; }
    // Bytes of chunks not yet handed to a batch.
    size_t open_bytes() const { return open_bytes_; }
    // Bytes of chunks deleted since take_freed_bytes() (space compaction
    // of the database can give back: a pointer's for a chunk in a segment
    // file), and bytes of chunks written and still there.
    uint64_t freed_bytes() const { return freed_bytes_; }
    uint64_t take_freed_bytes() { return std::exchange(freed_bytes_, 0); }
    uint64_t stored_bytes() const { return stored_bytes_; }
    // Something for the next flush: an open chunk or changed live bits.
    bool needs_flush() const { return !dirty_.empty(); }

    // A record for the open chunk (seqs rise from call to call).
    void append(uint64_t seq, uint8_t kind, uint64_t expires_ms, std::initializer_list<std::string_view> payload);
    // The record is gone (acked, dropped). False if it was not live here.
    bool remove(uint64_t seq);
    // Every live record from `seq` on is gone; returns how many.
    size_t remove_from(uint64_t seq);

    // Writes what changed into `batch`: open chunks that still hold live
    // records (one put each, of the records still live: those removed
    // before their chunk's first write are never written, nor are fully
    // removed chunks), ack records of partly removed chunks, deletes of
    // emptied ones. Returns true if it put chunks (their bytes are kept
    // until release_pending()).
    bool flush(Batch& batch);
    // The batches of the flushes since the last call are synced: chunk bytes
    // kept for reads go. (Not called after a failed write: the bytes stay,
    // the only sure copy, until the store has written that batch again.)
    void release_pending();
    // Segment files (and bytes) whose chunks this log's flushes deleted or
    // moved (each once per chunk), for SegmentFiles::unref once the batch is
    // synced.
    using Unref = std::pair<uint32_t, uint64_t>;
    void take_unrefs(std::vector<Unref>& out) {
        out.insert(out.end(), unrefs_.begin(), unrefs_.end());
        unrefs_.clear();
    }

    // Visits live records with seq in [from, to], in order, until `max`
    // were visited. Returns the last seq visited (0 if none). Reads chunks
    // from memory while their batch is in flight, else with a point get.
    uint64_t read(const Store& store, uint64_t from, uint64_t to, size_t max,
                  const std::function<void(const LogRecord&)>& f) const;

    // The same read in two steps, for a read off the owner's thread:
    // plan_read() on the owner's thread names the chunks to read (with their
    // live bits, and their bytes while their batch is not yet synced —
    // copied when `copy`, else viewed, valid until the log changes);
    // read_planned() reads and visits them on any thread. The records it
    // visits were live at the plan: check is_live() before using one.
    struct ChunkRead {
        uint64_t first = 0;
        std::string key;
        std::string held;          // a copy of the chunk's bytes (copy = true)
        std::string_view pending;  // or a view of them (copy = false)
        std::vector<uint64_t> bits;
    };
    std::vector<ChunkRead> plan_read(uint64_t from, uint64_t to, size_t max, bool copy) const;
    static uint64_t read_planned(const Store& store, const std::vector<ChunkRead>& plan, uint64_t from, uint64_t to,
                                 size_t max, const std::function<void(const LogRecord&)>& f);
    bool is_live(uint64_t seq) const;

    // Start-up: rebuilds the chunks of this queue from the store and visits
    // every live record in order. Writes that tidy up (ack records whose
    // chunk is gone) go into `cleanup`; chunks with no live record are
    // deleted by the next flush. Returns the records visited.
    size_t recover(Store& store, Batch& cleanup, const std::function<void(const LogRecord&)>& f);
    // Segment files of the chunks still stored (a deleted queue's: unref
    // once its range delete is synced).
    void stored_files(std::vector<Unref>& out) const;
    // Compaction of a sparse segment file: the chunks still stored in
    // `file`, and a chunk's bytes (read back off the owner's thread) for the
    // next flush to put again (a new place; the old one is unref'd once that
    // batch is synced). False if the chunk is gone or moved meanwhile.
    void chunks_in(uint32_t file, std::vector<uint64_t>& firsts) const;
    bool rewrite(uint64_t first, uint32_t file, std::string bytes);
    // Chunks recovery found whose bytes are missing or damaged.
    uint64_t damaged_chunks() const { return damaged_; }

private:
    struct Chunk {
        uint64_t last_seq = 0;
        uint32_t records = 0;
        uint32_t live = 0;
        uint32_t size = 0;           // bytes of the chunk's value
        std::vector<uint64_t> bits;  // bit i: seq first + i is live
        std::string pending;         // the chunk's value until its batch is synced
        bool written = false;        // put into a batch
        bool ack_record = false;     // an ack record was put
        bool dirty = false;          // on dirty_
        uint32_t file = 0;           // the segment file holding its bytes (0: in the database)
        bool rewrite = false;        // pending holds its bytes, to be put again (compaction)
    };
    using Chunks = std::map<uint64_t, Chunk>;

    void mark_dirty(uint64_t first, Chunk& c);
    // Before a chunk's first write: its value keeps only the live records
    // (those consumed meanwhile are never written).
    void keep_live_records(uint64_t first, Chunk& c);
    // The chunk's bytes (pending) into `batch`, with its live bits if some are clear.
    void put_chunk(Batch& batch, uint64_t first, Chunk& c);
    void clear_bit(uint64_t first, Chunk& c, uint64_t seq);
    // `key_seq`: the seq in the value's key (a previous-format entry's seq).
    static void for_each_record(std::string_view value, uint64_t key_seq,
                                const std::function<void(const LogRecord&)>& f);

    uint64_t queue_id_;
    Chunks chunks_;
    uint64_t open_first_ = 0;  // first seq of the open chunk (0 = none)
    std::vector<uint64_t> dirty_;
    std::vector<uint64_t> in_flight_;  // chunks put by the last flush (bytes kept until it syncs)
    std::vector<Unref> unrefs_;        // segment files of chunks deleted or moved by flushes not yet taken
    uint64_t live_ = 0;
    size_t open_bytes_ = 0;
    uint64_t freed_bytes_ = 0;
    uint64_t stored_bytes_ = 0;
    uint64_t damaged_ = 0;
};

// Every durable queue's log, and group commit's bookkeeping for them: which
// logs have changes for the gathering batch, which have chunks in the batch
// being synced (their bytes stay readable here until it is), and how many
// chunk bytes wait outside any batch (back-pressure). The owner says which
// queue changed how; GroupCommit's hooks call flush() and committed().
//
// Threads: the owner thread only.
class QueueLogs {
public:
    QueueLog* find(uint64_t queue_id) const {
        auto it = logs_.find(queue_id);
        return it == logs_.end() ? nullptr : it->second.get();
    }
    // A fresh log for the queue (recovery: it replaces any earlier one).
    QueueLog& fresh(uint64_t queue_id);
    // Runs op(log) on the queue's log (created if `create`, else a queue
    // without one is left alone) and notes what it left to flush.
    template <typename Op>
    void change(uint64_t queue_id, Op op, bool create) {
        QueueLog* log = find(queue_id);
        if (!log) {
            if (!create) return;
            log = &fresh(queue_id);
        }
        const bool was_dirty = log->needs_flush();
        const size_t open_before = log->open_bytes();
        op(*log);
        open_bytes_ += log->open_bytes() - std::min(open_before, log->open_bytes());
        if (!was_dirty && log->needs_flush()) dirty_.push_back(queue_id);
    }
    // A log changed outside change() (recovery) that may need a flush.
    void note(uint64_t queue_id);

    bool has_open_writes() const { return !dirty_.empty(); }
    size_t open_bytes() const { return open_bytes_; }

    // Moves every changed log's writes into `batch` (the one about to be
    // committed). A log that is empty and has freed at least `reclaim_bytes`
    // since it was last reported goes into `reclaim`: the batch deletes its
    // data, and its key range can be compacted once the batch is written.
    void flush(Batch& batch, uint64_t reclaim_bytes, std::vector<uint64_t>& reclaim);
    // The batch flush() filled is synced (ok) or failed. After a failure the
    // chunks stay held here: the store writes that batch again ahead of the
    // next one, and the next success releases both.
    void committed(bool ok);
    // The store whose segment files chunks go to (their references are
    // dropped here once the batches deleting them are synced).
    void set_store(Store* store) { store_ = store; }
    // Compaction (QueueLog::chunks_in, rewrite) over every log.
    struct ChunkRef {
        uint64_t queue_id;
        uint64_t first;
    };
    std::vector<ChunkRef> chunks_in(uint32_t file) const;
    bool rewrite(const ChunkRef& c, uint32_t file, std::string bytes);
    // Recovery's chunks were read from the store: none is waiting for a sync.
    void forget_in_flight() { in_flight_.clear(); }
    // Drops a queue's log (its queue is gone). Returns the bytes its data
    // held in the store (stored and freed), or nothing if it had no log.
    std::optional<uint64_t> erase(uint64_t queue_id);

private:
    std::unordered_map<uint64_t, std::unique_ptr<QueueLog>> logs_;
    std::vector<uint64_t> dirty_;      // queue ids whose log has changes for the next batch
    std::vector<uint64_t> in_flight_;  // queue ids whose chunks are in the batch being synced
    size_t open_bytes_ = 0;            // chunk bytes not yet in a batch
    Store* store_ = nullptr;
    // Segment files whose chunks the gathering batch deletes, and those the
    // batch being synced deletes (unref'd when it is).
    std::vector<QueueLog::Unref> unrefs_, in_flight_unrefs_;
};

// The key of a queue's chunk, and of its ack record.
std::string chunk_key(uint64_t queue_id, uint64_t first_seq);
std::string ack_key(uint64_t queue_id, uint64_t first_seq);

}  // namespace sluice::storage
