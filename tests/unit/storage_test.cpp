// storage::Store on a real RocksDB in a temp dir (no mocks): the byte-level
// API (put/remove/remove_range/get/scan), scan bounds (also over range
// tombstones in memtables and in SST files), the commit thread (callbacks in
// commit order, on that thread), commit_now, reopen, message keys, and the
// async durability mode. Power loss is in power_loss_test.cpp.
#include "storage/store.hpp"
#include "storage/crc32c.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

// RocksDB's CRC-32C, which the link wraps (storage/CMakeLists.txt): a call
// here goes to storage/crc32c.cpp, and __real_ names RocksDB's own.
namespace rocksdb::crc32c {
uint32_t Extend(uint32_t init_crc, const char* data, size_t n);
}
extern "C" uint32_t __real__ZN7rocksdb6crc32c6ExtendEjPKcm(uint32_t init_crc, const char* data, size_t n);

namespace {

using namespace std::chrono_literals;
using sluice::storage::append_u64_key;
using sluice::storage::Batch;
using sluice::storage::Column;
using sluice::storage::Durability;
using sluice::storage::message_key;
using sluice::storage::read_u64_key;
using sluice::storage::Store;
using sluice::storage::StoreOptions;

namespace fs = std::filesystem;

class TempDir {
public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "sluice-storage-XXXXXX").string();
        if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

class StoreTest : public ::testing::Test {
protected:
    StoreOptions options(Durability d = Durability::sync) const {
        StoreOptions o;
        o.path = (dir_.path() / "db").string();
        o.durability = d;
        return o;
    }
    std::unique_ptr<Store> open(const StoreOptions& o) {
        std::string error;
        auto s = Store::open(o, error);
        EXPECT_NE(s, nullptr) << error;
        EXPECT_TRUE(error.empty()) << error;
        return s;
    }
    std::unique_ptr<Store> open() { return open(options()); }

    // Commits through the commit thread and waits (with a deadline) for the
    // callback; returns its error text.
    static std::string commit_and_wait(Store& s, Batch b) {
        std::mutex mu;
        std::condition_variable cv;
        bool done = false;
        std::string result;
        s.commit(std::move(b), [&](std::string err) {
            std::lock_guard lk(mu);
            result = std::move(err);
            done = true;
            cv.notify_all();
        });
        std::unique_lock lk(mu);
        EXPECT_TRUE(cv.wait_for(lk, 10s, [&] { return done; })) << "commit callback never ran";
        return result;
    }

    static std::vector<std::pair<std::string, std::string>> scan_all(const Store& s, Column c, std::string_view lo,
                                                                     std::string_view hi) {
        std::vector<std::pair<std::string, std::string>> out;
        s.scan(c, lo, hi, [&](std::string_view k, std::string_view v) {
            out.emplace_back(std::string(k), std::string(v));
            return true;
        });
        return out;
    }
    static std::vector<std::string> scan_keys(const Store& s, Column c, std::string_view lo, std::string_view hi) {
        std::vector<std::string> out;
        for (auto& [k, v] : scan_all(s, c, lo, hi)) out.push_back(k);
        return out;
    }
    static std::string get(const Store& s, Column c, std::string_view key) {
        std::string v;
        return s.get(c, key, v) ? v : std::string("<missing>");
    }

