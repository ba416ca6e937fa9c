#include "storage/store.hpp"

#include "storage/segment_files.hpp"

#include <pthread.h>
#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/file_system.h>
#include <rocksdb/transaction_log.h>
#include <rocksdb/perf_level.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/utilities/table_properties_collectors.h>
#include <rocksdb/write_batch.h>

#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

namespace sluice::storage {

uint64_t read_short_u64_key(std::string_view key, size_t offset) {
    uint64_t v = 0;
    for (size_t i = 0; i < 8 && offset + i < key.size(); ++i) v = (v << 8) | static_cast<uint8_t>(key[offset + i]);
    return v;
}

std::string message_key(uint64_t queue_id, uint64_t seq) {
    std::string k;
    k.reserve(16);
    append_u64_key(k, queue_id);
    append_u64_key(k, seq);
    return k;
}

namespace {

// The replicated log's records, in RocksDB's default column: the position
// of the last batch (epoch | index) and one history entry per epoch
// ('e' | epoch → its first index).
constexpr std::string_view kLogPositionKey = "p";
constexpr char kEpochPrefix = 'e';

// RocksDB's info log goes to stderr (warnings and worse), not to a LOG file
// on the data volume: that file fails first when the disk is full, and
// Debian's RocksDB (built with asserts) then aborts when it is closed.
class StderrLogger final : public rocksdb::Logger {
public:
    StderrLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL) {}
    using rocksdb::Logger::Logv;
    void Logv(const char* format, va_list ap) override {
        char buf[1024];
        vsnprintf(buf, sizeof buf, format, ap);
        fprintf(stderr, "sluiced: rocksdb: %s\n", buf);
    }
};

}  // namespace

MessageKey message_key_of(uint64_t queue_id, uint64_t seq) {
    MessageKey k;
    for (int i = 0; i < 8; ++i) {
        k.bytes[i] = static_cast<char>(queue_id >> (56 - 8 * i));
        k.bytes[8 + i] = static_cast<char>(seq >> (56 - 8 * i));
    }
    return k;
}

// Batch -------------------------------------------------------------------

struct Batch::Impl {
    // Bound batches (Store::new_batch) write into `wb` at once.
    const std::vector<rocksdb::ColumnFamilyHandle*>* columns = nullptr;
    rocksdb::WriteBatch wb;
    // Standalone batches record the writes until they are committed.
    struct Op {
        enum Kind : uint8_t { put, remove, range } kind;
        Column column;
        std::string a, b;
    };
    std::vector<Op> ops;
    size_t bytes = 0;
    size_t count = 0;
    uint64_t log_index = 0;  // its place in the replicated log, once given one
    // Chunks whose bytes go to segment files (Batch::put_chunk): written and
    // synced before the batch (again, if the batch is written again).
    SegmentFiles* segments = nullptr;
    struct ChunkWrite {
        SegmentPointer place;
        std::string bytes;
    };
    std::vector<ChunkWrite> chunk_writes;

    rocksdb::ColumnFamilyHandle* cf(Column c) const { return (*columns)[static_cast<size_t>(c)]; }
    // Bound to a store whose database is open (not between a failed write
    // and a successful reopen): write into `wb` now, else record the op.
    bool live() const { return columns && !columns->empty(); }
};

Batch::Batch() : impl_(std::make_unique<Impl>()) {}
Batch::~Batch() = default;
Batch::Batch(Batch&&) noexcept = default;
Batch& Batch::operator=(Batch&&) noexcept = default;

static rocksdb::Slice slice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

