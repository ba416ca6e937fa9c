#include "storage/spill_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <filesystem>

namespace sluice::storage {

namespace {

// Past this many buffered bytes an append writes them out at once, so the
// buffer stays small however much one turn spills.
constexpr size_t kFlushAt = 1u << 20;

// Writes the strings one after another from `offset` on: pwritev, at most
// 64 of them per call, resumed after a short write.
bool write_all(int fd, const std::vector<std::string>& parts, uint64_t offset) {
    size_t i = 0, skip = 0;  // the next part, and how much of it is written
    while (i < parts.size()) {
        iovec iov[64];
        int n = 0;
        for (size_t j = i; j < parts.size() && n < 64; ++j) {
            const size_t from = j == i ? skip : 0;
            iov[n].iov_base = const_cast<char*>(parts[j].data() + from);
            iov[n].iov_len = parts[j].size() - from;
            ++n;
        }
        ssize_t w = ::pwritev(fd, iov, n, static_cast<off_t>(offset));
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        offset += static_cast<uint64_t>(w);
        size_t left = static_cast<size_t>(w);
        while (i < parts.size() && left >= parts[i].size() - skip) {
            left -= parts[i].size() - skip;
            skip = 0;
            ++i;
        }
        skip += left;
    }
    return true;
}

}  // namespace

std::unique_ptr<SpillFile> SpillFile::open(const std::string& dir, std::string& error, uint64_t segment_bytes) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
        error = "creating " + dir + ": " + ec.message();
        return nullptr;
    }
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
        if (entry.path().extension() == ".spill") std::filesystem::remove(entry.path(), ec);
    }
    if (ec) {
        error = "emptying " + dir + ": " + ec.message();
        return nullptr;
    }
    return std::unique_ptr<SpillFile>(new SpillFile(dir, segment_bytes));
}

SpillFile::~SpillFile() {
    for (auto& [id, s] : segments_) {
        if (s.fd >= 0) ::close(s.fd);
        ::unlink(path_of(id).c_str());
    }
}

std::string SpillFile::path_of(uint32_t id) const {
    char name[32];
    snprintf(name, sizeof name, "/%08u.spill", id);
    return dir_ + name;
}

SpillFile::Segment* SpillFile::open_segment(uint32_t id) {
    int fd = ::open(path_of(id).c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        ++stats_.errors;
        fprintf(stderr, "sluiced: spill: cannot create %s: %s\n", path_of(id).c_str(), strerror(errno));
        return nullptr;
    }
    Segment& s = segments_[id];
    s.fd = fd;
    return &s;
}

void SpillFile::retire(uint32_t id, Segment& s) {
    if (s.fd >= 0) ::close(s.fd);
    ::unlink(path_of(id).c_str());
    segments_.erase(id);
}

SpillFile::Segment& SpillFile::current_for(uint64_t n) {
    Segment* cur = have_current_ ? &segments_[current_] : nullptr;
    if (cur && cur->size > 0 && cur->size + n > segment_bytes_) {
        // The current segment is full: write it out and start the next one.
        flush();
        const uint32_t old = current_;
        ++current_;
        if (cur->live == 0) retire(old, *cur);
        cur = nullptr;
        have_current_ = false;
    }
    if (!cur) {
        cur = open_segment(current_);
        if (!cur) {
            // No file: keep the bytes in the buffer of a segment with no fd;
            // reads are served from memory, flush() reports the failure.
            cur = &segments_[current_];
        }
        have_current_ = true;
    }
    if (buffer_.empty()) buffer_offset_ = cur->size;
    return *cur;
}

std::string& SpillFile::open_chunk(size_t n) {
    // In-place appends share chunks of this size (one allocation each, not
    // one per message).
    constexpr size_t kChunk = 256u << 10;
    if (!last_open_ || buffer_.empty() || (!buffer_.back().empty() && buffer_.back().size() + n > kChunk)) {
        buffer_.emplace_back().reserve(std::max(kChunk, n));
        last_open_ = true;
    }
    return buffer_.back();
}

SpillExtent SpillFile::account(Segment& cur, uint64_t n) {
    SpillExtent e{current_, static_cast<uint32_t>(n), cur.size};
    cur.size += n;
    cur.live += n;
    buffered_ += n;
    stats_.bytes_appended += n;
    stats_.live_bytes += n;
    if (buffered_ >= kFlushAt) flush();
    return e;
}

SpillExtent SpillFile::append(std::initializer_list<std::string_view> parts) {
    size_t n = 0;
    for (auto p : parts) n += p.size();
    Segment& cur = current_for(n);
    std::string& chunk = open_chunk(n);
    for (auto p : parts) chunk.append(p);
    return account(cur, n);
}