    TempDir dir_;
};

std::vector<std::string> keys_in(const std::map<std::string, std::string>& m, const std::string& lo,
                                 const std::string& hi) {
    std::vector<std::string> out;
    for (auto it = m.lower_bound(lo); it != m.end() && (hi.empty() || it->first < hi); ++it) out.push_back(it->first);
    return out;
}

// ---- keys ------------------------------------------------------------------

TEST(MessageKey, IsQueueIdThenSeqBigEndian) {
    std::string k = message_key(0x0102030405060708ull, 0x1112131415161718ull);
    ASSERT_EQ(k.size(), 16u);
    const unsigned char want[16] = {1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18};
    for (size_t i = 0; i < 16; ++i) EXPECT_EQ(static_cast<unsigned char>(k[i]), want[i]) << "byte " << i;
    EXPECT_EQ(read_u64_key(k), 0x0102030405060708ull);
    EXPECT_EQ(read_u64_key(k, 8), 0x1112131415161718ull);
}

TEST(MessageKey, SortsByQueueThenSeqAsBytes) {
    const uint64_t values[] = {0, 1, 2, 255, 256, 257, 65535, 65536, 1ull << 32, (1ull << 32) + 1,
                               (1ull << 56) - 1, 1ull << 56, UINT64_MAX - 1, UINT64_MAX};
    std::vector<std::pair<uint64_t, uint64_t>> ids;
    for (uint64_t q : values)
        for (uint64_t s : values) ids.emplace_back(q, s);
    std::vector<std::string> keys;
    for (auto [q, s] : ids) keys.push_back(message_key(q, s));
    // Byte order (std::string's <, like RocksDB's bytewise comparator) must
    // be numeric (queue, seq) order.
    for (size_t i = 0; i < ids.size(); ++i)
        for (size_t j = 0; j < ids.size(); ++j)
            ASSERT_EQ(keys[i] < keys[j], ids[i] < ids[j])
                << "(" << ids[i].first << "," << ids[i].second << ") vs (" << ids[j].first << "," << ids[j].second
                << ")";
    // A queue's range [message_key(q,0), message_key(q+1,0)) holds exactly its keys.
    for (size_t i = 0; i < ids.size(); ++i) {
        uint64_t q = ids[i].first;
        if (q == UINT64_MAX) continue;
        EXPECT_TRUE(message_key(q, 0) <= keys[i] && keys[i] < message_key(q + 1, 0));
    }
}

TEST(MessageKey, U64RoundTripAndShortKeys) {
    for (uint64_t v : {0ull, 1ull, 0x80ull, 0xffull, 0x100ull, 0xdeadbeefcafebabeull, ~0ull}) {
        std::string k = "prefix";
        append_u64_key(k, v);
        ASSERT_EQ(k.size(), 14u);
        EXPECT_EQ(read_u64_key(k, 6), v);
    }
    // A short key reads as the big-endian value of the bytes there are.
    EXPECT_EQ(read_u64_key(std::string("\x01\x02", 2)), 0x0102u);
    EXPECT_EQ(read_u64_key(std::string(), 0), 0u);
}

// ---- batches ---------------------------------------------------------------

TEST(Batch, CountsOpsAndBytes) {
    Batch b;
    EXPECT_TRUE(b.empty());
    EXPECT_EQ(b.count(), 0u);
    b.put(Column::meta, "key", "value");
    b.remove(Column::msgs, "k2");
    b.remove_range(Column::msgs, "a", "bb");
    EXPECT_FALSE(b.empty());
    EXPECT_EQ(b.count(), 3u);
    EXPECT_EQ(b.bytes(), 3u + 5u + 2u + 1u + 2u);
    Batch moved = std::move(b);
    EXPECT_EQ(moved.count(), 3u);
}

// ---- put / get / remove ----------------------------------------------------

TEST_F(StoreTest, PutGetRemoveAcrossColumns) {
    auto s = open();
    ASSERT_TRUE(s);
    Batch b;
    b.put(Column::meta, "k", "meta-value");
    b.put(Column::msgs, "k", "msgs-value");
    b.put(Column::bodies, "k", std::string("bin\0ary\xff", 8));
    ASSERT_EQ(commit_and_wait(*s, std::move(b)), "");
    EXPECT_EQ(get(*s, Column::meta, "k"), "meta-value");
    EXPECT_EQ(get(*s, Column::msgs, "k"), "msgs-value");
    EXPECT_EQ(get(*s, Column::bodies, "k"), std::string("bin\0ary\xff", 8));
    EXPECT_EQ(get(*s, Column::meta, "other"), "<missing>");

    Batch overwrite;
    overwrite.put(Column::meta, "k", "v2");
    overwrite.remove(Column::msgs, "k");
    overwrite.remove(Column::msgs, "never-there");  // removing a missing key is fine
    ASSERT_EQ(commit_and_wait(*s, std::move(overwrite)), "");
    EXPECT_EQ(get(*s, Column::meta, "k"), "v2");
    EXPECT_EQ(get(*s, Column::msgs, "k"), "<missing>");
    EXPECT_EQ(get(*s, Column::bodies, "k"), std::string("bin\0ary\xff", 8)) << "columns are separate";
}

TEST_F(StoreTest, OpsInOneBatchApplyInOrder) {
    auto s = open();
    ASSERT_TRUE(s);
    Batch b;
    b.put(Column::msgs, "a", "1");
    b.remove(Column::msgs, "a");
    b.put(Column::msgs, "b", "1");
    b.remove_range(Column::msgs, "b", "c");
    b.put(Column::msgs, "b", "2");  // after the range delete: stays
    b.put(Column::msgs, "c", "3");
    ASSERT_EQ(commit_and_wait(*s, std::move(b)), "");
    EXPECT_EQ(get(*s, Column::msgs, "a"), "<missing>");
    EXPECT_EQ(get(*s, Column::msgs, "b"), "2");
    EXPECT_EQ(get(*s, Column::msgs, "c"), "3");
}

TEST_F(StoreTest, RemoveRangeIsHalfOpen) {
    auto s = open();
    ASSERT_TRUE(s);
    Batch b;
    for (uint64_t seq = 0; seq < 20; ++seq) b.put(Column::msgs, message_key(7, seq), "m" + std::to_string(seq));
    ASSERT_EQ(commit_and_wait(*s, std::move(b)), "");
    Batch del;
    del.remove_range(Column::msgs, message_key(7, 5), message_key(7, 10));
    ASSERT_EQ(commit_and_wait(*s, std::move(del)), "");
    for (uint64_t seq = 0; seq < 20; ++seq) {
        bool gone = seq >= 5 && seq < 10;
        EXPECT_EQ(get(*s, Column::msgs, message_key(7, seq)), gone ? "<missing>" : "m" + std::to_string(seq))
            << "seq " << seq;
    }
    // Only the column named: the same keys elsewhere stay.
    Batch other;
    other.put(Column::meta, message_key(7, 6), "meta");
    ASSERT_EQ(commit_and_wait(*s, std::move(other)), "");
    Batch del2;
    del2.remove_range(Column::msgs, message_key(7, 0), message_key(8, 0));
    ASSERT_EQ(commit_and_wait(*s, std::move(del2)), "");
    EXPECT_EQ(get(*s, Column::meta, message_key(7, 6)), "meta");
    EXPECT_TRUE(scan_keys(*s, Column::msgs, message_key(7, 0), message_key(8, 0)).empty());
}

// ---- scan ------------------------------------------------------------------

TEST_F(StoreTest, ScanVisitsExactlyLowerToUpperInOrder) {
    auto s = open();
    ASSERT_TRUE(s);
    Batch b;
    for (char c = 'a'; c <= 'z'; ++c) b.put(Column::meta, std::string(1, c), std::string("v") + c);
    b.put(Column::meta, std::string("c\x00", 2), "c0");  // just above "c"
    b.put(Column::meta, "", "empty key");
    ASSERT_EQ(commit_and_wait(*s, std::move(b)), "");

    EXPECT_EQ(scan_keys(*s, Column::meta, "c", "f"), (std::vector<std::string>{"c", std::string("c\x00", 2), "d", "e"}));
    // lower between keys, upper exclusive, bounds that are not keys
    EXPECT_EQ(scan_keys(*s, Column::meta, "cc", "ee"), (std::vector<std::string>{"d", "e"}));
    EXPECT_EQ(scan_keys(*s, Column::meta, std::string("c\x00", 2), "d"),
              (std::vector<std::string>{std::string("c\x00", 2)}));
    EXPECT_TRUE(scan_keys(*s, Column::meta, "f", "f").empty());
    EXPECT_TRUE(scan_keys(*s, Column::meta, "zz", "").empty());
    // An empty upper bound means "to the end"; an empty lower the start.
    EXPECT_EQ(scan_keys(*s, Column::meta, "x", ""), (std::vector<std::string>{"x", "y", "z"}));
    auto all = scan_keys(*s, Column::meta, "", "");
    EXPECT_EQ(all.size(), 28u);
    EXPECT_EQ(all.front(), "");
    EXPECT_TRUE(std::is_sorted(all.begin(), all.end()));
    // Values come with their keys.
    auto kv = scan_all(*s, Column::meta, "q", "s");
    ASSERT_EQ(kv.size(), 2u);
    EXPECT_EQ(kv[0], (std::pair<std::string, std::string>{"q", "vq"}));
    EXPECT_EQ(kv[1], (std::pair<std::string, std::string>{"r", "vr"}));
    // Other columns are not visited.
    EXPECT_TRUE(scan_keys(*s, Column::msgs, "", "").empty());
}

TEST_F(StoreTest, ScanStopsWhenTheVisitorSaysSo) {
    auto s = open();
    ASSERT_TRUE(s);
    Batch b;
    for (uint64_t i = 0; i < 100; ++i) b.put(Column::msgs, message_key(1, i), "x");
    ASSERT_EQ(commit_and_wait(*s, std::move(b)), "");
    int visits = 0;
    s->scan(Column::msgs, "", "", [&](std::string_view, std::string_view) { return ++visits < 3; });
    EXPECT_EQ(visits, 3);
}

// Many queues; delete some ranges (head prefixes, whole queues, holes); a scan
// of any queue's range returns exactly that queue's live keys, never a
// neighbour's. Checked while everything is in the memtable, again after
// enough writes to flush range tombstones into SST files, and after reopen.
TEST_F(StoreTest, ScanStaysInBoundsAfterRangeDeletesInMemtableSstAndAfterReopen) {
    StoreOptions o = options();
    o.write_buffer_bytes = 64 << 10;  // flush often: tombstones end up in SSTs
    auto s = open(o);
    ASSERT_TRUE(s);
    std::map<std::string, std::string> model;
    std::mt19937_64 rng(12345);
    const uint64_t queues = 12;
    std::vector<uint64_t> next_seq(queues + 2, 0), head(queues + 2, 0);

    auto check = [&](const Store& st, const char* when) {
        for (uint64_t q = 0; q <= queues + 1; ++q) {
            std::string lo = message_key(q, 0), hi = message_key(q + 1, 0);
            auto got = scan_keys(st, Column::msgs, lo, hi);
            ASSERT_EQ(got, keys_in(model, lo, hi)) << when << ": queue " << q;
            for (const auto& k : got) ASSERT_EQ(read_u64_key(k), q) << when << ": a key of another queue";
            // a sub-range from the middle of the queue
            if (next_seq[q] > 4) {
                std::string mlo = message_key(q, next_seq[q] / 3), mhi = message_key(q, next_seq[q] / 2);
                ASSERT_EQ(scan_keys(st, Column::msgs, mlo, mhi), keys_in(model, mlo, mhi)) << when << ": queue " << q;
            }
        }
        ASSERT_EQ(scan_keys(st, Column::msgs, "", ""), keys_in(model, "", "")) << when;
    };

    const std::string payload(512, 'p');
    for (int round = 0; round < 60; ++round) {
        Batch b;
        // appends to a few queues (1..queues; 0 and queues+1 stay empty as fences)
        for (int i = 0; i < 20; ++i) {
            uint64_t q = 1 + rng() % queues;
            std::string k = message_key(q, next_seq[q]++);
            b.put(Column::msgs, k, payload);
            model[k] = payload;
        }
        // an acked prefix of one queue goes with one range delete
        uint64_t q = 1 + rng() % queues;
        if (next_seq[q] > head[q]) {
            uint64_t new_head = head[q] + 1 + rng() % (next_seq[q] - head[q]);
            b.remove_range(Column::msgs, message_key(q, head[q]), message_key(q, new_head));
            model.erase(model.lower_bound(message_key(q, head[q])), model.lower_bound(message_key(q, new_head)));
            head[q] = new_head;
        }
        // sometimes a whole queue goes (queue.delete), its seqs restart later
        if (round % 17 == 16) {
            uint64_t dq = 1 + rng() % queues;
            b.remove_range(Column::msgs, message_key(dq, 0), message_key(dq + 1, 0));
            model.erase(model.lower_bound(message_key(dq, 0)), model.lower_bound(message_key(dq + 1, 0)));
            head[dq] = next_seq[dq];
        }
        ASSERT_EQ(commit_and_wait(*s, std::move(b)), "");
        if (round == 5) check(*s, "memtable");
    }
    check(*s, "after flushes");
    s.reset();
    s = open(o);
    ASSERT_TRUE(s);
    check(*s, "after reopen");
}

// ---- the commit thread -------------------------------------------------------

TEST_F(StoreTest, CommitCallbacksRunInCommitOrderOnTheCommitThread) {
    auto s = open();
    ASSERT_TRUE(s);
    constexpr int n = 200;
    std::mutex mu;
    std::condition_variable cv;
    std::vector<int> order;
    std::vector<std::thread::id> threads;
    std::vector<std::string> errors;
    // The callback of batch i must see batch i's data (written before "done").
    std::vector<bool> visible(n, false);
    for (int i = 0; i < n; ++i) {
        Batch b;
        b.put(Column::msgs, message_key(1, static_cast<uint64_t>(i)), std::to_string(i));
        if (i % 10 == 0) b.remove_range(Column::meta, "a", "b");  // mixed op kinds
        s->commit(std::move(b), [&, i](std::string err) {
            std::string v;
            bool seen = s->get(Column::msgs, message_key(1, static_cast<uint64_t>(i)), v) && v == std::to_string(i);
            std::lock_guard lk(mu);
            order.push_back(i);
            threads.push_back(std::this_thread::get_id());
            errors.push_back(std::move(err));
            visible[static_cast<size_t>(i)] = seen;
            cv.notify_all();
        });
    }
    {
        std::unique_lock lk(mu);
        ASSERT_TRUE(cv.wait_for(lk, 30s, [&] { return order.size() == n; })) << order.size() << " of " << n;
    }
    std::vector<int> want(n);
    for (int i = 0; i < n; ++i) want[static_cast<size_t>(i)] = i;
    EXPECT_EQ(order, want);
    for (const auto& e : errors) EXPECT_EQ(e, "");
    for (const auto& t : threads) {
        EXPECT_NE(t, std::this_thread::get_id()) << "callback ran on the caller's thread";
        EXPECT_EQ(t, threads.front()) << "callbacks ran on different threads";
    }
    for (int i = 0; i < n; ++i) EXPECT_TRUE(visible[static_cast<size_t>(i)]) << "batch " << i;
    // Sync mode: every committed batch was synced before its callback.
    auto st = s->stats();
    EXPECT_EQ(st.batches, static_cast<uint64_t>(n));
    EXPECT_GE(st.syncs, static_cast<uint64_t>(n));
    EXPECT_EQ(st.write_errors, 0u);
    EXPECT_GT(st.bytes_written, 0u);
}

TEST_F(StoreTest, CommitsFromSeveralThreadsAllLandAndEachThreadsOrderHolds) {
    auto s = open();
    ASSERT_TRUE(s);
    // Store's methods are for one owner thread; the broker serialises its
    // calls. Here commits come from one thread at a time under a lock.
    std::mutex call_mu, mu;
    std::condition_variable cv;
    std::map<int, std::vector<int>> seen;  // thread -> callback order of its batches
    int done = 0;
    constexpr int per_thread = 50, nthreads = 4;
    std::vector<std::thread> ts;
    for (int t = 0; t < nthreads; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                Batch b;
                b.put(Column::msgs, message_key(static_cast<uint64_t>(t), static_cast<uint64_t>(i)), "v");
                std::lock_guard call(call_mu);
                s->commit(std::move(b), [&, t, i](std::string err) {
                    EXPECT_EQ(err, "");
                    std::lock_guard lk(mu);
                    seen[t].push_back(i);
                    ++done;
                    cv.notify_all();
                });
            }
        });
    for (auto& t : ts) t.join();
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, 30s, [&] { return done == per_thread * nthreads; }));
    for (int t = 0; t < nthreads; ++t) {
        ASSERT_EQ(seen[t].size(), static_cast<size_t>(per_thread));
        EXPECT_TRUE(std::is_sorted(seen[t].begin(), seen[t].end())) << "thread " << t;
        EXPECT_EQ(scan_keys(*s, Column::msgs, message_key(static_cast<uint64_t>(t), 0),
                            message_key(static_cast<uint64_t>(t) + 1, 0))
                      .size(),
                  static_cast<size_t>(per_thread));
    }
}