void Batch::put(Column c, std::string_view key, std::string_view value) {
    impl_->bytes += key.size() + value.size();
    ++impl_->count;
    if (impl_->live()) impl_->wb.Put(impl_->cf(c), slice(key), slice(value));
    else impl_->ops.push_back({Impl::Op::put, c, std::string(key), std::string(value)});
}
void Batch::put(Column c, std::string_view key, std::initializer_list<std::string_view> parts) {
    if (!impl_->live()) {
        std::string v;
        for (auto p : parts) v.append(p);
        put(c, key, v);
        return;
    }
    rocksdb::Slice value_parts[8];
    int n = 0;
    for (auto p : parts) {
        if (n < 8) value_parts[n++] = slice(p);
        impl_->bytes += p.size();
    }
    rocksdb::Slice k = slice(key);
    impl_->bytes += key.size();
    ++impl_->count;
    impl_->wb.Put(impl_->cf(c), rocksdb::SliceParts(&k, 1), rocksdb::SliceParts(value_parts, n));
}
void Batch::remove(Column c, std::string_view key) {
    impl_->bytes += key.size();
    ++impl_->count;
    if (impl_->live()) impl_->wb.Delete(impl_->cf(c), slice(key));
    else impl_->ops.push_back({Impl::Op::remove, c, std::string(key), {}});
}
void Batch::remove_range(Column c, std::string_view begin, std::string_view end) {
    impl_->bytes += begin.size() + end.size();
    ++impl_->count;
    if (impl_->live()) impl_->wb.DeleteRange(impl_->cf(c), slice(begin), slice(end));
    else impl_->ops.push_back({Impl::Op::range, c, std::string(begin), std::string(end)});
}
uint32_t Batch::put_chunk(Column c, std::string_view key, std::string_view bytes) {
    if (!impl_->segments || !impl_->live()) {
        put(c, key, bytes);
        return 0;
    }
    SegmentPointer p = impl_->segments->reserve(bytes);
    const std::string pointer = encode_segment_pointer(p);
    impl_->bytes += key.size() + bytes.size();
    ++impl_->count;
    impl_->wb.Put(impl_->cf(c), slice(key), slice(pointer));
    impl_->chunk_writes.push_back({p, std::string(bytes)});
    return p.file;
}

bool Batch::empty() const { return impl_->count == 0; }
size_t Batch::bytes() const { return impl_->bytes; }
size_t Batch::count() const { return impl_->count; }

// Store -------------------------------------------------------------------

struct Store::Impl {
    StoreOptions options;
    std::unique_ptr<rocksdb::DB> db;
    std::vector<rocksdb::ColumnFamilyHandle*> columns;  // indexed by Column
    std::unique_ptr<SegmentFiles> segments;  // null: chunks stay in the database
    // Batches get segment pointers only while nothing replicates them (no
    // batch or log listener, not leading): set on the owner's thread.
    std::atomic<bool> segments_in_use{false};

    std::mutex mu;
    std::condition_variable cv;
    struct Job {
        Batch batch;
        std::function<void(std::string)> done;
        std::chrono::steady_clock::time_point queued;
    };
    std::deque<Job> jobs;
    bool busy = false;  // the commit thread is writing a job or running its callback
    std::condition_variable idle_cv;
    bool stopping = false;
    std::thread thread;
    // Space reclamation (reclaim()): ranges whose data was deleted, compacted
    // away on their own thread so the commit thread never waits for it.
    std::deque<std::pair<std::string, std::string>> reclaims;  // guarded by mu
    std::condition_variable reclaim_cv;
    std::thread reclaim_thread;
    uint64_t reclaimed = 0;  // ranges compacted; guarded by mu
    uint64_t reclaims_skipped = 0;  // ranges with too little in table files to compact; guarded by mu
    bool reclaiming = false;  // the reclaim thread is using the database; guarded by mu
    bool collect_pending = false;  // collect_segments() asked; guarded by mu
    // Reads off the owner's thread (Store::read_off_thread): one thread, jobs
    // in order. Guarded by mu; idle_cv tells when it runs out of work.
    std::deque<std::function<void()>> reads;
    std::condition_variable read_cv;
    std::thread read_thread;
    bool reading = false;  // the read thread is running a job
    bool reopening = false;  // the owner is closing and reopening the database
    StoreStats stats;  // guarded by mu
    Store::BatchListener listener;  // set before the first commit; called under mu
    bool unsynced = false;  // async mode: writes since the last SyncWAL
    bool needs_resume = false;  // a write failed; guarded by mu
    bool down = false;          // a reopen after a failed write failed; guarded by mu
    // Batches whose write or sync failed, oldest first. Their fate on disk is unknown (a failed fsync may or may not
    // have reached the disk, and the page cache may still write it later:
    // PostgreSQL's "fsyncgate"), so each is written again, in order, ahead
    // of the next batch, until one sync covers them all. Every write the
    // broker makes is absolute (a put of a whole value, a delete), so
    // writing a batch twice is the same as writing it once, and the order
    // keeps a later batch's writes on top. Commit thread only (and
    // commit_now's caller, with the commit thread idle).
    std::vector<Batch> redo;
    rocksdb::DBOptions db_options;                          // kept for reopen()
    // `db` and `columns` change only in reopen(), on the commit thread (or
    // on the owner's with the commit thread idle), which holds this
    // exclusively; readers on other threads hold it shared. (Shared locks
    // nest — a scan's callback may get() — as glibc's reader-preferring
    // rwlock allows.)
    mutable std::shared_mutex db_mu;
    std::vector<rocksdb::ColumnFamilyDescriptor> cf_descriptors;

