// The follower's half of replication (net/replication.hpp): apply, sync,
// acknowledge; install a snapshot.
#include "net/replication.hpp"

#include <pthread.h>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <thread>

#include "net/replication_wire.hpp"

namespace sluice::net {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using storage::Store;
using namespace replication_wire;

// -------------------------------------------------------------- follower

struct ReplicationFollower::Impl {
    std::unique_ptr<Store>& store;
    Options options;
    mutable std::mutex mu;
    std::condition_variable cv;
    std::string host;
    uint16_t port = 0;
    uint64_t epoch = 0;
    uint64_t target_version = 0;  // bumped by follow(): the thread reconnects
    bool stopping = false;
    Socket* current = nullptr;
    std::thread thread;
    Status status;

    Impl(std::unique_ptr<Store>& s, Options o) : store(s), options(std::move(o)) {}

    void run() {
        for (;;) {
            std::string h;
            uint16_t p;
            uint64_t e, version;
            {
                std::unique_lock lk(mu);
                cv.wait(lk, [&] { return stopping || port != 0; });
                if (stopping) return;
                h = host;
                p = port;
                e = epoch;
                version = target_version;
            }
            bool refused = false;
            std::string why = session(h, p, e, version, refused);
            std::unique_lock lk(mu);
            status.connected = false;
            if (version == target_version) status.refused = refused ? status.refused + 1 : 0;
            if (stopping) return;
            if (!why.empty() && version == target_version) {
                if (why != status.error) std::cerr << "sluiced: replication: following " << h << ":" << p << ": " << why << std::endl;
                status.error = why;
            }
            // Retry soon (or at once for a new leader / after a snapshot).
            cv.wait_for(lk, std::chrono::milliseconds(why.empty() ? 0 : 200),
                        [&] { return stopping || target_version != version; });
            if (stopping) return;
        }
    }

    std::string session(const std::string& h, uint16_t p, uint64_t leader_epoch, uint64_t version, bool& refused) {
        std::string error;
        Socket sock = Socket::connect(h, p, error, &refused);
        if (!sock.valid()) return error;
        {
            std::lock_guard lk(mu);
            if (stopping || version != target_version) return "";
            current = &sock;
        }
        struct Detach {
            Impl& d;
            ~Detach() {
                std::lock_guard lk(d.mu);
                d.current = nullptr;
            }
        } detach{*this};
        Store::LogPosition at = store->log_position();
        std::string hello;
        put_str(hello, options.cluster_id);
        put_str(hello, options.node_id);
        put_u64(hello, at.epoch);
        put_u64(hello, at.index);
        if (!sock.send_frame(kHello, hello)) return "the leader closed the connection";
        uint8_t type;
        std::string payload;
        if (!sock.recv_frame(type, payload)) return "no answer from the leader";
        if (type == kReject) {
            Reader r{payload};
            return "refused: " + r.str();
        }
        if (type != kWelcome) return "unexpected frame from the leader";
        Reader w{payload};
        const uint64_t their_epoch = w.u64();
        const bool snapshot = w.u8() == 1;
        const uint64_t their_last = w.u64();
        if (!w.ok) return "malformed welcome";
        if (their_epoch < leader_epoch) return "the leader's epoch " + std::to_string(their_epoch) + " is older than " + std::to_string(leader_epoch) + ": refused";
        {
            std::lock_guard lk(mu);
            status.connected = true;
            status.streamed_from_leader = true;
            status.leader_index = their_last;
            status.position = at;
            status.error.clear();
        }
        if (snapshot) return receive_snapshot(sock);
        uint64_t next = at.index + 1;
        uint64_t synced = at.index;  // acks name only what is synced
        std::string data;  // a batch's bytes, apart from its 16-byte position
        for (;;) {
            if (!sock.recv_frame(type, payload, data, 16)) return "the leader went silent";
            if (type == kHeartbeat) {
                Reader r{payload};
                uint64_t l = r.u64();
                {
                    std::lock_guard lk(mu);
                    status.leader_index = l;
                }
                if (next - 1 > synced) {  // batches applied unsynced just before
                    std::string err = store->sync();
                    if (!err.empty()) return "syncing: " + err;
                    synced = next - 1;
                }
                std::string ack;  // also tells the leader this follower is alive
                put_u64(ack, synced);
                if (!sock.send_frame(kAck, ack)) return "the leader closed the connection";
            } else if (type == kBatch) {
                Reader r{payload};
                const uint64_t e = r.u64(), index = r.u64();
                if (!r.ok) return "malformed batch";
                if (e < their_epoch) return "a batch of epoch " + std::to_string(e) + " from a leader of epoch " + std::to_string(their_epoch) + ": refused";
                if (index != next) return "a gap in the log: expected " + std::to_string(next) + ", got " + std::to_string(index);
                // Several batches that arrive together are applied together
                // and synced once, by the last of them.
                const bool more = sock.pending() > 0;
                std::string err = store->apply(std::move(data), !more);
                data.clear();
                if (!err.empty()) return "applying " + std::to_string(index) + ": " + err;
                next = index + 1;
                if (!more) synced = index;
                {
                    std::lock_guard lk(mu);
                    status.position = {e, index};
                    status.leader_index = std::max(status.leader_index, index);
                }
                if (!more) {
                    std::string ack;
                    put_u64(ack, synced);
                    if (!sock.send_frame(kAck, ack)) return "the leader closed the connection";
                }
            } else {
                return "unexpected frame " + std::to_string(type);
            }
            std::lock_guard lk(mu);
            if (stopping || version != target_version) return "";
        }
    }

