// storage::StreamLog on its own, over a real store: offsets, chunks cut by
// size, reads from any offset (inside a chunk, in a gap left by retention),
// readers that see only committed chunks, retention a whole segment at a
// time, and start-up from the segment records alone.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "storage/store.hpp"
#include "tests/unit/temp_store_fixture.hpp"
#include "storage/stream_log.hpp"

namespace sluice::test {
namespace {

using storage::StreamLog;

class StreamLogTest : public TempStoreTest {
protected:
    // One batch: what was appended becomes chunks, synced, readable.
    void commit(StreamLog& log) {
        storage::Batch b = store_->new_batch();
        log.flush(b);
        ASSERT_EQ(store_->commit_now(std::move(b)), "");
        log.committed();
    }
    void append_n(StreamLog& log, uint64_t n, uint64_t ms, size_t size = 10) {
        for (uint64_t i = 0; i < n; ++i) {
            const std::string payload = std::to_string(log.end()) + std::string(size, '.');
            log.append(ms, {payload});
        }
    }
    // Offsets (checked against their payloads) read from `from`.
    std::vector<uint64_t> read(const StreamLog& log, uint64_t from, size_t max_bytes = SIZE_MAX,
                               uint64_t* next = nullptr) {
        std::vector<uint64_t> out;
        uint64_t n = StreamLog::read(*store_, log.id(), from, log.committed_end(), max_bytes,
                                     [&](const storage::StreamRecord& r) {
                                         EXPECT_EQ(std::string(r.payload.substr(0, std::to_string(r.offset).size())),
                                                   std::to_string(r.offset));
                                         out.push_back(r.offset);
                                         return true;
                                     });
        if (next) *next = n;
        return out;
    }
    static std::vector<uint64_t> range(uint64_t a, uint64_t b) {
        std::vector<uint64_t> v;
        for (uint64_t i = a; i < b; ++i) v.push_back(i);
        return v;
    }

};

TEST_F(StreamLogTest, OffsetsReadFromAnywhereOnlyOnceCommitted) {
    StreamLog log(7, 1 << 20);
    append_n(log, 5, 1000);
    EXPECT_EQ(log.end(), 5u);
    EXPECT_EQ(log.committed_end(), 0u);
    EXPECT_TRUE(read(log, 0).empty());  // not synced: no reader sees it
    commit(log);
    append_n(log, 5, 2000);
    commit(log);
    EXPECT_EQ(log.committed_end(), 10u);
    EXPECT_EQ(log.last_chunk(), 5u);  // the second batch's chunk starts at 5
    EXPECT_EQ(read(log, 0), range(0, 10));
    EXPECT_EQ(read(log, 3), range(3, 10));  // inside the first chunk
    EXPECT_EQ(read(log, 7), range(7, 10));
    EXPECT_TRUE(read(log, 10).empty());
    // A read stops after the chunk that reaches max_bytes, and says where to go on.
    uint64_t next = 0;
    EXPECT_EQ(read(log, 0, 1, &next), range(0, 5));
    EXPECT_EQ(next, 5u);
}

TEST_F(StreamLogTest, ChunksAreCutBySizeWithinABatch) {
    StreamLog log(3, 64u << 20);
    const size_t size = 100 << 10;
    append_n(log, 10, 1000, size);  // ~1 MiB in one batch: chunks of about kChunkBytes
    commit(log);
    size_t chunks = 0;
    store_->scan(storage::Column::msgs, StreamLog::chunk_key(3, 0), StreamLog::chunk_key(3, 1000),
                 [&](std::string_view, std::string_view v) {
                     EXPECT_LE(v.size(), StreamLog::kChunkBytes + size + 64);
                     return ++chunks, true;
                 });
    EXPECT_EQ(chunks, 4u);  // 3 records (300 KiB) cut each time past 256 KiB: 3+3+3+1
    EXPECT_EQ(read(log, 4), range(4, 10));
}

TEST_F(StreamLogTest, RetentionDropsWholeSegmentsFromTheHeadNeverTheLast) {
    // Segments of ~1 KiB: each batch of 4 records of ~110 bytes is a chunk
    // of ~470 bytes, so a segment holds 3 chunks (12 records).
    StreamLog log(9, 1000);
    for (int b = 0; b < 10; ++b) {
        append_n(log, 4, 1000 + b, 100);
        commit(log);
    }
    ASSERT_EQ(log.segments().size(), 4u);
    EXPECT_EQ(log.segments()[1].first, 12u);
    const uint64_t before = log.bytes();
    // Keep at most half: whole segments go from the head.
    EXPECT_EQ(log.apply_retention(before / 2, std::nullopt, 0), 24u);
    commit(log);
    EXPECT_EQ(log.first(), 24u);
    EXPECT_EQ(read(log, 0), range(24, 40));  // a reader behind the head goes on at the first kept
    auto [a, b] = log.take_dropped();
    EXPECT_EQ(a, 0u);
    EXPECT_EQ(b, 24u);
    // By age: the third segment's last chunk is older than the cut; the
    // last segment is never dropped, however old.
    EXPECT_EQ(log.apply_retention(std::nullopt, 1, 1000000), 12u);
    commit(log);
    EXPECT_EQ(log.first(), 36u);
    EXPECT_EQ(log.segments().size(), 1u);
    // The deleted chunks are gone from the store, not just from memory.
    size_t chunks_before_36 = 0;
    store_->scan(storage::Column::msgs, StreamLog::chunk_key(9, 0), StreamLog::chunk_key(9, 36),
                 [&](std::string_view, std::string_view) { return ++chunks_before_36, true; });
    EXPECT_EQ(chunks_before_36, 0u);
}

TEST_F(StreamLogTest, RecoversFromSegmentRecordsAlone) {
    {
        StreamLog log(5, 1000);
        for (int b = 0; b < 6; ++b) {
            append_n(log, 4, 5000 + b, 100);
            commit(log);
        }
        log.apply_retention(1500, std::nullopt, 0);
        commit(log);
        append_n(log, 3, 9000);  // appended, never flushed: lost with the process
    }
    reopen();
    StreamLog log(5, 1000);
    log.recover(*store_);
    EXPECT_EQ(log.end(), 24u);
    EXPECT_EQ(log.committed_end(), 24u);
    EXPECT_EQ(log.first(), 12u);
    EXPECT_EQ(log.last_chunk(), 20u);
    EXPECT_EQ(log.segments().back().last_ms, 5005u);
    EXPECT_EQ(read(log, 0), range(12, 24));
    // It goes on where it stopped.
    append_n(log, 2, 6000);
    commit(log);
    EXPECT_EQ(read(log, 23), range(23, 26));
}

}  // namespace
}  // namespace sluice::test
