// The power-loss file system (see power_loss_test.cpp's opening comment): a
// rocksdb::FileSystemWrapper that remembers every file's size at its last
// sync and, on "power loss", cuts every file back to it and undoes creates
// and renames whose directory was not synced. Shared by the store-level
// power-loss tests and the broker-level durability tests.
#pragma once

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace sluice::test::power {

using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;
namespace fs = std::filesystem;

inline std::string normal(const std::string& p) {
    std::string n = fs::path(p).lexically_normal().string();
    while (n.size() > 1 && n.back() == '/') n.pop_back();
    return n;
}
inline std::string dir_of(const std::string& p) { return fs::path(normal(p)).parent_path().string(); }

// ---- the power-loss file system ------------------------------------------------

struct PowerState {
    struct File {
        uint64_t size = 0;
        uint64_t synced = 0;
    };
    struct DirOp {
        enum Kind { create, rename } kind;
        std::string a, b;                // create: a; rename: a -> b
        std::optional<std::string> old;  // rename: what b held before, if anything
    };

    std::mutex mu;
    bool powered = true;
    bool fail_syncs = false;   // Sync/Fsync return an I/O error (the data stays in the page cache)
    bool fail_after_sync = false;  // Sync/Fsync make the data durable, then report an I/O error
    bool disk_full = false;    // Append returns NoSpace
    std::chrono::milliseconds sync_delay{0};  // a slow disk: every file sync takes this long
    std::map<std::string, File> files;                  // files written through us
    std::map<std::string, std::vector<DirOp>> pending;  // dir -> ops not yet made durable
    uint64_t file_syncs = 0, dir_syncs = 0;
    std::vector<std::thread::id> opened_on;  // LockFile's callers
    uint64_t dropped_bytes = 0, dropped_files = 0, reverted_renames = 0;

    bool on() {
        std::lock_guard lk(mu);
        return powered;
    }
    void appended(const std::string& name, uint64_t end) {
        std::lock_guard lk(mu);
        auto it = files.find(name);
        if (it != files.end()) it->second.size = std::max(it->second.size, end);
    }
};

class TrackedFile : public rocksdb::FSWritableFileOwnerWrapper {
public:
    TrackedFile(std::unique_ptr<rocksdb::FSWritableFile> f, std::shared_ptr<PowerState> st, std::string name)
        : FSWritableFileOwnerWrapper(std::move(f)), st_(std::move(st)), name_(std::move(name)) {}

    IOStatus Append(const Slice& data, const IOOptions& o, IODebugContext* d) override {
        if (IOStatus f = fault(); !f.ok()) return f;
        IOStatus s = FSWritableFileOwnerWrapper::Append(data, o, d);
        if (s.ok()) record(written_ + data.size());
        return s;
    }
    IOStatus Append(const Slice& data, const IOOptions& o, const rocksdb::DataVerificationInfo& v,
                    IODebugContext* d) override {
        if (IOStatus f = fault(); !f.ok()) return f;
        IOStatus s = FSWritableFileOwnerWrapper::Append(data, o, v, d);
        if (s.ok()) record(written_ + data.size());
        return s;
    }
    IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& o, IODebugContext* d) override {
        if (IOStatus f = fault(); !f.ok()) return f;
        IOStatus s = FSWritableFileOwnerWrapper::PositionedAppend(data, offset, o, d);
        if (s.ok()) record(offset + data.size());
        return s;
    }
    IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& o,
                              const rocksdb::DataVerificationInfo& v, IODebugContext* d) override {
        if (IOStatus f = fault(); !f.ok()) return f;
        IOStatus s = FSWritableFileOwnerWrapper::PositionedAppend(data, offset, o, v, d);
        if (s.ok()) record(offset + data.size());
        return s;
    }
    IOStatus Truncate(uint64_t size, const IOOptions& o, IODebugContext* d) override {
        IOStatus s = FSWritableFileOwnerWrapper::Truncate(size, o, d);
        if (s.ok()) {
            written_ = size;
            std::lock_guard lk(st_->mu);
            auto it = st_->files.find(name_);
            if (it != st_->files.end()) {
                it->second.size = size;
                if (st_->powered) it->second.synced = std::min(it->second.synced, size);
            }
        }
        return s;
    }
    IOStatus Sync(const IOOptions& o, IODebugContext* d) override {
        return sync([&] { return FSWritableFileOwnerWrapper::Sync(o, d); });
    }
    IOStatus Fsync(const IOOptions& o, IODebugContext* d) override {
        return sync([&] { return FSWritableFileOwnerWrapper::Fsync(o, d); });
    }
    // RangeSync (sync_file_range) starts write-back and promises nothing: it
    // is forwarded by the base class and is not a sync point here.

