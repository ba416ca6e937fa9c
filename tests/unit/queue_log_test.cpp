// storage::QueueLog and storage::SpillFile on their own, over a real store
// and real files: the shapes their bytes take on disk (one key per batch's
// chunk, ack records, the previous one-entry format; spill extents read
// back from the buffer or the file, segments freed when drained). The
// broker-level scenarios over them are in durable_broker_test.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "storage/queue_log.hpp"
#include "storage/spill_file.hpp"
#include "storage/store.hpp"
#include "tests/unit/temp_store_fixture.hpp"

namespace sluice::test {
namespace {

namespace fs = std::filesystem;

class QueueLogTest : public TempStoreTest {
protected:
    void commit(storage::QueueLog& log) {
        storage::Batch b = store_->new_batch();
        log.flush(b);
        if (!b.empty()) {
            ASSERT_EQ(store_->commit_now(std::move(b)), "");
        }
        log.release_pending();
    }
    size_t keys() {
        size_t n = 0;
        store_->scan(storage::Column::msgs, "", "", [&](std::string_view, std::string_view) { return ++n, true; });
        return n;
    }
    std::vector<uint64_t> live(storage::QueueLog& log) {
        std::vector<uint64_t> out;
        log.read(*store_, 0, UINT64_MAX, SIZE_MAX, [&](const storage::LogRecord& r) { out.push_back(r.seq); });
        return out;
    }

};

TEST_F(QueueLogTest, ABatchOfRecordsIsOneKeyAndAFullyAckedChunkIsDeletedWhole) {
    storage::QueueLog log(7);
    for (uint64_t s = 1; s <= 100; ++s) log.append(s, 1, 0, {"payload"});
    commit(log);
    EXPECT_EQ(keys(), 1u);
    for (uint64_t s = 1; s <= 60; ++s) EXPECT_TRUE(log.remove(s));
    EXPECT_FALSE(log.remove(5));  // twice: nothing
    commit(log);
    EXPECT_EQ(keys(), 2u);  // the chunk and its ack record
    EXPECT_EQ(live(log).size(), 40u);
    EXPECT_EQ(log.remove_from(90), 11u);
    for (uint64_t s = 61; s < 90; ++s) log.remove(s);
    commit(log);
    EXPECT_EQ(keys(), 0u);
    EXPECT_EQ(log.live(), 0u);
}

TEST_F(QueueLogTest, RecordsRemovedBeforeTheirBatchIsWrittenAreNeverWritten) {
    storage::QueueLog log(7);
    for (uint64_t s = 1; s <= 10; ++s) log.append(s, 1, 0, {"x"});
    for (uint64_t s = 1; s <= 10; ++s) log.remove(s);
    storage::Batch b = store_->new_batch();
    EXPECT_FALSE(log.flush(b));
    EXPECT_TRUE(b.empty());
}

TEST_F(QueueLogTest, RecoveryAppliesAckRecordsAndReadsTheOldOneEntryFormat) {
    {
        storage::QueueLog log(3);
        for (uint64_t s = 10; s < 20; ++s) log.append(s, 2, s * 100, {"p" + std::to_string(s)});
        commit(log);
        log.remove(12);
        log.remove(15);
        commit(log);
        // An entry as the previous version wrote it: kind | 0x80, expiry, payload.
        std::string legacy;
        legacy.push_back(static_cast<char>(1 | 0x80));
        storage::append_u64_key(legacy, 777);
        legacy += "old";
        storage::Batch b = store_->new_batch();
        b.put(storage::Column::msgs, storage::message_key(3, 30), legacy);
        ASSERT_EQ(store_->commit_now(std::move(b)), "");
    }
    reopen();
    storage::QueueLog log(3);
    storage::Batch cleanup = store_->new_batch();
    std::vector<storage::LogRecord> seen;
    std::vector<std::string> payloads;
    log.recover(*store_, cleanup, [&](const storage::LogRecord& r) {
        seen.push_back(r);
        payloads.emplace_back(r.payload);
    });
    ASSERT_EQ(seen.size(), 9u);
    EXPECT_EQ(seen[0].seq, 10u);
    EXPECT_EQ(seen[0].kind, 2);
    EXPECT_EQ(seen[0].expires_ms, 1000u);
    EXPECT_EQ(payloads[0], "p10");
    for (const auto& r : seen) EXPECT_TRUE(r.seq != 12 && r.seq != 15);
    EXPECT_EQ(seen.back().seq, 30u);
    EXPECT_EQ(seen.back().expires_ms, 777u);
    EXPECT_EQ(payloads.back(), "old");
    EXPECT_EQ(log.live(), 9u);
    EXPECT_TRUE(log.remove(30));
    EXPECT_EQ(live(log).size(), 8u);
}

// A consumer that keeps up acks most of a chunk before its batch closes:
// those records are never written (in cluster mode, never replicated), and
// what is written needs no ack record.
TEST_F(QueueLogTest, RecordsConsumedBeforeTheirChunkIsWrittenAreNeverWritten) {
    storage::QueueLog log(7);
    for (uint64_t s = 1; s <= 10; ++s) log.append(s, 1, 0, {"payload-", std::to_string(s)});
    for (uint64_t s : {1, 2, 3, 5, 8, 9, 10}) ASSERT_TRUE(log.remove(s));
    commit(log);
    EXPECT_EQ(keys(), 1u) << "no ack record: every record written is live";
    std::string value, error;
    ASSERT_TRUE(store_->get(storage::Column::msgs, storage::message_key(7, 1), value));
    ASSERT_TRUE(store_->resolve_chunk(value, error)) << error;
    EXPECT_EQ(value.size(), 1 + 3 * (8 + 1 + 8 + 4 + std::string("payload-4").size()));

    auto recovered = [&] {
        storage::QueueLog again(7);
        storage::Batch cleanup = store_->new_batch();
        std::vector<std::string> out;
        again.recover(*store_, cleanup, [&](const storage::LogRecord& r) {
            out.push_back(std::to_string(r.seq) + "=" + std::string(r.payload));
        });
        return out;
    };
    EXPECT_EQ(live(log), (std::vector<uint64_t>{4, 6, 7}));  // from the store now
    EXPECT_EQ(recovered(), (std::vector<std::string>{"4=payload-4", "6=payload-6", "7=payload-7"}));
    // A later ack of a kept record: the ack record names it by its seq.
    EXPECT_TRUE(log.remove(6));
    EXPECT_FALSE(log.remove(5));
    commit(log);
    EXPECT_EQ(keys(), 2u);
    EXPECT_EQ(recovered(), (std::vector<std::string>{"4=payload-4", "7=payload-7"}));
}

// --- storage::SpillFile alone ------------------------------------------------------

// storage::QueueLogs: group commit's bookkeeping over every queue's log.
TEST_F(QueueLogTest, QueueLogsHoldAFailedBatchsChunksUntilACommitSucceeds) {
    storage::QueueLogs logs;
    logs.change(8, [](storage::QueueLog& l) { l.remove(1); }, false);
    EXPECT_EQ(logs.find(8), nullptr) << "a change that may not create a log created one";
    EXPECT_FALSE(logs.has_open_writes());
    logs.change(7, [](storage::QueueLog& l) { for (uint64_t s = 1; s <= 10; ++s) l.append(s, 1, 0, {"payload"}); }, true);
    ASSERT_NE(logs.find(7), nullptr);
    EXPECT_TRUE(logs.has_open_writes());
    EXPECT_GT(logs.open_bytes(), 0u);

    storage::Batch b = store_->new_batch();
    std::vector<uint64_t> reclaim;
    logs.flush(b, 1, reclaim);
    EXPECT_FALSE(b.empty());
    EXPECT_FALSE(logs.has_open_writes());
    EXPECT_EQ(logs.open_bytes(), 0u);
    EXPECT_TRUE(reclaim.empty());
    // The batch failed (it is never written here): its chunk is still
    // readable from memory, the only copy.
    logs.committed(false);
    EXPECT_EQ(live(*logs.find(7)).size(), 10u);
    // The rewrite succeeded: now the store has it.
    ASSERT_EQ(store_->commit_now(std::move(b)), "");
    logs.committed(true);
    EXPECT_EQ(live(*logs.find(7)).size(), 10u);
    EXPECT_EQ(keys(), 1u);

    // Drained to empty: its range is reported for compaction once written.
    logs.change(7, [](storage::QueueLog& l) { l.remove_from(1); }, false);
    storage::Batch c = store_->new_batch();
    logs.flush(c, 1, reclaim);
    EXPECT_EQ(reclaim, std::vector<uint64_t>{7});
    ASSERT_EQ(store_->commit_now(std::move(c)), "");
    logs.committed(true);
    EXPECT_EQ(keys(), 0u);

    // A queue deleted after a change but before the flush: nothing of it is written.
    logs.change(9, [](storage::QueueLog& l) { l.append(1, 1, 0, {"x"}); }, true);
    EXPECT_TRUE(logs.erase(9).has_value());
    EXPECT_FALSE(logs.erase(9).has_value());
    storage::Batch d = store_->new_batch();
    logs.flush(d, 1, reclaim);
    EXPECT_TRUE(d.empty());
}

TEST_F(QueueLogTest, AChunkReleasedAfterASuccessIsReadFromTheStoreNotMemory) {
    storage::QueueLogs logs;
    logs.change(3, [](storage::QueueLog& l) { l.append(1, 1, 0, {"kept"}); }, true);
    storage::Batch b = store_->new_batch();
    std::vector<uint64_t> reclaim;
    logs.flush(b, 1, reclaim);
    EXPECT_EQ(live(*logs.find(3)).size(), 1u);  // held while in flight
    logs.committed(true);  // (this batch was never written: memory let go, the store has nothing)
    EXPECT_EQ(live(*logs.find(3)).size(), 0u);
}

TEST(SpillFileTest, ExtentsReadBackFromBufferAndFileAndSegmentsGoWhenDrained) {
    std::string tmpl = (fs::temp_directory_path() / "sluice-spill-XXXXXX").string();
    std::string dir = mkdtemp(tmpl.data());
    {
        std::string error;
        auto spill = storage::SpillFile::open(dir, error, 4096);
        ASSERT_TRUE(spill) << error;
        std::vector<storage::SpillExtent> extents;
        for (int i = 0; i < 20; ++i) extents.push_back(spill->append({"record-", std::string(300, 'a' + i)}));
        std::string out;
        ASSERT_TRUE(spill->read(extents[19], out));  // still in the buffer
        EXPECT_EQ(out, "record-" + std::string(300, 'a' + 19));
        ASSERT_TRUE(spill->flush());
        ASSERT_TRUE(spill->read(extents[0], out));  // from the file
        EXPECT_EQ(out, "record-" + std::string(300, 'a'));
        EXPECT_GT(spill->stats().segments, 1u);  // 4 KiB segments rolled
        for (const auto& e : extents) spill->release(e);
        EXPECT_EQ(spill->stats().live_bytes, 0u);
        EXPECT_EQ(spill->stats().disk_bytes, 0u);
        EXPECT_EQ(spill->stats().segments, 0u);  // the current one too: the next append starts a new one
    }
    // A new process starts with an empty spill directory.
    {
        std::string error;
        auto spill = storage::SpillFile::open(dir, error);
        ASSERT_TRUE(spill);
        spill->append({"x"});
        spill->flush();
    }
    std::string error;
    auto spill = storage::SpillFile::open(dir, error);
    EXPECT_TRUE(fs::is_empty(dir));
    spill.reset();
    fs::remove_all(dir);
}

TEST(SpillFileTest, MovedInStringsAreWrittenInOrderAndReadBackWhole) {
    std::string tmpl = (fs::temp_directory_path() / "sluice-spill-XXXXXX").string();
    std::string dir = mkdtemp(tmpl.data());
    {
        std::string error;
        auto spill = storage::SpillFile::open(dir, error);
        ASSERT_TRUE(spill) << error;
        // 200 strings of different sizes stay buffered (under the 1 MiB that
        // forces a write): one flush writes them with several pwritev calls
        // of at most 64 parts each.
        std::vector<storage::SpillExtent> extents;
        std::vector<std::string> want;
        for (int i = 0; i < 200; ++i) {
            std::string bytes(100 + 37 * i, static_cast<char>('A' + i % 26));
            bytes += std::to_string(i);
            want.push_back(bytes);
            extents.push_back(spill->append(std::move(bytes)));
        }
        EXPECT_EQ(extents[1].offset, extents[0].offset + extents[0].length);
        std::string out;
        for (size_t i = 0; i < want.size(); ++i) {
            ASSERT_TRUE(spill->read(extents[i], out));  // from memory
            ASSERT_EQ(out, want[i]) << i;
        }
        ASSERT_TRUE(spill->flush());
        EXPECT_EQ(spill->buffered_bytes(), 0u);
        EXPECT_EQ(spill->stats().writes, 1u);
        for (size_t i = 0; i < want.size(); ++i) {
            ASSERT_TRUE(spill->read(extents[i], out));  // from the file
            ASSERT_EQ(out, want[i]) << i;
        }
        EXPECT_EQ(spill->stats().disk_bytes, extents.back().offset + extents.back().length);
    }
    fs::remove_all(dir);
}

// A range made of several appends (a shared run), half written and half
// still buffered, reads back whole.
TEST(SpillFileTest, ARangeOfSeveralAppendsReadsBackWholeAcrossTheFileAndTheBuffer) {
    std::string tmpl = (fs::temp_directory_path() / "sluice-spill-XXXXXX").string();
    std::string dir = mkdtemp(tmpl.data());
    {
        std::string error;
        auto spill = storage::SpillFile::open(dir, error);
        ASSERT_TRUE(spill) << error;
        const storage::SpillExtent a = spill->append({std::string(500, 'a')});
        ASSERT_TRUE(spill->flush());
        const storage::SpillExtent b = spill->append({std::string(300, 'b')});
        ASSERT_EQ(b.offset, a.offset + a.length);
        storage::SpillExtent range{a.segment, a.length + b.length, a.offset};
        ASSERT_TRUE(spill->retain(range));
        std::string out;
        ASSERT_TRUE(spill->read(range, out));
        EXPECT_EQ(out, std::string(500, 'a') + std::string(300, 'b'));
    }
    fs::remove_all(dir);
}

}  // namespace
}  // namespace sluice::test
