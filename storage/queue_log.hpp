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
// A chunk: 0x04, then records [seq u64][kind u8][expires u64][len u32][payload].
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
#include <string>
#include <string_view>
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
    // can give back), and bytes of chunks written and still there.
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
    // records (one put each; fully removed ones are never written), ack
    // records of partly removed chunks, deletes of emptied ones. Returns
    // true if it put chunks (their bytes are kept until release_pending()).
    bool flush(Batch& batch);
    // The batches of the flushes since the last call are synced: chunk bytes
    // kept for reads go. (Not called after a failed write: the bytes stay,
    // the only sure copy, until the store has written that batch again.)
    void release_pending();

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
    };
    using Chunks = std::map<uint64_t, Chunk>;

    void mark_dirty(uint64_t first, Chunk& c);
    void clear_bit(uint64_t first, Chunk& c, uint64_t seq);
    // `key_seq`: the seq in the value's key (a previous-format entry's seq).
    static void for_each_record(std::string_view value, uint64_t key_seq,
                                const std::function<void(const LogRecord&)>& f);

    uint64_t queue_id_;
    Chunks chunks_;
    uint64_t open_first_ = 0;  // first seq of the open chunk (0 = none)
    std::vector<uint64_t> dirty_;
    std::vector<uint64_t> in_flight_;  // chunks put by the last flush (bytes kept until it syncs)
    uint64_t live_ = 0;
    size_t open_bytes_ = 0;
    uint64_t freed_bytes_ = 0;
    uint64_t stored_bytes_ = 0;
};

// The key of a queue's chunk, and of its ack record.
std::string chunk_key(uint64_t queue_id, uint64_t first_seq);
std::string ack_key(uint64_t queue_id, uint64_t first_seq);

}  // namespace sluice::storage