    // The replicated log (Store::lead). `leading`, `epoch` and `last_index`
    // change on the owner's thread with the commit thread idle, and are read
    // by the commit thread.
    bool leading = false;
    uint64_t epoch = 0;
    uint64_t last_index = 0;
    Store::LogListener log_listener;
    bool writing = false;  // guarded by mu: a write is in progress since write_started
    std::chrono::steady_clock::time_point write_started;
    // Callbacks held until the replicas have the batch: release_mu orders
    // the releasers (callbacks run in commit order), gate_mu guards the rest.
    struct Held {
        uint64_t index;
        std::function<void(std::string)> done;
    };
    std::mutex release_mu, gate_mu;
    std::deque<Held> held;
    uint64_t released = 0;
    std::string held_error;  // fail_held(): every callback gets it

    rocksdb::ColumnFamilyHandle* log_column() const { return columns[3]; }  // RocksDB's default column

    void hold(uint64_t index, std::function<void(std::string)> done) {
        std::lock_guard order(release_mu);
        std::string error;
        {
            std::lock_guard lk(gate_mu);
            if (held_error.empty() && index > released) {
                held.push_back({index, std::move(done)});
                return;
            }
            error = held_error;
        }
        done(error);
    }

    void release(uint64_t index) {
        std::lock_guard order(release_mu);
        std::deque<Held> ready;
        {
            std::lock_guard lk(gate_mu);
            if (index > released) released = index;
            while (!held.empty() && held.front().index <= released) {
                ready.push_back(std::move(held.front()));
                held.pop_front();
            }
        }
        for (auto& h : ready) h.done("");
    }

    // After a failed write (a full disk) RocksDB's Resume() keeps the failed
    // WAL writer, and the next append aborts in Debian's assert-enabled
    // build. Closing and reopening the database starts a new WAL; recovery
    // replays the old one up to its last complete record. Runs on the commit
    // thread before the next batch is written (so the owner's event loop
    // never waits for it), or on the owner's thread with the commit thread
    // idle (commit_now); the reclaim and read threads are let finish and
    // held off, readers elsewhere wait on db_mu (batches record column ids,
    // not handles).
    std::string reopen() {
        {
            std::unique_lock lk(mu);
            reclaims.clear();
            reclaim_cv.wait(lk, [&] { return !reclaiming; });
            // Reads queued behind the reopen wait for it, then find the new
            // database (or none).
            reopening = true;
            idle_cv.wait(lk, [&] { return !reading; });
        }
        struct Resume {
            Impl& impl;
            ~Resume() {
                {
                    std::lock_guard lk(impl.mu);
                    impl.reopening = false;
                }
                impl.read_cv.notify_all();
            }
        } resume{*this};
        std::unique_lock handles_lk(db_mu);
        if (db) {
            for (auto* h : columns) db->DestroyColumnFamilyHandle(h);
            columns.clear();
            db->Close();
            db.reset();
        }
        rocksdb::DB* raw = nullptr;
        std::vector<rocksdb::ColumnFamilyHandle*> handles;
        rocksdb::Status st = rocksdb::DB::Open(db_options, options.path, cf_descriptors, &handles, &raw);
        if (!st.ok()) {
            std::lock_guard lk(mu);
            down = true;
            return st.ToString();
        }
        db.reset(raw);
        columns = handles;
        std::lock_guard lk(mu);
        needs_resume = false;
        down = false;
        return "";
    }

    void run_reclaims() {
        std::unique_lock lk(mu);
        for (;;) {
            reclaim_cv.wait(lk, [&] { return stopping || collect_pending || (!reclaims.empty() && !reclaiming); });
            if (stopping) return;
            if (collect_pending) {
                collect_pending = false;
                if (segments) {
                    lk.unlock();
                    segments->collect();
                    lk.lock();
                }
                if (reclaims.empty() || reclaiming) continue;
            }
            auto [begin, end] = std::move(reclaims.front());
            reclaims.pop_front();
            if (!db || needs_resume) continue;  // after a write error the store reopens; skip
            reclaiming = true;
            lk.unlock();
            auto* cf = columns[static_cast<size_t>(Column::msgs)];
            rocksdb::Slice b(begin), e(end);
            // Worth it only when table files hold the range's data. What was
            // deleted while still in a memtable (the chunks of a queue whose
            // consumer keeps up live and die there) goes with that
            // memtable's own flush; forcing one for it costs a table file, a
            // new WAL and their syncs every few MiB of traffic — in cluster
            // mode, where chunks keep their bytes in the database, a stream
            // of extra disk flushes beside the log's. Less than a memtable's
            // worth in table files is left to RocksDB's own compactions.
            rocksdb::SizeApproximationOptions sizing;
            sizing.include_memtables = false;
            sizing.include_files = true;
            rocksdb::Range range(b, e);
            uint64_t in_files = 0;
            if (!db->GetApproximateSizes(sizing, cf, &range, 1, &in_files).ok()) in_files = UINT64_MAX;
            const bool worth_it = in_files >= options.write_buffer_bytes;
            if (worth_it) {
                // The deletes may still be in the memtable, where a compaction
                // of table files cannot see them: flush it, then compact the
                // range (whose data is all deleted: the output is empty).
                rocksdb::FlushOptions fo;
                fo.allow_write_stall = true;
                db->Flush(fo, cf);
                rocksdb::CompactRangeOptions co;
                co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
                db->CompactRange(co, cf, &b, &e);
            }
            lk.lock();
            reclaiming = false;
            ++(worth_it ? reclaimed : reclaims_skipped);
            reclaim_cv.notify_all();
        }
    }

