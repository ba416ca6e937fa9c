// Where messages that need no durability go when their queue's memory is
// full: append-only segment files, written without fsync, read back with
// pread, deleted (or truncated) whole once nothing in them is live.
//
// This is the transient half of paging. A transient message (or any message
// of a non-durable queue) dies with the broker anyway, so sending it through
// RocksDB — a WAL record, a sync, a memtable insert, a flush and a tombstone
// per message — buys nothing. Here a page-out is a memcpy into a buffer that
// goes to the file in one write() per event-loop turn (and usually stays in
// the page cache: a consumer that catches up reads it back before writeback,
// and a drained segment is truncated so its pages are dropped, never written).
//
// When bytes are safe: never. Appended bytes are in this object's buffer
// until flush(), then in the page cache; nothing is synced. open() empties
// the directory: what a previous process spilled is gone with it.
//
// Layout: DIR/NNNNNNNN.spill, each up to segment_bytes (an in-place append
// may pass it by one record). An extent (segment, offset, length) names
// appended bytes; they never change while their segment exists, and a
// segment id is never used twice. A segment's live bytes count the
// references to its extents not yet released (an append is one reference;
// retain() adds one, so several queues can share one copy of a message); a
// segment whose live bytes reach 0 is unlinked (its pages are dropped, never
// written back) and appends go on in a new one.
//
// Threads: one owner thread (the broker thread) calls everything except
// pread_extent() (see locate()).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::storage {

struct SpillExtent {
    uint32_t segment = 0;
    uint32_t length = 0;
    uint64_t offset = 0;
};

struct SpillStats {
    uint64_t bytes_appended = 0;
    uint64_t bytes_read = 0;     // from files (not from the unflushed buffer)
    uint64_t writes = 0;         // write() calls
    uint64_t live_bytes = 0;     // appended and not released
    uint64_t disk_bytes = 0;     // the files' sizes
    uint64_t segments = 0;
    uint64_t errors = 0;
};

class SpillFile {
public:
    // Creates DIR if needed and removes every segment in it. Null (and
    // `error`) when the directory cannot be used.
    static std::unique_ptr<SpillFile> open(const std::string& dir, std::string& error,
                                           uint64_t segment_bytes = 64u << 20);
    ~SpillFile();

    // Appends the concatenation of `parts`; the bytes are readable at once
    // (from memory until flush()).
    SpillExtent append(std::initializer_list<std::string_view> parts);
    // Appends `bytes`, keeping the string itself until flush() writes it (no
    // copy: a queue's sealed run goes to the file from its own buffer).
    SpillExtent append(std::string&& bytes);
    // Appending in place: begin_append() returns the buffer to append to
    // and where its new bytes start; end_append(buffer, start) makes what
    // was appended since one extent. Nothing else in between.
    std::string& begin_append(size_t& start);
    SpillExtent end_append(std::string& buffer, size_t start);
    // One more reference to an extent appended earlier. False if its
    // segment is gone (every reference was released): append it again.
    bool retain(const SpillExtent& extent);
    // Writes the buffered bytes to their segments (one write per segment).
    // False on an I/O error (the bytes stay readable from memory).
    bool flush();
    // Reads an extent's bytes into `out`. False on an I/O error.
    bool read(const SpillExtent& extent, std::string& out);
    // Reading off the owner's thread, in three steps. locate(), on the
    // owner's thread: true with the bytes in `out` if they are still in
    // memory; else `fd` is where pread_extent() reads them, on any thread
    // (-1: unreadable). The fd stays open until the extent is released, so
    // release it only after the read. note_read() counts the read (owner).
    // An extent made of several appends may be partly written and partly
    // buffered: locate() writes the buffer first, and it is all in the file.
    bool locate(const SpillExtent& extent, std::string& out, int& fd);
    static bool pread_extent(int fd, const SpillExtent& extent, std::string& out);
    // The same into a buffer of extent.length bytes that is not zero-filled
    // first (a run is 128 KiB): null on an I/O error.
    static std::unique_ptr<char[]> pread_extent(int fd, const SpillExtent& extent);
    void note_read(const SpillExtent& extent, bool ok);
    // The extent's bytes are no longer needed.
    void release(const SpillExtent& extent);

    size_t buffered_bytes() const { return buffered_; }
    SpillStats stats() const;

private:
    struct Segment {
        int fd = -1;
        uint64_t size = 0;     // bytes appended (flushed or buffered)
        uint64_t flushed = 0;  // bytes written to the file
        uint64_t live = 0;     // bytes appended and not released
    };
    SpillFile(std::string dir, uint64_t segment_bytes) : dir_(std::move(dir)), segment_bytes_(segment_bytes) {}
    std::string path_of(uint32_t id) const;
    Segment* open_segment(uint32_t id);
    void retire(uint32_t id, Segment& s);
    // The current segment, after moving to a new one if this one cannot
    // take `n` more bytes; the buffer's offset set if it is empty.
    Segment& current_for(uint64_t n);
    // The buffered string that in-place appends of about `n` bytes go to.
    std::string& open_chunk(size_t n);
    SpillExtent account(Segment& cur, uint64_t n);

    std::string dir_;
    uint64_t segment_bytes_;
    std::map<uint32_t, Segment> segments_;
    uint32_t current_ = 0;
    bool have_current_ = false;
    // Bytes appended to the current segment from offset buffer_offset_ on,
    // not yet written: the appended strings, in order (flush() writes them
    // with one pwritev).
    std::vector<std::string> buffer_;
    uint64_t buffer_offset_ = 0;
    size_t buffered_ = 0;     // their total size
    bool last_open_ = false;  // buffer_.back() takes in-place appends (it is not a moved-in string)
    SpillStats stats_;
};

}  // namespace sluice::storage
