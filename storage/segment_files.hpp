// Where queue logs' chunks keep their bytes: append-only segment files next
// to the database, so that a persistent message is written once (to a
// segment) and the database holds a 21-byte pointer to it, instead of a
// value that goes through RocksDB's write-ahead log, its memtable (RAM) and
// a table file.
//
// A chunk's place is decided when its batch is built (reserve(), on the
// owner's thread: the queue log learns the file at once, for counting), its
// bytes are written and synced by the commit thread before the batch that
// holds the pointer (write(), sync()): a pointer that is durable always
// points at durable bytes. Writes are positional: a batch written again
// after a failure (a full disk, a failed sync whose data may be gone from
// the page cache) writes the same bytes at the same place.
//
// A file is deleted when no stored pointer refers to it any more: ref() at
// reserve and at recovery, unref() once the batch that deleted the pointer
// is synced; collect() (any thread but the owner's) unlinks files with no
// reference, except the one being filled. A file that one long-lived chunk
// still points at stays whole (as LavinMQ's segments do).
//
// All I/O goes through RocksDB's FileSystem (the store's Env), so the
// power-loss and fault-injecting file systems of the tests cover it.
//
// Threads: reserve/ref/unref on the owner's thread; write/sync on the
// commit thread; read and collect on any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace rocksdb {
class FileSystem;
class FSWritableFile;
class FSRandomAccessFile;
class FSDirectory;
}  // namespace rocksdb

namespace sluice::storage {

struct SegmentPointer {
    uint32_t file = 0;  // 1, 2, ...; 0 = none
    uint64_t offset = 0;
    uint32_t length = 0;
    uint32_t crc = 0;  // CRC-32C of the bytes
};

// A chunk value that is a pointer: 0x05, file u32, offset u64, length u32,
// crc u32 (big-endian).
inline constexpr char kSegmentPointerMagic = 0x05;
inline constexpr size_t kSegmentPointerSize = 1 + 4 + 8 + 4 + 4;
std::string encode_segment_pointer(const SegmentPointer& p);
inline bool is_segment_pointer(std::string_view v) {
    return v.size() == kSegmentPointerSize && v[0] == kSegmentPointerMagic;
}
bool decode_segment_pointer(std::string_view v, SegmentPointer& p);

class SegmentFiles {
public:
    // `dir` is created if missing. Existing files are listed (recovery refs
    // the ones still pointed at); new ones are numbered after them.
    static std::unique_ptr<SegmentFiles> open(rocksdb::FileSystem* fs, std::string dir, uint64_t file_bytes,
                                              std::string& error);
    ~SegmentFiles();

    // Owner's thread. A reference counts a chunk and its bytes.
    SegmentPointer reserve(std::string_view bytes);
    void ref(uint32_t file, uint64_t bytes);
    void unref(uint32_t file, uint64_t bytes);

    // Files worth compacting: full ones whose referenced bytes are under a
    // quarter of their size and have not dropped for `quiet` (a file being
    // consumed empties by itself; one that a few long-lived chunks pin would
    // hold its whole size for as long as they live). Each is returned once
    // until compacted() is called for it. The owner moves their chunks
    // (Batch::put_chunk of the same bytes, then unref) and the file goes.
    std::vector<uint32_t> sparse(std::chrono::steady_clock::duration quiet);
    void compacted(uint32_t file);

    // Commit thread: the bytes of a reserved place (again, after a failure).
    std::string write(const SegmentPointer& p, std::string_view bytes);
    // Commit thread: every file written since the last sync is synced (and
    // the directory, once a file was created). Empty on success.
    std::string sync();
    // Commit thread: a batch holding chunks in `files` (one entry per
    // chunk) is written and synced for good (no failed write will write
    // them again). A full file with no chunk left to write has its writer
    // closed: until then it stays open, because a file is never created
    // twice (creating truncates).
    void written(const std::vector<uint32_t>& files);

    // Any thread: the bytes a pointer names, checked against its CRC. False
    // with `error` set if the file or the bytes are missing or damaged.
    bool read(const SegmentPointer& p, std::string& out, std::string& error) const;

    // Any thread but the owner's: unlinks files no pointer refers to (the
    // file being filled too, once nothing in it is referenced: the next
    // reserve starts a new one). Returns how many were deleted.
    size_t collect();

    size_t files() const;
    uint64_t bytes_on_disk() const;
    uint64_t deleted_files() const;

private:
    struct File {
        uint64_t refs = 0;
        uint64_t live_bytes = 0;  // bytes of the referenced chunks
        uint64_t pending = 0;     // reserved chunks whose batch is not yet written for good
        std::chrono::steady_clock::time_point last_unref{};
        bool compacting = false;
        uint64_t size = 0;  // bytes reserved (the file's length once written)
        std::shared_ptr<rocksdb::FSRandomAccessFile> reader;
        std::unique_ptr<rocksdb::FSWritableFile> writer;  // commit thread, while written to
        bool unsynced = false;
    };
    SegmentFiles(rocksdb::FileSystem* fs, std::string dir, uint64_t file_bytes);
    std::string name(uint32_t file) const;
    std::shared_ptr<rocksdb::FSRandomAccessFile> reader(uint32_t file) const;
    // Under mu_: moves the writers of files written for good to `out`.
    void take_finished_writers(std::vector<std::unique_ptr<rocksdb::FSWritableFile>>& out);

    rocksdb::FileSystem* fs_;
    const std::string dir_;
    const uint64_t file_bytes_;
    std::unique_ptr<rocksdb::FSDirectory> dir_handle_;

    mutable std::mutex mu_;
    mutable std::map<uint32_t, File> files_;
    uint32_t current_ = 0;         // the file reserve() fills (0: none yet)
    std::set<uint32_t> writing_;   // files with an open writer (the few being written)
    uint32_t next_ = 1;            // the number of the next file (numbers are not reused in a run)
    bool dir_unsynced_ = false;     // a file was created since the directory's last sync
    uint64_t deleted_ = 0;
    mutable size_t readers_ = 0;  // files with an open reader
};

}  // namespace sluice::storage
