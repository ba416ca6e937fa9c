#include "storage/segment_files.hpp"

#include <rocksdb/file_system.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "storage/crc32c.hpp"
#include "storage/store.hpp"

namespace sluice::storage {

namespace {

constexpr const char* kSuffix = ".seg";
constexpr size_t kMaxReaders = 64;  // files kept open for reading

// "000042.seg" → 42; 0 for anything else.
uint32_t number_of(const std::string& name) {
    const size_t n = name.size();
    if (n <= 4 || name.compare(n - 4, 4, kSuffix) != 0) return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n - 4; ++i) {
        if (name[i] < '0' || name[i] > '9' || v > 0xffffffffu) return 0;
        v = v * 10 + static_cast<uint64_t>(name[i] - '0');
    }
    return v <= 0xffffffffu ? static_cast<uint32_t>(v) : 0;
}

}  // namespace

bool has_segment_files(const std::string& store_path) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(segments_dir(store_path), ec))
        if (number_of(e.path().filename().string()) != 0) return true;
    return false;
}

std::string encode_segment_pointer(const SegmentPointer& p) {
    std::string v;
    v.reserve(kSegmentPointerSize);
    v.push_back(kSegmentPointerMagic);
    append_u32_be(v, p.file);
    append_u64_key(v, p.offset);
    append_u32_be(v, p.length);
    append_u32_be(v, p.crc);
    return v;
}

bool decode_segment_pointer(std::string_view v, SegmentPointer& p) {
    if (!is_segment_pointer(v)) return false;
    p.file = read_u32_be(v, 1);
    p.offset = read_u64_key(v, 5);
    p.length = read_u32_be(v, 13);
    p.crc = read_u32_be(v, 17);
    return p.file != 0;
}

SegmentFiles::SegmentFiles(rocksdb::FileSystem* fs, std::string dir, uint64_t file_bytes)
    : fs_(fs), dir_(std::move(dir)), file_bytes_(file_bytes) {}

SegmentFiles::~SegmentFiles() {
    for (auto& [n, f] : files_)
        if (f.writer) f.writer->Close(rocksdb::IOOptions(), nullptr);
}

std::string SegmentFiles::name(uint32_t file) const {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%06u", file);
    return dir_ + "/" + buf + kSuffix;
}

std::unique_ptr<SegmentFiles> SegmentFiles::open(rocksdb::FileSystem* fs, std::string dir, uint64_t file_bytes,
                                                 std::string& error) {
    const rocksdb::IOOptions io;
    bool existed = fs->FileExists(dir, io, nullptr).ok();
    if (rocksdb::IOStatus s = fs->CreateDirIfMissing(dir, io, nullptr); !s.ok()) {
        error = "creating " + dir + ": " + s.ToString();
        return nullptr;
    }
    if (!existed) {
        // The new directory's entry in its parent is durable before any
        // file in it is relied on.
        const size_t slash = dir.find_last_of('/');
        std::unique_ptr<rocksdb::FSDirectory> parent;
        if (slash != std::string::npos &&
            fs->NewDirectory(slash == 0 ? "/" : dir.substr(0, slash), io, &parent, nullptr).ok())
            parent->FsyncWithDirOptions(io, nullptr, rocksdb::DirFsyncOptions());
    }
    std::unique_ptr<SegmentFiles> sf(new SegmentFiles(fs, dir, file_bytes));
    if (rocksdb::IOStatus s = fs->NewDirectory(dir, io, &sf->dir_handle_, nullptr); !s.ok()) {
        error = "opening " + dir + ": " + s.ToString();
        return nullptr;
    }
    std::vector<std::string> children;
    if (rocksdb::IOStatus s = fs->GetChildren(dir, io, &children, nullptr); !s.ok()) {
        error = "listing " + dir + ": " + s.ToString();
        return nullptr;
    }
    for (const std::string& c : children) {
        const uint32_t n = number_of(c);
        if (n == 0) continue;
        uint64_t size = 0;
        fs->GetFileSize(sf->name(n), io, &size, nullptr);
        sf->files_[n].size = size;
        if (n >= sf->next_) sf->next_ = n + 1;
    }
    return sf;
}

SegmentPointer SegmentFiles::reserve(std::string_view bytes) {
    SegmentPointer p;
    p.length = static_cast<uint32_t>(bytes.size());
    p.crc = crc32c(bytes.data(), bytes.size());
    std::lock_guard lk(mu_);
    auto cur = current_ != 0 ? files_.find(current_) : files_.end();
    if (cur == files_.end() || (cur->second.size > 0 && cur->second.size + bytes.size() > file_bytes_)) {
        current_ = next_++;
        cur = files_.emplace(current_, File{}).first;
    }
    p.file = current_;
    p.offset = cur->second.size;
    cur->second.size += bytes.size();
    ++cur->second.refs;
    ++cur->second.pending;
    cur->second.live_bytes += bytes.size();
    return p;
}