TEST_F(StoreTest, EmptyBatchCommitsAndCallsBack) {
    auto s = open();
    ASSERT_TRUE(s);
    EXPECT_EQ(commit_and_wait(*s, Batch()), "");
    EXPECT_EQ(s->commit_now(Batch()), "");
}

TEST_F(StoreTest, CommitNowWritesAndSyncsOnTheCallingThread) {
    auto s = open();
    ASSERT_TRUE(s);
    auto before = s->stats();
    Batch b;
    b.put(Column::meta, "q/x", "queue");
    EXPECT_EQ(s->commit_now(std::move(b)), "");
    EXPECT_EQ(get(*s, Column::meta, "q/x"), "queue");  // readable at once: no callback to wait for
    auto after = s->stats();
    EXPECT_EQ(after.batches, before.batches + 1);
    EXPECT_EQ(after.syncs, before.syncs + 1);
    EXPECT_EQ(after.bytes_written, before.bytes_written + 3 + 5);
}

TEST_F(StoreTest, DestroyingTheStoreFinishesEveryQueuedCommit) {
    constexpr int n = 300;
    std::atomic<int> callbacks{0};
    std::atomic<int> failures{0};
    {
        auto s = open();
        ASSERT_TRUE(s);
        for (int i = 0; i < n; ++i) {
            Batch b;
            b.put(Column::msgs, message_key(3, static_cast<uint64_t>(i)), "v");
            s->commit(std::move(b), [&](std::string err) {
                if (!err.empty()) ++failures;
                ++callbacks;
            });
        }
        // no wait: the destructor must not drop what is queued
    }
    EXPECT_EQ(callbacks.load(), n) << "every commit gets its callback";
    EXPECT_EQ(failures.load(), 0);
    auto s = open();
    ASSERT_TRUE(s);
    EXPECT_EQ(scan_keys(*s, Column::msgs, message_key(3, 0), message_key(4, 0)).size(), static_cast<size_t>(n));
}

