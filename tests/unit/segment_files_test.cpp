// storage::SegmentFiles on its own (placement, checked reads, which files go
// and when), and the queue logs over a store that keeps chunks' bytes in
// them: the database holds pointers, the bytes come back through recovery,
// a lost file is loud, files go when their chunks do, and a leading store
// (cluster mode) keeps the bytes in its batches for the replicas. The
// power-loss and failed-write scenarios over this path are the broker-level
// ones in durable_broker_test.cpp (the stores there use segment files).
#include <gtest/gtest.h>
#include <rocksdb/file_system.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "storage/queue_log.hpp"
#include "storage/segment_files.hpp"
#include "storage/store.hpp"
#include "tests/unit/temp_store_fixture.hpp"

namespace sluice::test {
namespace {

namespace fs = std::filesystem;

size_t seg_files(const std::string& dir) {
    size_t n = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.path().extension() == ".seg") ++n;
    return n;
}

class SegmentFilesTest : public ::testing::Test {
protected:
    SegmentFilesTest() {
        std::string tmpl = (fs::temp_directory_path() / "sluice-seg-XXXXXX").string();
        dir_ = mkdtemp(tmpl.data());
        dir_ += "/segments";
    }
    ~SegmentFilesTest() override {
        std::error_code ec;
        fs::remove_all(fs::path(dir_).parent_path(), ec);
    }
    std::unique_ptr<storage::SegmentFiles> open(uint64_t file_bytes) {
        std::string error;
        auto sf = storage::SegmentFiles::open(rocksdb::FileSystem::Default().get(), dir_, file_bytes, error);
        EXPECT_TRUE(sf) << error;
        return sf;
    }
    // A chunk whose batch is written for good: reserved, written, synced.
    storage::SegmentPointer put(storage::SegmentFiles& sf, const std::string& bytes) {
        storage::SegmentPointer p = sf.reserve(bytes);
        EXPECT_EQ(sf.write(p, bytes), "");
        EXPECT_EQ(sf.sync(), "");
        sf.written({p.file});
        return p;
    }
    std::string dir_;
};

TEST_F(SegmentFilesTest, BytesComeBackCheckedAndAFullFileRollsOver) {
    auto sf = open(1000);
    const std::string a(400, 'a'), b(400, 'b'), c(400, 'c');
    auto pa = put(*sf, a), pb = put(*sf, b), pc = put(*sf, c);
    ASSERT_EQ(sf->sync(), "");
    EXPECT_EQ(pa.file, 1u);
    EXPECT_EQ(pb.file, 1u);
    EXPECT_EQ(pb.offset, 400u);
    EXPECT_EQ(pc.file, 2u) << "800 + 400 bytes do not fit a 1000-byte file";
    EXPECT_EQ(pc.offset, 0u);
    std::string out, error;
    ASSERT_TRUE(sf->read(pb, out, error)) << error;
    EXPECT_EQ(out, b);
    ASSERT_TRUE(sf->read(pc, out, error)) << error;
    EXPECT_EQ(out, c);

    // A pointer survives its encoding.
    storage::SegmentPointer back;
    ASSERT_TRUE(storage::decode_segment_pointer(storage::encode_segment_pointer(pb), back));
    EXPECT_EQ(back.file, pb.file);
    EXPECT_EQ(back.offset, pb.offset);
    EXPECT_EQ(back.length, pb.length);
    EXPECT_EQ(back.crc, pb.crc);

    // A damaged byte is found, not returned.
    {
        std::fstream f(dir_ + "/000001.seg", std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(450);
        f.put('X');
    }
    EXPECT_FALSE(sf->read(pb, out, error));
    EXPECT_NE(error.find("checksum"), std::string::npos) << error;
    EXPECT_TRUE(sf->read(pa, out, error)) << "bytes before the damage are still good: " << error;

    // So is a missing file.
    fs::remove(dir_ + "/000002.seg");
    auto fresh = open(1000);
    EXPECT_FALSE(fresh->read(pc, out, error));
    EXPECT_NE(error.find("missing"), std::string::npos) << error;
}

TEST_F(SegmentFilesTest, AFileGoesOnlyWhenNothingPointsAtItAndNumbersAreNotReused) {
    auto sf = open(1000);
    auto p1 = put(*sf, std::string(700, 'x'));
    auto p2 = put(*sf, std::string(700, 'y'));
    ASSERT_EQ(sf->sync(), "");
    ASSERT_EQ(p1.file, 1u);
    ASSERT_EQ(p2.file, 2u);
    EXPECT_EQ(sf->collect(), 0u) << "both are still pointed at";
    EXPECT_EQ(seg_files(dir_), 2u);
    sf->unref(p1.file, p1.length);
    EXPECT_EQ(sf->collect(), 1u);
    EXPECT_FALSE(fs::exists(dir_ + "/000001.seg"));
    EXPECT_TRUE(fs::exists(dir_ + "/000002.seg"));
    sf->unref(p2.file, p2.length);  // the file being filled: it goes too, the next reserve starts a new one
    EXPECT_EQ(sf->collect(), 1u);
    EXPECT_EQ(seg_files(dir_), 0u);
    auto p3 = put(*sf, "z");
    EXPECT_EQ(p3.file, 3u);

    // A reserved place not yet written or synced keeps its file.
    auto p4 = sf->reserve("w");
    sf->unref(p3.file, p3.length);
    EXPECT_EQ(sf->collect(), 0u) << "file 3 still has the reserved place";
    ASSERT_EQ(sf->write(p4, "w"), "");
    ASSERT_EQ(sf->sync(), "");
    sf->written({p4.file});
    std::string out, error;
    ASSERT_TRUE(sf->read(p4, out, error)) << error;
    EXPECT_EQ(out, "w");

    // After a restart the files are listed; new ones are numbered after
    // them, and those no pointer refers to go at the first collect.
    sf.reset();
    sf = open(1000);
    EXPECT_EQ(sf->files(), 1u);
    auto p5 = put(*sf, "v");
    EXPECT_EQ(p5.file, 4u);
    ASSERT_EQ(sf->sync(), "");
    EXPECT_EQ(sf->collect(), 1u) << "file 3 is an orphan once nothing refs it at recovery";
    EXPECT_TRUE(fs::exists(dir_ + "/000004.seg"));
}

// The store writes a failed batch again, chunks included: a chunk's file is
// then written again in place, never created anew (which would truncate the
// chunks of earlier batches in it), even once it is full and synced.
TEST_F(SegmentFilesTest, AChunkWrittenAgainAfterAFailureLeavesTheRestOfItsFileAlone) {
    auto sf = open(1000);
    const std::string x(300, 'x'), a(300, 'a'), b(600, 'b');
    auto px = put(*sf, x);  // an earlier batch's, written for good
    auto pa = sf->reserve(a), pb = sf->reserve(b);
    ASSERT_EQ(pa.file, 1u);
    ASSERT_EQ(pb.file, 2u) << "the batch fills file 1 and starts file 2";
    for (int attempt = 0; attempt < 2; ++attempt) {  // its database write failed: written again
        ASSERT_EQ(sf->write(pa, a), "");
        ASSERT_EQ(sf->write(pb, b), "");
        ASSERT_EQ(sf->sync(), "");
    }
    sf->written({pa.file, pb.file});
    std::string out, error;
    ASSERT_TRUE(sf->read(px, out, error)) << error;
    EXPECT_EQ(out, x);
    ASSERT_TRUE(sf->read(pa, out, error)) << error;
    EXPECT_EQ(out, a);
}

TEST_F(SegmentFilesTest, SparseFilesAreThoseMostlyUnreferencedAndQuietNotTheOneBeingFilled) {
    auto sf = open(1000);
    auto a = put(*sf, std::string(100, 'a'));
    auto b = put(*sf, std::string(800, 'b'));  // file 1 is now 900 bytes
    auto c = put(*sf, std::string(800, 'c'));  // file 2, being filled
    ASSERT_EQ(sf->sync(), "");
    ASSERT_EQ(a.file, 1u);
    ASSERT_EQ(c.file, 2u);
    EXPECT_TRUE(sf->sparse(std::chrono::seconds(0)).empty()) << "file 1 is full of referenced bytes";
    sf->unref(b.file, b.length);  // 100 of 900 bytes left
    EXPECT_TRUE(sf->sparse(std::chrono::hours(1)).empty()) << "it emptied a moment ago: maybe still being consumed";
    EXPECT_EQ(sf->sparse(std::chrono::seconds(0)), std::vector<uint32_t>{1});
    EXPECT_TRUE(sf->sparse(std::chrono::seconds(0)).empty()) << "returned once until compacted()";
    sf->compacted(1);
    EXPECT_EQ(sf->sparse(std::chrono::seconds(0)), std::vector<uint32_t>{1});
    sf->unref(c.file, c.length);
    EXPECT_EQ(sf->sparse(std::chrono::seconds(0)).size(), 0u) << "file 2 is being filled; file 1 is already out";
}

TEST_F(SegmentFilesTest, ReadingThousandsOfFilesKeepsABoundedNumberOpen) {
    auto sf = open(10);  // a file per chunk
    std::vector<storage::SegmentPointer> ps;
    for (int i = 0; i < 300; ++i) ps.push_back(put(*sf, "chunk" + std::to_string(1000 + i)));
    ASSERT_EQ(sf->sync(), "");
    ASSERT_EQ(sf->files(), 300u);
    std::string out, error;
    for (int i = 0; i < 300; ++i) {
        ASSERT_TRUE(sf->read(ps[i], out, error)) << error;
        EXPECT_EQ(out, "chunk" + std::to_string(1000 + i));
    }
    size_t open_here = 0;
    for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
        std::error_code ec;
        const auto target = fs::read_symlink(e.path(), ec);
        if (!ec && target.string().rfind(dir_, 0) == 0) ++open_here;
    }
    EXPECT_LE(open_here, 70u) << "every file read stays open";
}

class SegmentQueueLogTest : public TempStoreTest {
protected:
    std::string segments() const { return storage::segments_dir(dir_); }
    void commit(storage::QueueLogs& logs) {
        storage::Batch b = store_->new_batch();
        std::vector<uint64_t> reclaim;
        logs.flush(b, UINT64_MAX, reclaim);
        if (!b.empty()) {
            ASSERT_EQ(store_->commit_now(std::move(b)), "");
        }
        logs.committed(true);
    }
    // Waits (bounded) for the store's background collect.
    void wait_for_files(size_t n) {
        for (int i = 0; i < 500 && seg_files(segments()) != n; ++i) {
            store_->wait_idle();
            std::this_thread::yield();
            usleep(2000);
        }
        EXPECT_EQ(seg_files(segments()), n);
    }
    static std::string payload(uint64_t s) { return std::string(512, static_cast<char>('a' + s % 26)); }
    // Records 1..n of queue `q` into `logs` (over this store), not yet committed.
    void append(storage::QueueLogs& logs, uint64_t q, uint64_t n) {
        logs.set_store(store_.get());
        logs.change(q, [n](storage::QueueLog& l) { for (uint64_t s = 1; s <= n; ++s) l.append(s, 1, 0, {payload(s)}); },
                    true);
    }
};

TEST_F(SegmentQueueLogTest, TheDatabaseHoldsAPointerAndTheBytesComeBackAcrossARestart) {
    storage::QueueLogs logs;
    append(logs, 5, 100);
    commit(logs);
    size_t values = 0;
    store_->scan(storage::Column::msgs, "", "", [&](std::string_view, std::string_view v) {
        ++values;
        EXPECT_TRUE(storage::is_segment_pointer(v)) << "a chunk's bytes went into the database (" << v.size() << " bytes)";
        return true;
    });
    EXPECT_EQ(values, 1u);
    EXPECT_EQ(seg_files(segments()), 1u);

    std::vector<uint64_t> seen;
    logs.find(5)->read(*store_, 0, UINT64_MAX, SIZE_MAX, [&](const storage::LogRecord& r) {
        EXPECT_EQ(r.payload, payload(r.seq));
        seen.push_back(r.seq);
    });
    EXPECT_EQ(seen.size(), 100u);

    reopen();
    storage::QueueLog log(5);
    storage::Batch cleanup = store_->new_batch();
    seen.clear();
    EXPECT_EQ(log.recover(*store_, cleanup, [&](const storage::LogRecord& r) {
        EXPECT_EQ(r.payload, payload(r.seq));
        seen.push_back(r.seq);
    }), 100u);
    EXPECT_EQ(seen.front(), 1u);
    EXPECT_EQ(seen.back(), 100u);
    EXPECT_EQ(log.damaged_chunks(), 0u);
    EXPECT_EQ(store_->segments()->collect(), 0u) << "recovery refs the file its chunk points at";
}

TEST_F(SegmentQueueLogTest, ALostSegmentFileIsCountedAndItsChunkRemovedNotReadAsGarbage) {
    storage::QueueLogs logs;
    append(logs, 5, 10);
    commit(logs);
    store_.reset();
    for (const auto& e : fs::directory_iterator(segments())) fs::remove(e.path());
    reopen();
    storage::QueueLog log(5);
    storage::Batch cleanup = store_->new_batch();
    size_t visited = log.recover(*store_, cleanup, [](const storage::LogRecord&) {});
    EXPECT_EQ(visited, 0u);
    EXPECT_EQ(log.damaged_chunks(), 1u);
    EXPECT_EQ(log.live(), 0u);
    EXPECT_FALSE(cleanup.empty()) << "the chunk's key is removed";
}

TEST_F(SegmentQueueLogTest, FilesGoOnceTheirChunksAreAckedOrTheirQueueDeletedAndThatBatchIsSynced) {
    storage::QueueLogs logs;
    // Two queues, chunks in one file; the first is consumed.
    append(logs, 5, 10);
    append(logs, 6, 10);
    commit(logs);
    ASSERT_EQ(seg_files(segments()), 1u);
    logs.change(5, [](storage::QueueLog& l) { l.remove_from(1); }, false);
    // The deleting batch failed: nothing goes.
    {
        storage::Batch b = store_->new_batch();
        std::vector<uint64_t> reclaim;
        logs.flush(b, UINT64_MAX, reclaim);
        // The database frees a pointer, not the bytes: no compaction of its
        // range for this (the file gives the space back).
        EXPECT_EQ(logs.find(5)->freed_bytes(), storage::kSegmentPointerSize);
        logs.committed(false);
        store_->collect_segments();
        store_->wait_idle();
        EXPECT_EQ(seg_files(segments()), 1u);
        ASSERT_EQ(store_->commit_now(std::move(b)), "");  // its rewrite
    }
    // The other queue is deleted: its range delete goes with the next
    // batch; once that is synced, the file has no chunk left.
    ASSERT_TRUE(logs.erase(6).has_value());
    storage::Batch d = store_->new_batch();
    d.remove_range(storage::Column::msgs, storage::message_key_of(6, 0), storage::message_key_of(7, 0));
    std::vector<uint64_t> reclaim;
    logs.flush(d, UINT64_MAX, reclaim);
    ASSERT_EQ(store_->commit_now(std::move(d)), "");
    EXPECT_EQ(seg_files(segments()), 1u) << "nothing is unlinked before the batch is known synced";
    logs.committed(true);
    wait_for_files(0);
}

TEST_F(SegmentQueueLogTest, ALeadingStoreKeepsChunkBytesInItsBatchesForTheReplicas) {
    std::vector<std::string> shipped;
    store_->set_log_listener([&](storage::Store::LogPosition, std::string_view data) { shipped.emplace_back(data); });
    ASSERT_EQ(store_->lead(1), "");
    storage::QueueLogs logs;
    append(logs, 5, 10);
    commit(logs);
    EXPECT_EQ(seg_files(segments()), 0u);
    store_->scan(storage::Column::msgs, "", "", [&](std::string_view, std::string_view v) {
        EXPECT_FALSE(storage::is_segment_pointer(v)) << "a replica could not read a pointer to the leader's file";
        return true;
    });
    // A replica applying the shipped batches reads the records.
    std::string tmpl = (fs::temp_directory_path() / "sluice-replica-XXXXXX").string();
    std::string rdir = mkdtemp(tmpl.data());
    {
        storage::StoreOptions o;
        o.path = rdir;
        std::string error;
        auto replica = storage::Store::open(o, error);
        ASSERT_TRUE(replica) << error;
        ASSERT_FALSE(shipped.empty());
        for (const auto& b : shipped) ASSERT_EQ(replica->apply(b), "");
        storage::QueueLog log(5);
        storage::Batch cleanup = replica->new_batch();
        EXPECT_EQ(log.recover(*replica, cleanup, [&](const storage::LogRecord& r) { EXPECT_EQ(r.payload, payload(r.seq)); }),
                  10u);
    }
    fs::remove_all(rdir);
}

}  // namespace
}  // namespace sluice::test
