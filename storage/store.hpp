// The durable store: RocksDB behind a byte-level API (keys, values, batches),
// with a group-commit thread. It knows nothing of AMQP or of queues.
//
// Column families:
//   meta    vhosts, exchanges, queues, bindings, per-queue marks
//   msgs    queue entries, key = queue id (u64 BE) | seq (u64 BE)
//   bodies  message bodies shared by several queue entries, key = body id
//
// When bytes are safe: a Batch is only in memory until commit(). commit()
// hands it to the commit thread, which writes it (WAL + memtable) and, in
// `sync` mode, syncs the WAL (and, for a new WAL file, its directory) before
// it reports success. Only then may the caller tell a client "done". In
// `async` mode the thread syncs the WAL every sync_interval instead: a power
// loss may drop up to that interval of acknowledged writes.
//
// Threads: Store's methods may be called from one owner thread (the broker
// thread). The commit callback runs on the commit thread, and
// read_off_thread() jobs on the read thread (get() and scan() are safe
// there); the owner must hand their results back to its own thread. Batches are written in the order
// they were committed: one stream of batches with increasing sequence
// numbers (a log that a follower could replay).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace rocksdb {
class Env;
}

namespace sluice::storage {

enum class Column : uint8_t { meta = 0, msgs = 1, bodies = 2 };

enum class Durability : uint8_t { sync, async };

struct StoreOptions {
    std::string path;
    Durability durability = Durability::sync;
    std::chrono::milliseconds sync_interval{200};  // async mode
    size_t write_buffer_bytes = 8u << 20;           // per memtable; all memtables together: twice this
    size_t block_cache_bytes = 16u << 20;
    // Queue logs' chunks keep their bytes in segment files beside the
    // database (storage/segment_files.hpp) rather than in it. Off in
    // cluster mode: replicas apply the leader's batches, which must then
    // carry the bytes themselves.
    bool segments = true;
    uint64_t segment_file_bytes = 16u << 20;
    // Tests only: the rocksdb::Env to open the database with (e.g. one over a
    // FileSystem that simulates power loss); null = the default. Not owned.
    rocksdb::Env* env = nullptr;
};

class SegmentFiles;

// A set of writes applied atomically. A batch from Store::new_batch() encodes
// each write straight into RocksDB's batch format (one copy); a default-
// constructed one records the writes and converts them at commit.
class Batch {
public:
    Batch();
    ~Batch();
    Batch(Batch&&) noexcept;
    Batch& operator=(Batch&&) noexcept;

    void put(Column c, std::string_view key, std::string_view value);
    // The value is the concatenation of `parts` (no intermediate copy).
    void put(Column c, std::string_view key, std::initializer_list<std::string_view> parts);
    void remove(Column c, std::string_view key);
    // Removes every key in [begin, end).
    void remove_range(Column c, std::string_view begin, std::string_view end);
    // A queue log's chunk: with the store's segment files, `bytes` go to a
    // segment file (written and synced before the batch) and `key` gets a
    // pointer to them; returns the file (for SegmentFiles::unref once the
    // pointer is deleted). Otherwise a plain put, returning 0.
    uint32_t put_chunk(Column c, std::string_view key, std::string_view bytes);
    bool empty() const;
    size_t bytes() const;
    size_t count() const;

private:
    friend class Store;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Histogram bucket bounds for StoreStats (upper bounds, inclusive; each
// histogram has one more bucket, for everything above the last bound).
inline constexpr std::array<uint64_t, 16> kLatencyBucketMicros = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 10000000};
inline constexpr std::array<uint64_t, 13> kBatchWriteBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384};

// Per-bucket counts (not cumulative) of values recorded on the commit thread.
template <size_t N>
struct BucketCounts {
    std::array<uint64_t, N + 1> counts{};
    uint64_t sum = 0;
    void record(const std::array<uint64_t, N>& bounds, uint64_t value) {
        size_t i = 0;
        while (i < N && value > bounds[i]) ++i;
        ++counts[i];
        sum += value;
    }
};

struct StoreStats {
    uint64_t batches = 0;
    uint64_t syncs = 0;
    uint64_t bytes_written = 0;
    uint64_t write_errors = 0;
    uint64_t rewritten_batches = 0;  // failed batches written again ahead of a later one
    uint64_t last_sync_micros = 0;
    uint64_t total_sync_micros = 0;
    // WAL syncs (a sync-mode write, or the async mode's periodic SyncWAL), µs.
    BucketCounts<kLatencyBucketMicros.size()> sync_micros;
    // commit() to its callback: waiting for the commit thread, write, sync, µs.
    BucketCounts<kLatencyBucketMicros.size()> commit_micros;
    // Writes (puts, deletes, range deletes) per committed batch: group commit's size.
    BucketCounts<kBatchWriteBuckets.size()> batch_writes;
};

class Store {
public:
    // Opens (creating if needed). On failure returns null and sets `error`.
    // On failure, `io_error` (if given) tells an I/O error (a full disk, EIO:
    // a later start may succeed) from the rest (a bad path, a damaged
    // database, options).
    static std::unique_ptr<Store> open(const StoreOptions& options, std::string& error, bool* io_error = nullptr);
    ~Store();