TEST_F(StoreTest, ReopenKeepsDataAndDeletes) {
    StoreOptions o = options();
    o.write_buffer_bytes = 64 << 10;
    {
        auto s = open(o);
        ASSERT_TRUE(s);
        Batch meta;
        meta.put(Column::meta, "e/amq.x", "exchange");
        meta.put(Column::meta, "q/orders", "queue");
        meta.put(Column::meta, "q/gone", "queue");
        ASSERT_EQ(s->commit_now(std::move(meta)), "");
        for (int round = 0; round < 10; ++round) {
            Batch b;
            for (int i = 0; i < 100; ++i)
                b.put(Column::msgs, message_key(1, static_cast<uint64_t>(round * 100 + i)), std::string(300, 'm'));
            ASSERT_EQ(commit_and_wait(*s, std::move(b)), "");
        }
        Batch del;
        del.remove(Column::meta, "q/gone");
        del.remove_range(Column::msgs, message_key(1, 0), message_key(1, 250));
        del.put(Column::bodies, message_key(0, 9), "shared body");
        ASSERT_EQ(commit_and_wait(*s, std::move(del)), "");
    }
    auto s = open(o);
    ASSERT_TRUE(s);
    EXPECT_EQ(get(*s, Column::meta, "e/amq.x"), "exchange");
    EXPECT_EQ(get(*s, Column::meta, "q/orders"), "queue");
    EXPECT_EQ(get(*s, Column::meta, "q/gone"), "<missing>");
    EXPECT_EQ(get(*s, Column::bodies, message_key(0, 9)), "shared body");
    auto keys = scan_keys(*s, Column::msgs, message_key(1, 0), message_key(2, 0));
    ASSERT_EQ(keys.size(), 750u);
    EXPECT_EQ(read_u64_key(keys.front(), 8), 250u);
    EXPECT_EQ(read_u64_key(keys.back(), 8), 999u);
}