SpillExtent SpillFile::append(std::string&& bytes) {
    const uint64_t n = bytes.size();
    Segment& cur = current_for(n);
    if (n > 0) {
        buffer_.push_back(std::move(bytes));
        last_open_ = false;
    }
    return account(cur, n);
}

std::string& SpillFile::begin_append(size_t& start) {
    current_for(1);  // a full segment moves on first (the record may pass the limit a little)
    std::string& chunk = open_chunk(1);
    start = chunk.size();
    return chunk;
}

SpillExtent SpillFile::end_append(std::string& buffer, size_t start) {
    return account(segments_[current_], buffer.size() - start);
}

bool SpillFile::retain(const SpillExtent& e) {
    auto it = segments_.find(e.segment);
    if (it == segments_.end() || e.offset + e.length > it->second.size) return false;
    it->second.live += e.length;
    stats_.live_bytes += e.length;
    return true;
}

bool SpillFile::flush() {
    if (buffer_.empty() || !have_current_) return true;
    Segment& cur = segments_[current_];
    if (cur.fd < 0 || !write_all(cur.fd, buffer_, buffer_offset_)) {
        ++stats_.errors;
        return false;  // the bytes stay readable from the buffer
    }
    ++stats_.writes;
    cur.flushed = buffer_offset_ + buffered_;
    buffer_.clear();
    buffered_ = 0;
    last_open_ = false;
    return true;
}

bool SpillFile::read(const SpillExtent& e, std::string& out) {
    int fd = -1;
    if (locate(e, out, fd)) return true;
    const bool ok = pread_extent(fd, e, out);
    note_read(e, ok);
    return ok;
}

bool SpillFile::locate(const SpillExtent& e, std::string& out, int& fd) {
    out.clear();
    fd = -1;
    if (e.length == 0) return true;
    if (e.segment == current_ && have_current_ && !buffer_.empty() && e.offset < buffer_offset_ &&
        e.offset + e.length > buffer_offset_)
        flush();  // partly written, partly buffered: all to the file
    if (e.segment == current_ && have_current_ && !buffer_.empty() && e.offset >= buffer_offset_) {
        // In memory (in one buffered string, or across several).
        uint64_t at = buffer_offset_;
        for (const std::string& b : buffer_) {
            const uint64_t want = e.offset + out.size();
            if (want < at + b.size()) {
                const size_t from = static_cast<size_t>(want - at);
                out.append(b, from, std::min<size_t>(b.size() - from, e.length - out.size()));
                if (out.size() == e.length) return true;
            }
            at += b.size();
        }
        out.clear();
        return false;
    }
    auto it = segments_.find(e.segment);
    if (it != segments_.end()) fd = it->second.fd;
    return false;
}

namespace {

bool pread_all(int fd, char* to, const SpillExtent& e) {
    size_t got = 0;
    while (got < e.length) {
        ssize_t r = ::pread(fd, to + got, e.length - got, static_cast<off_t>(e.offset + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        got += static_cast<size_t>(r);
    }
    return true;
}

}  // namespace

bool SpillFile::pread_extent(int fd, const SpillExtent& e, std::string& out) {
    out.clear();
    if (fd < 0) return false;
    out.resize(e.length);
    return pread_all(fd, out.data(), e);
}

std::unique_ptr<char[]> SpillFile::pread_extent(int fd, const SpillExtent& e) {
    if (fd < 0) return nullptr;
    std::unique_ptr<char[]> out(new char[e.length]);  // not zero-filled: the read overwrites every byte
    if (!pread_all(fd, out.get(), e)) return nullptr;
    return out;
}

void SpillFile::note_read(const SpillExtent& e, bool ok) {
    if (ok) stats_.bytes_read += e.length;
    else ++stats_.errors;
}

void SpillFile::release(const SpillExtent& e) {
    auto it = segments_.find(e.segment);
    if (it == segments_.end()) return;
    Segment& s = it->second;
    const uint64_t n = std::min<uint64_t>(e.length, s.live);
    s.live -= n;
    stats_.live_bytes -= std::min(stats_.live_bytes, n);
    if (s.live > 0) return;
    if (e.segment == current_ && have_current_) {
        // Everything in the current segment is consumed: what is buffered
        // is not needed either, and the next append starts a new segment
        // (an id is never reused, so an old extent never names new bytes).
        buffer_.clear();
        buffered_ = 0;
        last_open_ = false;
        have_current_ = false;
        ++current_;
    }
    retire(e.segment, s);  // unlinked: its pages are dropped, never written back
}

SpillStats SpillFile::stats() const {
    SpillStats st = stats_;
    st.segments = segments_.size();
    st.disk_bytes = 0;
    for (const auto& [id, s] : segments_) st.disk_bytes += s.flushed;
    return st;
}

}  // namespace sluice::storage