void SegmentFiles::ref(uint32_t file, uint64_t bytes) {
    std::lock_guard lk(mu_);
    auto it = files_.find(file);
    if (it == files_.end()) return;
    ++it->second.refs;
    it->second.live_bytes += bytes;
}

void SegmentFiles::unref(uint32_t file, uint64_t bytes) {
    std::lock_guard lk(mu_);
    auto it = files_.find(file);
    if (it == files_.end() || it->second.refs == 0) return;
    --it->second.refs;
    it->second.live_bytes -= std::min(it->second.live_bytes, bytes);
    it->second.last_unref = std::chrono::steady_clock::now();
}

std::vector<uint32_t> SegmentFiles::sparse(std::chrono::steady_clock::duration quiet) {
    std::vector<uint32_t> out;
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lk(mu_);
    for (auto& [n, f] : files_) {
        if (n == current_ || f.compacting || f.refs == 0 || f.unsynced) continue;
        if (f.live_bytes * 4 >= f.size || now - f.last_unref < quiet) continue;
        f.compacting = true;
        out.push_back(n);
    }
    return out;
}

void SegmentFiles::compacted(uint32_t file) {
    std::lock_guard lk(mu_);
    auto it = files_.find(file);
    if (it != files_.end()) {
        it->second.compacting = false;
        it->second.last_unref = std::chrono::steady_clock::now();  // not again at once if a chunk could not move
    }
}

std::string SegmentFiles::write(const SegmentPointer& p, std::string_view bytes) {
    const rocksdb::IOOptions io;
    rocksdb::FSWritableFile* w = nullptr;
    {
        std::lock_guard lk(mu_);
        auto it = files_.find(p.file);
        if (it == files_.end()) return "segment file " + std::to_string(p.file) + " is gone";
        w = it->second.writer.get();
        if (w) it->second.unsynced = true;
    }
    if (!w) {
        // First write into a file reserve() started: create it, outside the
        // lock the owner's reserve() takes (only this thread creates
        // writers). A file from before a restart is never written again.
        std::unique_ptr<rocksdb::FSWritableFile> nw;
        rocksdb::IOStatus s = fs_->NewWritableFile(name(p.file), rocksdb::FileOptions(), &nw, nullptr);
        if (!s.ok()) return "creating " + name(p.file) + ": " + s.ToString();
        w = nw.get();
        std::lock_guard lk(mu_);
        File& f = files_[p.file];  // referenced (p's chunk): not collected meanwhile
        f.writer = std::move(nw);
        writing_.insert(p.file);
        f.unsynced = true;
        dir_unsynced_ = true;
    }
    rocksdb::IOStatus s = w->PositionedAppend(rocksdb::Slice(bytes.data(), bytes.size()), p.offset, io, nullptr);
    if (!s.ok()) return "writing " + name(p.file) + ": " + s.ToString();
    return "";
}

std::string SegmentFiles::sync() {
    const rocksdb::IOOptions io;
    std::vector<std::pair<uint32_t, rocksdb::FSWritableFile*>> todo;
    bool dir = false;
    {
        std::lock_guard lk(mu_);
        for (uint32_t n : writing_)
            if (File& f = files_[n]; f.unsynced) todo.emplace_back(n, f.writer.get());
        dir = dir_unsynced_;
    }
    for (auto& [n, w] : todo) {
        rocksdb::IOStatus s = w->Sync(io, nullptr);
        if (!s.ok()) return "syncing " + name(n) + ": " + s.ToString();
    }
    if (dir) {
        rocksdb::IOStatus s = dir_handle_->FsyncWithDirOptions(io, nullptr, rocksdb::DirFsyncOptions());
        if (!s.ok()) return "syncing " + dir_ + ": " + s.ToString();
    }
    std::vector<std::unique_ptr<rocksdb::FSWritableFile>> done;
    {
        std::lock_guard lk(mu_);
        if (dir) dir_unsynced_ = false;
        for (auto& [n, w] : todo)
            if (auto it = files_.find(n); it != files_.end()) it->second.unsynced = false;
        take_finished_writers(done);
    }
    for (auto& w : done) w->Close(io, nullptr);  // outside the lock
    return "";
}