private:
    IOStatus fault() {
        std::lock_guard lk(st_->mu);
        if (st_->disk_full) return IOStatus::NoSpace("injected: no space left on device");
        return IOStatus::OK();
    }
    void record(uint64_t end) {
        written_ = std::max(written_, end);
        st_->appended(name_, end);
    }
    template <typename F>
    IOStatus sync(F&& do_sync) {
        uint64_t covered;
        std::chrono::milliseconds delay;
        {
            std::lock_guard lk(st_->mu);
            if (st_->fail_syncs) return IOStatus::IOError("injected sync failure");
            auto it = st_->files.find(name_);
            covered = it != st_->files.end() ? it->second.size : 0;  // what this sync is sure to cover
            delay = st_->sync_delay;
        }
        if (delay.count() > 0) std::this_thread::sleep_for(delay);
        IOStatus s = do_sync();
        std::lock_guard lk(st_->mu);
        if (s.ok() && st_->powered) {  // a sync that ends after the cut did not happen
            ++st_->file_syncs;
            auto it = st_->files.find(name_);
            if (it != st_->files.end()) it->second.synced = std::max(it->second.synced, covered);
        }
        if (s.ok() && st_->fail_after_sync) return IOStatus::IOError("injected sync failure after the data was synced");
        return s;
    }

    std::shared_ptr<PowerState> st_;
    std::string name_;
    uint64_t written_ = 0;
};

class TrackedDir : public rocksdb::FSDirectoryWrapper {
public:
    TrackedDir(std::unique_ptr<rocksdb::FSDirectory> d, std::shared_ptr<PowerState> st, std::string name)
        : FSDirectoryWrapper(std::move(d)), st_(std::move(st)), name_(std::move(name)) {}
    IOStatus Fsync(const IOOptions& o, IODebugContext* d) override {
        return sync([&] { return FSDirectoryWrapper::Fsync(o, d); });
    }
    IOStatus FsyncWithDirOptions(const IOOptions& o, IODebugContext* d,
                                 const rocksdb::DirFsyncOptions& opts) override {
        return sync([&] { return FSDirectoryWrapper::FsyncWithDirOptions(o, d, opts); });
    }

private:
    template <typename F>
    IOStatus sync(F&& do_sync) {
        size_t covered;
        {
            std::lock_guard lk(st_->mu);
            if (st_->fail_syncs) return IOStatus::IOError("injected sync failure");
            covered = st_->pending[name_].size();
        }
        IOStatus s = do_sync();
        std::lock_guard lk(st_->mu);
        if (s.ok() && st_->powered) {
            ++st_->dir_syncs;
            auto& ops = st_->pending[name_];
            // what was pending when the fsync began is durable now
            ops.erase(ops.begin(), ops.begin() + static_cast<ptrdiff_t>(std::min(covered, ops.size())));
        }
        if (s.ok() && st_->fail_after_sync) return IOStatus::IOError("injected sync failure after the data was synced");
        return s;
    }
    std::shared_ptr<PowerState> st_;
    std::string name_;
};

class PowerLossFileSystem : public rocksdb::FileSystemWrapper {
public:
    explicit PowerLossFileSystem(std::shared_ptr<rocksdb::FileSystem> base)
        : FileSystemWrapper(std::move(base)), st_(std::make_shared<PowerState>()) {}
    const char* Name() const override { return "SluicePowerLossFileSystem"; }

    // The instant of the power loss: nothing from now on becomes durable.
    void cut_power() {
        std::lock_guard lk(st_->mu);
        st_->powered = false;
    }
    bool powered() { return st_->on(); }
    void fail_syncs(bool on) {
        std::lock_guard lk(st_->mu);
        st_->fail_syncs = on;
    }
    void fail_after_sync(bool on) {
        std::lock_guard lk(st_->mu);
        st_->fail_after_sync = on;
    }
    void disk_full(bool on) {
        std::lock_guard lk(st_->mu);
        st_->disk_full = on;
    }
    void sync_delay(std::chrono::milliseconds d) {
        std::lock_guard lk(st_->mu);
        st_->sync_delay = d;
    }
    // With the database closed: leave the disk as the power loss did.
    void drop_unsynced() {
        std::lock_guard lk(st_->mu);
        for (const auto& [name, f] : st_->files) {
            std::error_code ec;
            uint64_t size = fs::file_size(name, ec);
            if (!ec && size > f.synced) {
                fs::resize_file(name, f.synced, ec);
                if (!ec) st_->dropped_bytes += size - f.synced;
            }
        }
        for (auto& [dir, ops] : st_->pending) {
            for (auto it = ops.rbegin(); it != ops.rend(); ++it) {
                std::error_code ec;
                if (it->kind == PowerState::DirOp::create) {
                    if (fs::remove(it->a, ec)) ++st_->dropped_files;
                } else {
                    fs::rename(it->b, it->a, ec);
                    if (it->old) std::ofstream(it->b, std::ios::binary | std::ios::trunc) << *it->old;
                    ++st_->reverted_renames;
                }
            }
        }
        st_->files.clear();
        st_->pending.clear();
    }
    void restore_power() {
        std::lock_guard lk(st_->mu);
        st_->powered = true;
        st_->fail_syncs = false;
        st_->fail_after_sync = false;
        st_->disk_full = false;
    }
    std::string report() {
        std::lock_guard lk(st_->mu);
        std::ostringstream o;
        o << st_->file_syncs << " file syncs, " << st_->dir_syncs << " dir syncs before the cut; power loss dropped "
          << st_->dropped_bytes << " bytes, " << st_->dropped_files << " files, reverted " << st_->reverted_renames
          << " renames";
        return o.str();
    }
    uint64_t dropped_bytes() {
        std::lock_guard lk(st_->mu);
        return st_->dropped_bytes;
    }
    // The threads that opened a database here (RocksDB locks its LOCK file
    // at every open), oldest first.
    std::vector<std::thread::id> opened_on() {
        std::lock_guard lk(st_->mu);
        return st_->opened_on;
    }