    void run_reads() {
        std::unique_lock lk(mu);
        for (;;) {
            read_cv.wait(lk, [&] { return (stopping || !reads.empty()) && !reopening; });
            if (reads.empty()) return;  // stopping, and every queued read has run
            auto job = std::move(reads.front());
            reads.pop_front();
            reading = true;
            lk.unlock();
            job();
            lk.lock();
            reading = false;
            idle_cv.notify_all();  // wait_idle(), and a reopen waiting for this read
        }
    }

    ~Impl() {
        {
            std::lock_guard lk(mu);
            stopping = true;
        }
        cv.notify_all();
        reclaim_cv.notify_all();
        read_cv.notify_all();
        if (read_thread.joinable()) read_thread.join();
        // A reclaim may be compacting a large deleted range: cancel it rather
        // than hold the stop up (the space comes back at the next reclaim).
        if (db) db->DisableManualCompaction();
        if (reclaim_thread.joinable()) reclaim_thread.join();
        if (thread.joinable()) thread.join();
        if (segments) segments->collect();  // files emptied by the last batches (a collect may not have run)
        if (db) {
            // In sync mode every write is synced already. In async mode sync
            // the tail — unless a write failed: RocksDB (built with asserts
            // in Debian) aborts on SyncWAL after an I/O error.
            if (options.durability == Durability::async && !needs_resume) {
                if (segments) segments->sync();  // the bytes before the pointers to them
                db->SyncWAL();
            }
            for (auto* h : columns) db->DestroyColumnFamilyHandle(h);
            db->Close();
        }
    }

    // A standalone batch's recorded writes, in RocksDB's format.
    void bind(Batch& b) {
        b.impl_->columns = &columns;
        for (const auto& op : b.impl_->ops) {
            auto* cf = columns[static_cast<size_t>(op.column)];
            switch (op.kind) {
                case Batch::Impl::Op::put: b.impl_->wb.Put(cf, op.a, op.b); break;
                case Batch::Impl::Op::remove: b.impl_->wb.Delete(cf, op.a); break;
                case Batch::Impl::Op::range: b.impl_->wb.DeleteRange(cf, op.a, op.b); break;
            }
        }
        b.impl_->ops.clear();
    }

    std::string write_chunks(bool sync) {
        bool any = false;
        for (Batch& r : redo)
            for (const auto& c : r.impl_->chunk_writes) {
                if (std::string err = segments->write(c.place, c.bytes); !err.empty()) return err;
                any = true;
            }
        if (any && sync) return segments->sync();
        return "";
    }