void SegmentFiles::take_finished_writers(std::vector<std::unique_ptr<rocksdb::FSWritableFile>>& out) {
    // A full file that is synced and none of whose chunks may be written
    // again is written for good: its writer goes (closed by the caller,
    // outside the lock).
    for (auto it = writing_.begin(); it != writing_.end();) {
        File& f = files_[*it];
        if (*it != current_ && f.pending == 0 && !f.unsynced) {
            out.push_back(std::move(f.writer));
            it = writing_.erase(it);
        } else {
            ++it;
        }
    }
}

void SegmentFiles::written(const std::vector<uint32_t>& files) {
    std::vector<std::unique_ptr<rocksdb::FSWritableFile>> done;
    {
        std::lock_guard lk(mu_);
        for (uint32_t n : files)
            if (auto it = files_.find(n); it != files_.end() && it->second.pending > 0) --it->second.pending;
        take_finished_writers(done);
    }
    for (auto& w : done) w->Close(rocksdb::IOOptions(), nullptr);  // outside the lock
}

std::shared_ptr<rocksdb::FSRandomAccessFile> SegmentFiles::reader(uint32_t file) const {
    {
        std::lock_guard lk(mu_);
        auto it = files_.find(file);
        if (it == files_.end()) return nullptr;
        if (it->second.reader) return it->second.reader;
    }
    // Opened outside the lock the owner's reserve() takes.
    std::unique_ptr<rocksdb::FSRandomAccessFile> opened;
    if (!fs_->NewRandomAccessFile(name(file), rocksdb::FileOptions(), &opened, nullptr).ok()) return nullptr;
    std::shared_ptr<rocksdb::FSRandomAccessFile> r(std::move(opened));
    std::lock_guard lk(mu_);
    auto it = files_.find(file);
    if (it == files_.end()) return r;  // collected meanwhile: this read still has it
    if (it->second.reader) return it->second.reader;  // another thread opened it too
    // Open readers are bounded (recovery reads every file; a large backlog
    // has thousands): past the bound the others are let go (a read in
    // progress keeps its own reference).
    if (readers_ >= kMaxReaders) {
        for (auto& [n, f] : files_) f.reader.reset();
        readers_ = 0;
    }
    it->second.reader = r;
    ++readers_;
    return r;
}

bool SegmentFiles::read(const SegmentPointer& p, std::string& out, std::string& error) const {
    auto r = reader(p.file);
    if (!r) {
        error = "segment file " + name(p.file) + " is missing";
        return false;
    }
    out.resize(p.length);
    rocksdb::Slice got;
    rocksdb::IOStatus s = r->Read(p.offset, p.length, rocksdb::IOOptions(), &got, out.data(), nullptr);
    if (!s.ok() || got.size() != p.length) {
        error = "reading " + std::to_string(p.length) + " bytes at " + std::to_string(p.offset) + " of " +
                name(p.file) + ": " + (s.ok() ? std::string("the file is shorter") : s.ToString());
        return false;
    }
    if (got.data() != out.data()) out.assign(got.data(), got.size());
    if (crc32c(out.data(), out.size()) != p.crc) {
        error = "the bytes at " + std::to_string(p.offset) + " of " + name(p.file) + " fail their checksum";
        return false;
    }
    return true;
}

size_t SegmentFiles::collect() {
    std::vector<uint32_t> doomed;
    std::vector<std::unique_ptr<rocksdb::FSWritableFile>> writers;
    {
        std::lock_guard lk(mu_);
        for (auto it = files_.begin(); it != files_.end();) {
            File& f = it->second;
            if (f.refs != 0 || f.pending != 0 || f.unsynced) {
                ++it;
                continue;
            }
            // Nothing refers to it and nothing is waiting to be written or
            // synced in it: no thread touches it again.
            if (f.writer) {
                writers.push_back(std::move(f.writer));
                writing_.erase(it->first);
            }
            if (f.reader) --readers_;
            if (it->first == current_) current_ = 0;
            doomed.push_back(it->first);
            it = files_.erase(it);
        }
        deleted_ += doomed.size();
    }
    for (auto& w : writers) w->Close(rocksdb::IOOptions(), nullptr);  // the I/O outside the lock
    for (uint32_t n : doomed) fs_->DeleteFile(name(n), rocksdb::IOOptions(), nullptr);
    return doomed.size();
}

size_t SegmentFiles::files() const {
    std::lock_guard lk(mu_);
    return files_.size();
}

uint64_t SegmentFiles::bytes_on_disk() const {
    std::lock_guard lk(mu_);
    uint64_t b = 0;
    for (const auto& [n, f] : files_) b += f.size;
    return b;
}

uint64_t SegmentFiles::deleted_files() const {
    std::lock_guard lk(mu_);
    return deleted_;
}

}  // namespace sluice::storage