    IOStatus LockFile(const std::string& f, const IOOptions& o, rocksdb::FileLock** l, IODebugContext* d) override {
        {
            std::lock_guard lk(st_->mu);
            st_->opened_on.push_back(std::this_thread::get_id());
        }
        return target()->LockFile(f, o, l, d);
    }

    IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& opts,
                             std::unique_ptr<rocksdb::FSWritableFile>* r, IODebugContext* d) override {
        std::string n = normal(f);
        bool existed = fs::exists(n);
        std::unique_ptr<rocksdb::FSWritableFile> inner;
        IOStatus s = target()->NewWritableFile(f, opts, &inner, d);
        if (!s.ok()) return s;
        {
            std::lock_guard lk(st_->mu);
            st_->files[n] = PowerState::File{};  // (re)created empty, nothing synced
            if (!existed) st_->pending[dir_of(n)].push_back({PowerState::DirOp::create, n, {}, {}});
        }
        *r = std::make_unique<TrackedFile>(std::move(inner), st_, n);
        return s;
    }
    IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& opts,
                                std::unique_ptr<rocksdb::FSWritableFile>* r, IODebugContext* d) override {
        std::string n = normal(f);
        std::unique_ptr<rocksdb::FSWritableFile> inner;
        IOStatus s = target()->ReopenWritableFile(f, opts, &inner, d);
        if (!s.ok()) return s;
        std::error_code ec;
        uint64_t size = fs::file_size(n, ec);
        {
            std::lock_guard lk(st_->mu);
            if (!st_->files.count(n)) st_->files[n] = PowerState::File{size, size};
        }
        *r = std::make_unique<TrackedFile>(std::move(inner), st_, n);
        return s;
    }
    IOStatus ReuseWritableFile(const std::string&, const std::string&, const rocksdb::FileOptions&,
                               std::unique_ptr<rocksdb::FSWritableFile>*, IODebugContext*) override {
        return IOStatus::NotSupported("log recycling is not modelled");
    }
    IOStatus NewDirectory(const std::string& name, const IOOptions& o, std::unique_ptr<rocksdb::FSDirectory>* r,
                          IODebugContext* d) override {
        std::unique_ptr<rocksdb::FSDirectory> inner;
        IOStatus s = target()->NewDirectory(name, o, &inner, d);
        if (s.ok()) *r = std::make_unique<TrackedDir>(std::move(inner), st_, normal(name));
        return s;
    }
    IOStatus DeleteFile(const std::string& f, const IOOptions& o, IODebugContext* d) override {
        std::string n = normal(f);
        {
            std::lock_guard lk(st_->mu);
            if (!st_->powered) return IOStatus::OK();  // after the cut: it is still there after the loss
        }
        IOStatus s = target()->DeleteFile(f, o, d);
        if (s.ok()) {
            std::lock_guard lk(st_->mu);
            st_->files.erase(n);
            auto& ops = st_->pending[dir_of(n)];
            ops.erase(std::remove_if(ops.begin(), ops.end(),
                                     [&](const PowerState::DirOp& op) {
                                         return op.kind == PowerState::DirOp::create && op.a == n;
                                     }),
                      ops.end());
        }
        return s;
    }
    IOStatus RenameFile(const std::string& src, const std::string& dst, const IOOptions& o,
                        IODebugContext* d) override {
        std::string a = normal(src), b = normal(dst);
        std::optional<std::string> old;
        std::error_code ec;
        if (fs::is_regular_file(b, ec)) {
            std::ifstream in(b, std::ios::binary);
            old = std::string(std::istreambuf_iterator<char>(in), {});
        }
        IOStatus s = target()->RenameFile(src, dst, o, d);
        if (s.ok()) {
            std::lock_guard lk(st_->mu);
            auto it = st_->files.find(a);
            if (it != st_->files.end()) {
                st_->files[b] = it->second;
                st_->files.erase(a);
            } else {
                st_->files.erase(b);
            }
            st_->pending[dir_of(b)].push_back({PowerState::DirOp::rename, a, b, std::move(old)});
        }
        return s;
    }

private:
    std::shared_ptr<PowerState> st_;
};

}  // namespace sluice::test::power