    // Writes the batches that failed before (redo), then `b`, the last one
    // synced in sync mode. On failure `b` joins redo: the caller hears the
    // error, and the writes are made again with the next commit.
    std::string write(Batch&& b, bool sync) {
        const size_t earlier = redo.size();
        if (b.count() > 0) redo.push_back(std::move(b));
        if (!db) return "the store is closed after an earlier write error; it reopens at the next commit";
        std::vector<uint64_t> firsts;  // each write's first sequence, for the listener
        firsts.reserve(redo.size());
        rocksdb::Status s;
        size_t bytes = 0, count = 0;
        // A leader ships its batches before its own sync, so that the
        // replicas' syncs run beside it instead of after it: a confirm still
        // waits for both (the callback is held until the replicas' acks, and
        // runs only after this sync). A replica may then hold a batch this
        // node lost in a crash; the log's history check sends it a snapshot.
        bool ship_early;
        {
            std::lock_guard lk(mu);
            ship_early = sync && leading && log_listener;
        }
        auto start = std::chrono::steady_clock::now();
        // Chunks' bytes first: a pointer that is durable points at durable
        // bytes. (A batch written again writes them again, in place.)
        if (std::string err = write_chunks(sync); !err.empty()) {
            std::lock_guard lk(mu);
            ++stats.write_errors;
            needs_resume = true;
            return err;
        }
        for (size_t i = 0; i < redo.size() && s.ok(); ++i) {
            Batch& r = redo[i];
            bind(r);
            if (leading && r.impl_->log_index == 0) {
                // Its place in the log, in the same atomic write (a batch
                // written again after a failure keeps the one it got).
                r.impl_->log_index = ++last_index;
                std::string pos;
                append_u64_key(pos, epoch);
                append_u64_key(pos, last_index);
                r.impl_->wb.Put(log_column(), kLogPositionKey, pos);
            }
            rocksdb::WriteOptions wo;
            wo.sync = sync && !ship_early && i + 1 == redo.size();
            s = db->Write(wo, &r.impl_->wb);
            if (s.ok()) firsts.push_back(db->GetLatestSequenceNumber() + 1 - r.impl_->wb.Count());
            bytes += r.bytes();
            count += r.count();
        }
        if (ship_early && s.ok() && !redo.empty()) {
            {
                std::lock_guard lk(mu);
                for (auto& r : redo) {
                    const auto& rep = r.impl_->wb.Data();
                    log_listener({epoch, r.impl_->log_index}, std::string_view(rep.data(), rep.size()));
                }
            }
            s = db->SyncWAL();
        }
        auto micros = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count());
        if (s.ok() && segments) {  // no failed write will write these chunks again
            std::vector<uint32_t> files;
            for (const Batch& r : redo)
                for (const auto& c : r.impl_->chunk_writes) files.push_back(c.place.file);
            if (!files.empty()) segments->written(files);
        }
        std::lock_guard lk(mu);
        ++stats.batches;
        stats.bytes_written += bytes;
        stats.batch_writes.record(kBatchWriteBuckets, count);
        if (!s.ok()) {
            ++stats.write_errors;
            needs_resume = true;
            return s.ToString();
        }
        if (sync && !redo.empty()) {
            ++stats.syncs;
            stats.last_sync_micros = micros;
            stats.total_sync_micros += micros;
            stats.sync_micros.record(kLatencyBucketMicros, micros);
        }
        if (listener)
            for (size_t i = 0; i < redo.size(); ++i) {
                const auto& rep = redo[i].impl_->wb.Data();
                listener(firsts[i], std::string_view(rep.data(), rep.size()));
            }
        if (log_listener && leading && !ship_early)
            for (auto& r : redo) {
                const auto& rep = r.impl_->wb.Data();
                log_listener({epoch, r.impl_->log_index}, std::string_view(rep.data(), rep.size()));
            }
        stats.rewritten_batches += earlier;
        redo.clear();
        return "";
    }

    void run() {
        rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);  // no per-write perf counters
        const bool sync = options.durability == Durability::sync;
        auto next_sync = std::chrono::steady_clock::now() + options.sync_interval;
        std::unique_lock lk(mu);
        for (;;) {
            if (sync) {
                cv.wait(lk, [&] { return stopping || !jobs.empty(); });
            } else {
                cv.wait_until(lk, next_sync, [&] { return stopping || !jobs.empty(); });
            }
            if (!sync && std::chrono::steady_clock::now() >= next_sync) {
                next_sync = std::chrono::steady_clock::now() + options.sync_interval;
                if (unsynced && !needs_resume) {
                    unsynced = false;
                    lk.unlock();
                    auto start = std::chrono::steady_clock::now();
                    if (segments) segments->sync();  // before the pointers to them
                    db->SyncWAL();
                    auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - start);
                    lk.lock();
                    ++stats.syncs;
                    stats.sync_micros.record(kLatencyBucketMicros, static_cast<uint64_t>(micros.count()));
                }
            }
            if (jobs.empty()) {
                if (stopping) return;
                continue;
            }
            Job job = std::move(jobs.front());
            jobs.pop_front();
            busy = true;
            writing = true;
            write_started = std::chrono::steady_clock::now();
            const bool resume = needs_resume;
            lk.unlock();
            if (resume) reopen();  // a failed reopen leaves no database: write() says so
            std::string err = write(std::move(job.batch), sync);
            auto waited = std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::steady_clock::now() - job.queued);
            {
                std::lock_guard wl(mu);
                writing = false;
            }
            if (err.empty() && leading) hold(last_index, std::move(job.done));  // until the replicas have it
            else job.done(std::move(err));
            lk.lock();
            busy = false;
            stats.commit_micros.record(kLatencyBucketMicros, static_cast<uint64_t>(waited.count()));
            if (!sync) unsynced = true;
            if (jobs.empty()) idle_cv.notify_all();
        }
    }
};

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