    std::string receive_snapshot(Socket& sock) {
        const fs::path db = store->path();
        const fs::path incoming = db.string() + ".snapshot";
        std::error_code ec;
        fs::remove_all(incoming, ec);
        fs::create_directories(incoming, ec);
        if (ec) return "creating " + incoming.string() + ": " + ec.message();
        uint8_t type;
        std::string payload;
        for (;;) {
            if (!sock.recv_frame(type, payload)) return "the snapshot was cut off";
            if (type == kSnapshotEnd) break;
            if (type != kFile) return "unexpected frame in a snapshot";
            Reader r{payload};
            std::string name = r.str();
            uint64_t size = r.u64();
            if (!r.ok || name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
                return "malformed snapshot file";
            const fs::path path = incoming / name;
            FILE* out = std::fopen(path.c_str(), "wb");
            if (!out) return "creating " + path.string() + ": " + std::strerror(errno);
            bool ok = true;
            while (size > 0 && ok) {
                ok = sock.recv_frame(type, payload) && type == kData && payload.size() <= size;
                if (ok) ok = std::fwrite(payload.data(), 1, payload.size(), out) == payload.size();
                size -= ok ? payload.size() : 0;
            }
            ok = ok && std::fflush(out) == 0 && ::fsync(fileno(out)) == 0;  // durable before it replaces anything
            std::fclose(out);
            if (!ok) return "receiving " + path.string() + " failed";
        }
        // Install: the old store goes only once the new one is complete.
        store.reset();
        const fs::path old = db.string() + ".old";
        fs::remove_all(old, ec);
        fs::rename(db, old, ec);
        sync_directory(incoming);
        fs::rename(incoming, db, ec);
        std::string error;
        storage::StoreOptions so = options.store_options;
        so.path = db.string();
        store = Store::open(so, error);
        if (!store) {
            std::cerr << "sluiced: replication: fatal: the snapshot does not open (" << error << ")" << std::endl;
            std::_Exit(75);
        }
        sync_directory(db.parent_path());  // the renames, before the old copy goes
        fs::remove_all(old, ec);
        Store::LogPosition at = store->log_position();
        std::cerr << "sluiced: replication: installed a snapshot of the leader's store at " << position_text(at) << std::endl;
        std::lock_guard lk(mu);
        ++status.snapshots;
        status.position = at;
        return "";
    }
};

ReplicationFollower::ReplicationFollower(std::unique_ptr<Store>& store, Options options)
    : impl_(std::make_unique<Impl>(store, std::move(options))) {
    impl_->status.position = store->log_position();
    impl_->thread = std::thread([d = impl_.get()] {
        pthread_setname_np(pthread_self(), "repl-follow");
        d->run();
    });
}

ReplicationFollower::~ReplicationFollower() { stop(); }

void ReplicationFollower::follow(const std::string& host, uint16_t port, uint64_t epoch) {
    {
        std::lock_guard lk(impl_->mu);
        if (host == impl_->host && port == impl_->port && epoch == impl_->epoch) return;
        impl_->host = host;
        impl_->port = port;
        impl_->epoch = epoch;
        ++impl_->target_version;
        impl_->status.streamed_from_leader = false;
        impl_->status.refused = 0;
        if (impl_->current) impl_->current->shutdown();
    }
    impl_->cv.notify_all();
}

void ReplicationFollower::stop() {
    {
        std::lock_guard lk(impl_->mu);
        impl_->stopping = true;
        if (impl_->current) impl_->current->shutdown();
    }
    impl_->cv.notify_all();
    if (impl_->thread.joinable()) impl_->thread.join();
}

ReplicationFollower::Status ReplicationFollower::status() const {
    std::lock_guard lk(impl_->mu);
    return impl_->status;
}

}  // namespace sluice::net
