// One stream's stored records (RabbitMQ's `x-queue-type: stream`): an
// append-only log of opaque records, each at an offset (0, 1, 2, …), kept
// in chunks and segments in the `msgs` column; nothing is ever removed but
// whole segments from the head (retention).
//
// Keys in `msgs` (stream id = the queue's id):
//   stream id (u64 BE) | first offset (u64 BE)          → chunk
//   stream id (u64 BE) | 2^63 + segment's first offset  → segment record
// A chunk: 0x05, count u32 BE, timestamp (Unix ms) u64 BE, then records
// [len u32 BE][payload]; its records are at first offset, first + 1, ….
// Chunks follow each other with no gap: the chunk after [f, f + count) is
// the one keyed f + count. A segment is a run of chunks of about
// `segment_bytes`; its record (first, end, first offset of its last chunk,
// first and last timestamps, bytes) is written with every batch that adds
// to it, so start-up rebuilds the stream from the segment records alone —
// no chunk and no body is read. Retention deletes a segment with one range
// delete of its chunks and the delete of its record.
//
// When bytes are safe: appended records wait in memory until flush() puts
// their chunks into a batch; readers see a chunk only once that batch is
// synced (committed()): a consumer never gets a record a crash could take
// back, and every read is a read of the store.
//
// Threads: the owner thread (the broker thread); read() is static and runs
// on the store's read thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "storage/store.hpp"

namespace sluice::storage {

struct StreamSegment {
    uint64_t first = 0;       // first offset
    uint64_t end = 0;         // one past its last offset
    uint64_t last_chunk = 0;  // first offset of its last chunk
    uint64_t first_ms = 0;    // timestamps of its first and last chunks (Unix ms)
    uint64_t last_ms = 0;
    uint64_t bytes = 0;       // bytes of its chunks
};

struct StreamRecord {
    uint64_t offset = 0;
    uint64_t timestamp_ms = 0;  // its chunk's
    std::string_view payload;
};

class StreamLog {
public:
    // Records per chunk are what one batch appended, cut at this many bytes.
    static constexpr size_t kChunkBytes = 256u << 10;

    StreamLog(uint64_t stream_id, uint64_t segment_bytes) : id_(stream_id), segment_bytes_(segment_bytes) {}

    uint64_t id() const { return id_; }
    // The first offset kept and one past the last appended.
    uint64_t first() const { return segments_.empty() ? committed_end_ : segments_.front().first; }
    uint64_t end() const { return next_; }
    // Offsets below this are synced: readers may read them.
    uint64_t committed_end() const { return committed_end_; }
    // The first offset of the last synced chunk (RabbitMQ's `last`).
    uint64_t last_chunk() const { return committed_last_chunk_; }
    uint64_t bytes() const { return bytes_; }
    const std::deque<StreamSegment>& segments() const { return segments_; }
    bool needs_flush() const { return !open_.bytes.empty() || !sealed_.empty() || !drops_.empty(); }
    size_t open_bytes() const { return open_bytes_; }

    // Appends a record at end() (returned), stamped now_ms.
    uint64_t append(uint64_t now_ms, std::initializer_list<std::string_view> payload);

    // Retention, a segment at a time from the head (never the last one):
    // drops segments while the bytes kept exceed max_bytes, and segments
    // whose last chunk is older than max_age_ms. Their deletes go with the
    // next flush. Returns the records dropped.
    uint64_t apply_retention(std::optional<uint64_t> max_bytes, std::optional<uint64_t> max_age_ms, uint64_t now_ms);
    // The offsets [first, end) whose segments the flushes since the last
    // call deleted (compacted once that batch is written); first == end: none.
    std::pair<uint64_t, uint64_t> take_dropped() {
        auto r = dropped_;
        dropped_ = {0, 0};
        return r;
    }

    // Puts the chunks appended since the last flush, the records of the
    // segments they grew, and the deletes of dropped segments into `batch`.
    void flush(Batch& batch);
    // The batches of the flushes so far are synced: their chunks are readable.
    void committed();

    // Start-up: the segments from their records.
    void recover(const Store& store);

    // Any thread: visits the records from offset `from` on (from the chunk
    // that holds it, or the first chunk after it if it is gone), chunk by
    // chunk, below `end`, stopping after the chunk that brings the bytes
    // visited to max_bytes. Returns the offset after the last chunk visited
    // (`from` if none). `f` may stop early by returning false.
    static uint64_t read(const Store& store, uint64_t stream_id, uint64_t from, uint64_t end, size_t max_bytes,
                         const std::function<bool(const StreamRecord&)>& f);

    // Keys (tests and the store's reclaim).
    static std::string chunk_key(uint64_t stream_id, uint64_t offset);
    static std::string segment_key(uint64_t stream_id, uint64_t first);

private:
    struct Chunk {
        uint64_t first = 0;
        uint32_t count = 0;
        uint64_t ms = 0;
        std::string bytes;
    };
    void seal_open();
    void put_segment(Batch& batch, const StreamSegment& s) const;

    uint64_t id_;
    uint64_t segment_bytes_;
    uint64_t next_ = 0;
    Chunk open_;                 // gathering records (bytes empty: none)
    size_t open_bytes_ = 0;      // open_ and sealed_
    std::vector<Chunk> sealed_;  // cut from open_, not yet flushed
    std::deque<StreamSegment> segments_;
    std::vector<StreamSegment> drops_;  // dropped, deletes not yet flushed
    std::pair<uint64_t, uint64_t> dropped_{0, 0};
    uint64_t bytes_ = 0;
    uint64_t flushed_end_ = 0, flushed_last_chunk_ = 0;
    uint64_t committed_end_ = 0, committed_last_chunk_ = 0;
};

}  // namespace sluice::storage