TEST_F(StoreTest, OpenFailsWithAnErrorWhenThePathIsAFile) {
    fs::path file = dir_.path() / "not-a-dir";
    std::ofstream(file) << "x";
    StoreOptions o;
    o.path = file.string();
    std::string error;
    auto s = Store::open(o, error);
    EXPECT_EQ(s, nullptr);
    EXPECT_NE(error.find(file.string()), std::string::npos) << error;
}

TEST_F(StoreTest, AsyncModeCallsBackBeforeSyncingAndSyncsPeriodically) {
    StoreOptions o = options(Durability::async);
    o.sync_interval = 20ms;
    auto s = open(o);
    ASSERT_TRUE(s);
    std::mutex mu;
    std::condition_variable cv;
    std::vector<int> order;
    constexpr int n = 50;
    for (int i = 0; i < n; ++i) {
        Batch b;
        b.put(Column::msgs, message_key(5, static_cast<uint64_t>(i)), "v");
        s->commit(std::move(b), [&, i](std::string err) {
            EXPECT_EQ(err, "");
            std::lock_guard lk(mu);
            order.push_back(i);
            cv.notify_all();
        });
    }
    {
        std::unique_lock lk(mu);
        ASSERT_TRUE(cv.wait_for(lk, 10s, [&] { return order.size() == n; }));
    }
    std::vector<int> want(n);
    for (int i = 0; i < n; ++i) want[static_cast<size_t>(i)] = i;
    EXPECT_EQ(order, want);
    EXPECT_EQ(scan_keys(*s, Column::msgs, message_key(5, 0), message_key(6, 0)).size(), static_cast<size_t>(n));
    // Far fewer syncs than batches, but the timer syncs what was written.
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (s->stats().syncs == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    auto st = s->stats();
    EXPECT_GE(st.syncs, 1u) << "no periodic sync within 10 s (interval 20 ms)";
    EXPECT_LT(st.syncs, static_cast<uint64_t>(n));
    EXPECT_EQ(st.batches, static_cast<uint64_t>(n));
    // ... and reopen (a clean close) keeps it.
    s.reset();
    s = open(o);
    ASSERT_TRUE(s);
    EXPECT_EQ(scan_keys(*s, Column::msgs, message_key(5, 0), message_key(6, 0)).size(), static_cast<size_t>(n));
}

TEST_F(StoreTest, AsyncModeWithAnIdleStoreDoesNotSyncForNothing) {
    StoreOptions o = options(Durability::async);
    o.sync_interval = 5ms;
    auto s = open(o);
    ASSERT_TRUE(s);
    ASSERT_EQ(commit_and_wait(*s, [] {
                  Batch b;
                  b.put(Column::meta, "k", "v");
                  return b;
              }()),
              "");
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (s->stats().syncs == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    uint64_t syncs = s->stats().syncs;
    ASSERT_EQ(syncs, 1u);
    // Many intervals with nothing written: no more syncs. (A bound wait,
    // not synchronisation: we check that nothing happens.)
    std::this_thread::sleep_for(100ms);
    EXPECT_EQ(s->stats().syncs, syncs);
}

// store.hpp: "Bytes RocksDB holds on disk (SST + WAL), for metrics."
// Data that is only in the WAL (not yet flushed to an SST) is on disk.
TEST_F(StoreTest, DiskBytesCountsTheWal) {
    auto s = open();
    ASSERT_TRUE(s);
    Batch b;
    for (int i = 0; i < 256; ++i) b.put(Column::msgs, message_key(1, static_cast<uint64_t>(i)), std::string(4096, 'w'));
    ASSERT_EQ(commit_and_wait(*s, std::move(b)), "");
    uint64_t wal = 0;
    for (const auto& e : fs::directory_iterator(options().path))
        if (e.path().extension() == ".log") wal += e.file_size();
    ASSERT_GE(wal, 1u << 20) << "the megabyte is in the WAL";
    // Store::disk_bytes() counts the WAL files too (it once summed SST only).
    EXPECT_GE(s->disk_bytes(), wal);
}

// Store::reclaim: a drained range is compacted when table files hold it
// (the disk space comes back without a restart), and left alone when it
// lived and died in the memtable — forcing a flush for that cost a table
// file, a WAL and their syncs every few MiB of a consumer that keeps up.
TEST_F(StoreTest, ReclaimCompactsWhatTableFilesHoldAndSkipsWhatDiedInTheMemtable) {
    StoreOptions o = options();
    o.write_buffer_bytes = 1u << 20;
    auto s = open(o);
    ASSERT_TRUE(s);
    auto sst_bytes = [&] {
        uint64_t n = 0;
        for (const auto& e : fs::directory_iterator(o.path))
            if (e.path().extension() == ".sst") n += e.file_size();
        return n;
    };
    auto wait_until = [](const std::function<bool()>& cond) {
        auto deadline = std::chrono::steady_clock::now() + 20s;
        while (!cond() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
        return cond();
    };
    const std::string chunk(4096, 'c');
    auto fill = [&](uint64_t queue, int chunks) {
        for (int i = 0; i < chunks; i += 16) {
            Batch b;
            for (int k = i; k < i + 16 && k < chunks; ++k) b.put(Column::msgs, message_key(queue, static_cast<uint64_t>(k)), chunk);
            ASSERT_EQ(commit_and_wait(*s, std::move(b)), "");
        }
    };
    auto drop = [&](uint64_t queue) {
        Batch b;
        b.remove_range(Column::msgs, message_key(queue, 0), message_key(queue + 1, 0));
        ASSERT_EQ(commit_and_wait(*s, std::move(b)), "");
        s->reclaim(message_key(queue, 0), message_key(queue + 1, 0));
    };

    // 256 KiB that never left the memtable: nothing to compact, no flush.
    fill(1, 64);
    ASSERT_EQ(sst_bytes(), 0u);
    drop(1);
    ASSERT_TRUE(wait_until([&] { return s->reclaims_skipped() + s->reclaimed() == 1; }));
    EXPECT_EQ(s->reclaims_skipped(), 1u);
    EXPECT_EQ(s->reclaimed(), 0u);
    EXPECT_EQ(sst_bytes(), 0u) << "a memtable flush was forced for data that died in it";

    // 8 MiB, most of it flushed to table files by the 1 MiB memtables.
    fill(2, 2048);
    ASSERT_TRUE(wait_until([&] { return sst_bytes() >= (6u << 20); })) << sst_bytes();
    drop(2);
    ASSERT_TRUE(wait_until([&] { return s->reclaimed() == 1; }));
    EXPECT_EQ(s->reclaims_skipped(), 1u);
    EXPECT_LT(sst_bytes(), 1u << 20) << "the drained range's table files were not compacted away";
    EXPECT_TRUE(scan_keys(*s, Column::msgs, message_key(2, 0), message_key(3, 0)).empty());
}

}  // namespace

namespace sluice::storage {
namespace {

// The stream a replica applies (issue 12, item 9): every committed batch,
// in commit order, with increasing sequences; applying them in order to an
// empty store gives the same contents, whichever path committed them.
TEST(BatchStream, ApplyingTheStreamToAnotherStoreReproducesIt) {
    TempDir a_dir, b_dir;
    std::string error;
    StoreOptions ao;
    ao.path = (a_dir.path() / "db").string();
    auto a = Store::open(ao, error);
    ASSERT_TRUE(a) << error;
    std::mutex mu;
    std::vector<std::pair<uint64_t, std::string>> stream;
    a->set_batch_listener([&](uint64_t seq, std::string_view data) {
        std::lock_guard lk(mu);
        stream.emplace_back(seq, std::string(data));
    });
    for (int i = 0; i < 20; ++i) {
        Batch b = a->new_batch();
        b.put(Column::meta, "k" + std::to_string(i), "v" + std::to_string(i));
        b.put(Column::msgs, message_key(1, static_cast<uint64_t>(i)), std::string(100, 'm'));
        if (i % 5 == 4) b.remove_range(Column::msgs, message_key(1, 0), message_key(1, static_cast<uint64_t>(i) - 1));
        if (i % 3 == 2) b.remove(Column::meta, "k" + std::to_string(i - 1));
        if (i % 2) {
            std::mutex dmu;
            std::condition_variable cv;
            bool done = false;
            a->commit(std::move(b), [&](std::string) {
                std::lock_guard lk(dmu);
                done = true;
                cv.notify_all();
            });
            std::unique_lock lk(dmu);
            cv.wait(lk, [&] { return done; });
        } else {
            ASSERT_EQ(a->commit_now(std::move(b)), "");
        }
    }
    a->wait_idle();
    ASSERT_EQ(stream.size(), 20u);
    for (size_t i = 1; i < stream.size(); ++i) EXPECT_GT(stream[i].first, stream[i - 1].first);
    EXPECT_LE(stream.back().first, a->last_sequence());

    StoreOptions bo;
    bo.path = (b_dir.path() / "db").string();
    auto b = Store::open(bo, error);
    ASSERT_TRUE(b) << error;
    for (const auto& [seq, data] : stream) ASSERT_EQ(b->apply(data), "") << "batch " << seq;
    for (Column c : {Column::meta, Column::msgs, Column::bodies}) {
        std::vector<std::pair<std::string, std::string>> in_a, in_b;
        a->scan(c, "", "", [&](std::string_view k, std::string_view v) { return in_a.emplace_back(k, v), true; });
        b->scan(c, "", "", [&](std::string_view k, std::string_view v) { return in_b.emplace_back(k, v), true; });
        EXPECT_EQ(in_a, in_b) << "column " << int(c);
    }
    EXPECT_EQ(b->last_sequence(), a->last_sequence());
}

}  // namespace
TEST(Crc32c, MatchesTheStandardCheckValuesInPiecesToo) {
    using sluice::storage::crc32c;
    EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // the CRC catalogue's check value
    const std::string zeros(32, '\0'), ones(32, '\xff');
    EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720, B.4
    EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62A8AB43u);
    std::string text(1000, 'x');
    for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>(i * 7 + 3);
    for (size_t cut : {0, 1, 7, 8, 9, 500, 999})
        EXPECT_EQ(crc32c(text.data() + cut, text.size() - cut, crc32c(text.data(), cut)), crc32c(text.data(), text.size()));
}

// RocksDB's WAL records and table blocks carry the CRC that sluiced's wrapped
// Extend computes: it must be RocksDB's own, bit for bit, or a store written
// by sluiced would not open anywhere else (nor a store written elsewhere here).
TEST(Crc32c, TheWrappedRocksDbChecksumIsRocksDbsOwnOnEveryShape) {
    EXPECT_EQ(rocksdb::crc32c::Extend(0, "123456789", 9), 0xE3069283u);
    EXPECT_EQ(sluice::storage::crc32c_portable("123456789", 9), 0xE3069283u);
    std::mt19937 rng(12);
    std::string buf(70000, '\0');
    for (auto& c : buf) c = static_cast<char>(rng());
    for (int i = 0; i < 2000; ++i) {
        const size_t at = rng() % 64, n = i < 100 ? static_cast<size_t>(i) : rng() % (buf.size() - at);
        const uint32_t init = i % 3 == 0 ? 0 : static_cast<uint32_t>(rng());
        const uint32_t theirs = __real__ZN7rocksdb6crc32c6ExtendEjPKcm(init, buf.data() + at, n);
        ASSERT_EQ(rocksdb::crc32c::Extend(init, buf.data() + at, n), theirs)
            << "offset " << at << ", length " << n << ", initial " << init;
        // and the path a CPU without SSE 4.2 takes
        ASSERT_EQ(sluice::storage::crc32c_portable(buf.data() + at, n, init), theirs)
            << "portable: offset " << at << ", length " << n << ", initial " << init;
    }
}

}  // namespace sluice::storage