std::unique_ptr<Store> Store::open(const StoreOptions& options, std::string& error, bool* io_error) {
    if (io_error) *io_error = false;
    auto impl = std::make_unique<Impl>();
    impl->options = options;

    rocksdb::DBOptions db_opts;
    db_opts.create_if_missing = true;
    db_opts.create_missing_column_families = true;
    db_opts.max_background_jobs = 2;
    db_opts.max_open_files = 512;
    db_opts.keep_log_file_num = 4;
    db_opts.max_total_wal_size = 64u << 20;  // flush memtables rather than keep old WALs
    // Memtables of every column family together stay within this (bounded
    // memory: a growing queue's chunks go to table files, not RAM).
    db_opts.db_write_buffer_size = 2 * options.write_buffer_bytes;
    db_opts.avoid_unnecessary_blocking_io = true;
    db_opts.info_log = std::make_shared<StderrLogger>();
    if (options.env) db_opts.env = options.env;

    auto cache = rocksdb::NewLRUCache(options.block_cache_bytes);
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = cache;
    table.cache_index_and_filter_blocks = true;  // bounded memory: index/filters live in the cache
    rocksdb::ColumnFamilyOptions cf;
    cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    cf.write_buffer_size = options.write_buffer_bytes;
    cf.max_write_buffer_number = 2;
    cf.compression = rocksdb::kNoCompression;  // bodies are often already compressed; CPU matters more
    // Table files that are mostly deletes (acknowledged chunks) are compacted
    // soon, so their space comes back without waiting for level sizes.
    cf.table_properties_collector_factories.push_back(rocksdb::NewCompactOnDeletionCollectorFactory(256, 128, 0.5));

    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
        {"meta", cf}, {"msgs", cf}, {"bodies", cf}, {rocksdb::kDefaultColumnFamilyName, cf}};
    rocksdb::DB* db = nullptr;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    impl->db_options = db_opts;
    impl->cf_descriptors = cfs;
    rocksdb::Status s = rocksdb::DB::Open(db_opts, options.path, cfs, &handles, &db);
    if (!s.ok()) {
        error = "opening RocksDB at " + options.path + ": " + s.ToString();
        if (io_error) *io_error = s.IsIOError() || s.IsNoSpace();
        return nullptr;
    }
    if (options.segments) {
        rocksdb::FileSystem* fs = options.env ? options.env->GetFileSystem().get() : rocksdb::FileSystem::Default().get();
        impl->segments = SegmentFiles::open(fs, segments_dir(options.path), options.segment_file_bytes, error);
        if (!impl->segments) {
            for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
            delete db;
            if (io_error) *io_error = true;
            return nullptr;
        }
        impl->segments_in_use = true;
    }
    impl->db.reset(db);
    impl->columns = handles;  // meta, msgs, bodies, default
    Impl* raw = impl.get();
    impl->thread = std::thread([raw] {
        pthread_setname_np(pthread_self(), "store-commit");  // names for top -H, perf
        raw->run();
    });
    impl->reclaim_thread = std::thread([raw] {
        pthread_setname_np(pthread_self(), "store-reclaim");
        raw->run_reclaims();
    });
    impl->read_thread = std::thread([raw] {
        pthread_setname_np(pthread_self(), "store-read");
        raw->run_reads();
    });
    return std::unique_ptr<Store>(new Store(std::move(impl)));
}

void Store::reopen_after_failure() {
    bool failed;
    {
        std::lock_guard lk(impl_->mu);
        failed = impl_->needs_resume;
    }
    if (!failed) return;
    wait_idle();  // the commit thread is done with the database
    impl_->reopen();
}

void Store::commit(Batch batch, std::function<void(std::string)> done) {
    {
        std::lock_guard lk(impl_->mu);
        impl_->jobs.push_back({std::move(batch), std::move(done), std::chrono::steady_clock::now()});
    }
    impl_->cv.notify_one();
}

std::string Store::commit_now(Batch batch) {
    reopen_after_failure();
    return impl_->write(std::move(batch), true);
}

void Store::wait_idle() {
    std::unique_lock lk(impl_->mu);
    impl_->idle_cv.wait(lk, [&] {
        return impl_->jobs.empty() && !impl_->busy && impl_->reads.empty() && !impl_->reading;
    });
}

void Store::read_off_thread(std::function<void()> job) {
    {
        std::lock_guard lk(impl_->mu);
        impl_->reads.push_back(std::move(job));
    }
    impl_->read_cv.notify_one();
}

std::string segments_dir(const std::string& store_path) { return store_path + "/segments"; }