    // An empty batch bound to this store (the fast kind).
    Batch new_batch() const;

    // Group commit: the commit thread writes `batch` and syncs (per the
    // durability mode), then calls done("" or an error) on that thread.
    //
    // A failed write or sync: done() gets the error, and the batch's fate on
    // disk is unknown (a failed fsync may have reached the disk or not). The
    // store closes the database and reopens it before the next commit (on
    // the commit thread: the caller never waits for it), and writes the
    // failed batches again, in order,
    // ahead of that commit's batch; its success means every one of them is
    // synced. An empty batch then still writes them. If the reopen fails the
    // store is down(): reads find nothing, and the owner must stop serving.
    //
    // (Re-writing is sound because the broker's writes are absolute — whole
    // values and deletes — so a batch applied twice equals one applied once.)
    void commit(Batch batch, std::function<void(std::string error)> done);
    // The database could not be reopened after a failed write.
    bool down() const;
    // Writes and syncs on the calling thread (start-up, tests).
    std::string commit_now(Batch batch);
    // Blocks until every commit handed to commit() is written and its
    // callback has returned, and every read_off_thread() job has run.
    void wait_idle();

    // Runs `job` on the store's read thread (one thread; jobs in order), so
    // that the owner's thread never waits on the disk. The job may call
    // get() and scan(); a reopen waits for the job in progress. Jobs still
    // queued when the store is destroyed run first.
    void read_off_thread(std::function<void()> job);

    // The ordered stream of committed batches — the unit a replica applies.
    // After each batch is written (and, in sync mode, synced), the listener
    // gets its sequence (RocksDB's sequence number of its first write:
    // monotonic, kept across restarts) and its bytes (RocksDB's WriteBatch
    // format), on the thread that committed it, before the commit's
    // callback runs. Set it before the first commit.
    using BatchListener = std::function<void(uint64_t sequence, std::string_view data)>;
    void set_batch_listener(BatchListener listener);
    // A replica's side: writes a batch from another store's stream, synced
    // when `sync` (several applied unsynced and the last synced are all
    // durable together). Returns "" or an error.
    std::string apply(std::string_view data, bool sync = true);
    // The same, taking the bytes over (no copy).
    std::string apply(std::string&& data, bool sync = true);
    // Syncs what apply() wrote unsynced. Returns "" or an error.
    std::string sync();
    // The sequence of the last write (0 for an empty store).
    uint64_t last_sequence() const;

    // ---- The replicated log (cluster mode, net/replication.hpp) ----
    // Every batch a leading store writes carries its place in the log: the
    // leader's epoch and an index one past the last batch's, stored by a put
    // in that same batch (RocksDB's `default` column, which nothing else
    // uses). A replica that applies the batch therefore holds exactly the
    // position of what it has, across crashes and snapshots.
    struct LogPosition {
        uint64_t epoch = 0;
        uint64_t index = 0;
        bool operator==(const LogPosition&) const = default;
    };
    LogPosition log_position() const;
    // Epoch → the index of its first batch, for every epoch this log has
    // seen (each leader writes its entry as the first batch of its epoch):
    // a replica's position is on the leader's history if no later epoch
    // began at or before the replica's index.
    std::map<uint64_t, uint64_t> epoch_history() const;
    // Makes this store the leader's for `epoch` (greater than any in its
    // history): writes and syncs the epoch's history entry now, and from
    // then on every commit's callback waits until release_through() covers
    // its batch (every in-sync replica has synced it). Call before the
    // first commit of the epoch, on the owner's thread with the commit
    // thread idle.
    std::string lead(uint64_t epoch);
    // The log listener: every batch written while leading, with its
    // position and bytes, on the writing thread, before its callback is
    // held (commit_now's batches too).
    using LogListener = std::function<void(LogPosition position, std::string_view data)>;
    void set_log_listener(LogListener listener);
    // Runs (on the calling thread, in commit order) the held callbacks of
    // batches up to `index`. Any thread.
    void release_through(uint64_t index);
    // Stops holding: callbacks still held get `error` (their fate is
    // unknown: a new leader decides), later commits fail with it. For a
    // leader that lost its lease.
    void fail_held(const std::string& error);
    // How long the write (or sync) in progress has taken so far; zero when
    // the commit thread is idle. A leader whose disk stalls must lose its
    // lease (it can confirm nothing).
    std::chrono::milliseconds write_stalled_for() const;
    // A consistent copy of the database in `dir` (a RocksDB checkpoint: hard
    // links to the table files, memtables flushed first), for a replica that
    // is too far behind or diverged. Returns "" or an error.
    std::string checkpoint(const std::string& dir);

    // Visits keys in [lower, upper) in order until f returns false.
    void scan(Column c, std::string_view lower, std::string_view upper,
              const std::function<bool(std::string_view key, std::string_view value)>& f) const;
    // `fill_cache` false: a value read once (a message going back to
    // memory) does not push what is read often out of the block cache.
    bool get(Column c, std::string_view key, std::string& value, bool fill_cache = true) const;
    // A chunk value read from `msgs`: a segment pointer is replaced by the
    // bytes it names (checked), and `file` (if given) names its segment file
    // (0 for a value that is not a pointer, which stays unchanged). False,
    // with `error`, if the bytes are missing or damaged.
    bool resolve_chunk(std::string& value, std::string& error, uint32_t* file = nullptr) const;
    // The segment files (null when the store has none: cluster mode, or
    // StoreOptions::segments off).
    SegmentFiles* segments() const;
    // Unlinks segment files nothing points at any more, on the store's
    // background thread. Returns at once.
    void collect_segments();
    // The last key in [lower, at] and its value (one seek backwards): the
    // record holding a position when keys name where records start.
    bool floor(Column c, std::string_view lower, std::string_view at, std::string& key, std::string& value) const;

    // The data in [begin, end) of `msgs` is deleted (a queue deleted or
    // drained): a background thread flushes the memtable and compacts that
    // range, so the disk space comes back without a restart — if table
    // files hold at least a memtable's worth of the range (what was deleted
    // in the memtable goes with its flush). Returns at once.
    void reclaim(std::string_view begin, std::string_view end);
    // Ranges reclaim() has compacted, and those it found too small in
    // table files to compact (tests, metrics).
    uint64_t reclaimed() const;
    uint64_t reclaims_skipped() const;

    // The directory the store was opened in.
    const std::string& path() const;

    StoreStats stats() const;
    // Bytes RocksDB holds on disk (SST + WAL) and the segment files, for metrics.
    uint64_t disk_bytes() const;

private:
    struct Impl;
    explicit Store(std::unique_ptr<Impl> impl);
    // After a failed write: waits for the commit thread, then closes and
    // reopens the database (see commit()).
    void reopen_after_failure();
    std::unique_ptr<Impl> impl_;
};

// Where a store at `store_path` keeps its segment files, and whether it has any.
std::string segments_dir(const std::string& store_path);
bool has_segment_files(const std::string& store_path);

// Big-endian integers: u64 keys sort numerically, and every record's
// fixed-width fields use the same order. One append (or load) each, not a
// byte at a time: they run for every message that pages out or back.
inline void append_u64_key(std::string& out, uint64_t v) {
    char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (56 - 8 * i));  // compiles to bswap + store
    out.append(b, 8);
}
inline void append_u32_be(std::string& out, uint32_t v) {
    char b[4];
    for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(v >> (24 - 8 * i));
    out.append(b, 4);
}
// Reads 8 bytes at `offset`; a key that ends sooner reads as the value of
// the bytes it has.
uint64_t read_short_u64_key(std::string_view key, size_t offset);
inline uint64_t read_u64_key(std::string_view key, size_t offset = 0) {
    if (offset > key.size() || key.size() - offset < 8) return read_short_u64_key(key, offset);
    uint64_t v = 0;
    for (size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(key[offset + i]);  // a bswap'd load
    return v;
}
// Reads 4 bytes at `offset`; 0 if `in` ends sooner.
inline uint32_t read_u32_be(std::string_view in, size_t offset) {
    if (offset > in.size() || in.size() - offset < 4) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(in[offset + static_cast<size_t>(i)]);
    return v;
}
// queue id | seq, the key of a queue entry in `msgs`.
std::string message_key(uint64_t queue_id, uint64_t seq);
// The same key without a heap allocation.
struct MessageKey {
    char bytes[16];
    operator std::string_view() const { return {bytes, sizeof bytes}; }
};
MessageKey message_key_of(uint64_t queue_id, uint64_t seq);

}  // namespace sluice::storage