Batch Store::new_batch() const {
    Batch b;
    b.impl_->columns = &impl_->columns;
    if (impl_->segments_in_use.load(std::memory_order_relaxed)) b.impl_->segments = impl_->segments.get();
    return b;
}

void Store::scan(Column c, std::string_view lower, std::string_view upper,
                 const std::function<bool(std::string_view, std::string_view)>& f) const {
    std::shared_lock handles(impl_->db_mu);
    if (!impl_->db) return;  // down after a failed reopen
    rocksdb::ReadOptions ro;
    rocksdb::Slice lo(lower.data(), lower.size()), hi(upper.data(), upper.size());
    ro.iterate_lower_bound = &lo;  // never walk tombstones outside the range
    if (!upper.empty()) ro.iterate_upper_bound = &hi;
    ro.fill_cache = false;
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->columns[static_cast<size_t>(c)]));
    for (it->Seek(lo); it->Valid(); it->Next()) {
        auto k = it->key();
        auto v = it->value();
        if (!f(std::string_view(k.data(), k.size()), std::string_view(v.data(), v.size()))) break;
    }
}

bool Store::get(Column c, std::string_view key, std::string& value, bool fill_cache) const {
    std::shared_lock handles(impl_->db_mu);
    if (!impl_->db) return false;
    rocksdb::ReadOptions ro;
    ro.fill_cache = fill_cache;
    rocksdb::Status s = impl_->db->Get(ro, impl_->columns[static_cast<size_t>(c)],
                                       rocksdb::Slice(key.data(), key.size()), &value);
    return s.ok();
}

bool Store::floor(Column c, std::string_view lower, std::string_view at, std::string& key, std::string& value) const {
    std::shared_lock handles(impl_->db_mu);
    if (!impl_->db) return false;
    rocksdb::ReadOptions ro;
    rocksdb::Slice lo(lower.data(), lower.size());
    ro.iterate_lower_bound = &lo;
    ro.fill_cache = false;
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->columns[static_cast<size_t>(c)]));
    it->SeekForPrev(rocksdb::Slice(at.data(), at.size()));
    if (!it->Valid()) return false;
    key.assign(it->key().data(), it->key().size());
    value.assign(it->value().data(), it->value().size());
    return true;
}

const std::string& Store::path() const { return impl_->options.path; }

void Store::set_batch_listener(BatchListener listener) {
    impl_->segments_in_use = false;  // replicas get the bytes in the batches
    std::lock_guard lk(impl_->mu);
    impl_->listener = std::move(listener);
}

std::string Store::apply(std::string_view data, bool sync) { return apply(std::string(data), sync); }

std::string Store::apply(std::string&& data, bool sync) {
    std::shared_lock handles(impl_->db_mu);
    if (!impl_->db) return "the store is closed";
    rocksdb::WriteBatch wb{std::move(data)};
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    rocksdb::Status s = impl_->db->Write(wo, &wb);
    return s.ok() ? "" : s.ToString();
}

std::string Store::sync() {
    std::shared_lock handles(impl_->db_mu);
    if (!impl_->db) return "the store is closed";
    rocksdb::Status s = impl_->db->SyncWAL();
    return s.ok() ? "" : s.ToString();
}

Store::LogPosition Store::log_position() const {
    std::shared_lock handles(impl_->db_mu);
    LogPosition p;
    if (impl_->leading) return {impl_->epoch, impl_->last_index};
    std::string v;
    if (impl_->db && impl_->db->Get(rocksdb::ReadOptions(), impl_->log_column(), kLogPositionKey, &v).ok()) {
        p.epoch = read_u64_key(v, 0);
        p.index = read_u64_key(v, 8);
    }
    return p;
}

std::map<uint64_t, uint64_t> Store::epoch_history() const {
    std::shared_lock handles(impl_->db_mu);
    std::map<uint64_t, uint64_t> out;
    if (!impl_->db) return out;
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->log_column()));
    const char prefix[1] = {kEpochPrefix};
    for (it->Seek(rocksdb::Slice(prefix, 1)); it->Valid() && it->key().size() == 9 && it->key()[0] == kEpochPrefix;
         it->Next())
        out[read_u64_key(std::string_view(it->key().data(), it->key().size()), 1)] =
            read_u64_key(std::string_view(it->value().data(), it->value().size()), 0);
    return out;
}

std::string Store::lead(uint64_t epoch) {
    wait_idle();
    if (!impl_->db) return "the store is closed";
    const LogPosition at = log_position();
    if (epoch <= at.epoch) return "epoch " + std::to_string(epoch) + " is not past the log's " + std::to_string(at.epoch);
    {
        std::lock_guard lk(impl_->gate_mu);
        impl_->released = at.index;  // earlier epochs' batches are not this leader's to confirm
        impl_->held_error.clear();
    }
    impl_->epoch = epoch;
    impl_->last_index = at.index;
    impl_->leading = true;
    impl_->segments_in_use = false;
    Batch b = new_batch();
    std::string key(1, kEpochPrefix), first;
    append_u64_key(key, epoch);
    append_u64_key(first, at.index + 1);
    b.impl_->wb.Put(impl_->log_column(), key, first);
    ++b.impl_->count;
    return impl_->write(std::move(b), true);
}

void Store::set_log_listener(LogListener listener) {
    impl_->segments_in_use = false;  // replicas get the bytes in the batches
    std::lock_guard lk(impl_->mu);
    impl_->log_listener = std::move(listener);
}

void Store::release_through(uint64_t index) { impl_->release(index); }

void Store::fail_held(const std::string& error) {
    std::lock_guard order(impl_->release_mu);
    std::deque<Impl::Held> failed;
    {
        std::lock_guard lk(impl_->gate_mu);
        impl_->held_error = error.empty() ? "failed" : error;
        failed.swap(impl_->held);
    }
    for (auto& h : failed) h.done(impl_->held_error);
}

std::chrono::milliseconds Store::write_stalled_for() const {
    std::lock_guard lk(impl_->mu);
    if (!impl_->writing) return std::chrono::milliseconds(0);
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 impl_->write_started);
}

std::string Store::checkpoint(const std::string& dir) {
    std::shared_lock handles(impl_->db_mu);
    if (!impl_->db) return "the store is closed";
    rocksdb::Checkpoint* raw = nullptr;
    rocksdb::Status s = rocksdb::Checkpoint::Create(impl_->db.get(), &raw);
    if (!s.ok()) return s.ToString();
    std::unique_ptr<rocksdb::Checkpoint> cp(raw);
    s = cp->CreateCheckpoint(dir, 0);  // 0: flush the memtables, so the copy needs no WAL
    return s.ok() ? "" : s.ToString();
}

bool Store::down() const {
    std::lock_guard lk(impl_->mu);
    return impl_->down;
}

uint64_t Store::last_sequence() const {
    std::shared_lock handles(impl_->db_mu);
    return impl_->db ? impl_->db->GetLatestSequenceNumber() : 0;
}

void Store::reclaim(std::string_view begin, std::string_view end) {
    {
        std::lock_guard lk(impl_->mu);
        if (!impl_->db) return;
        impl_->reclaims.emplace_back(std::string(begin), std::string(end));
    }
    impl_->reclaim_cv.notify_one();
}

bool Store::resolve_chunk(std::string& value, std::string& error, uint32_t* file) const {
    if (file) *file = 0;
    if (!is_segment_pointer(value)) return true;
    SegmentPointer p;
    if (!decode_segment_pointer(value, p)) {
        error = "a damaged segment pointer";
        return false;
    }
    if (file) *file = p.file;
    if (!impl_->segments) {
        error = "a chunk in segment file " + std::to_string(p.file) + ", and this store has no segment files";
        return false;
    }
    std::string bytes;
    if (!impl_->segments->read(p, bytes, error)) return false;
    value.swap(bytes);
    return true;
}

SegmentFiles* Store::segments() const { return impl_->segments.get(); }

void Store::collect_segments() {
    if (!impl_->segments) return;
    {
        std::lock_guard lk(impl_->mu);
        impl_->collect_pending = true;
    }
    impl_->reclaim_cv.notify_one();
}

uint64_t Store::reclaimed() const {
    std::lock_guard lk(impl_->mu);
    return impl_->reclaimed;
}

uint64_t Store::reclaims_skipped() const {
    std::lock_guard lk(impl_->mu);
    return impl_->reclaims_skipped;
}

StoreStats Store::stats() const {
    std::lock_guard lk(impl_->mu);
    return impl_->stats;
}

uint64_t Store::disk_bytes() const {
    std::shared_lock handles(impl_->db_mu);
    uint64_t total = 0;
    if (!impl_->db) return 0;
    for (auto* cf : impl_->columns) {
        uint64_t sst = 0;
        impl_->db->GetIntProperty(cf, rocksdb::DB::Properties::kTotalSstFilesSize, &sst);
        total += sst;
    }
    rocksdb::VectorLogPtr wal;
    if (impl_->db->GetSortedWalFiles(wal).ok())
        for (const auto& f : wal) total += f->SizeFileBytes();
    if (impl_->segments) total += impl_->segments->bytes_on_disk();
    return total;
}

}  // namespace sluice::storage
