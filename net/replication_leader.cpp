// The leader's half of replication (net/replication.hpp): the ring of recent
// batches, a thread per follower, acks, releases, snapshots.
#include "net/replication.hpp"

#include <pthread.h>
#include <arpa/inet.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <iostream>
#include <list>
#include <map>
#include <mutex>
#include <thread>

#include "net/replication_wire.hpp"

namespace sluice::net {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using storage::Store;
using namespace replication_wire;

// ---------------------------------------------------------------- leader

struct ReplicationLeader::Impl {
    Store& store;
    Options options;
    int listen_fd = -1;
    uint16_t port = 0;
    std::thread accept_thread;

    struct Entry {
        uint64_t index;
        std::shared_ptr<const std::string> data;  // shared with the senders: copied once, here
        Clock::time_point appended;
    };
    struct Replica {
        std::string node;
        std::string state = "disconnected";
        uint64_t acked = 0;
        bool connected = false;
        Socket* socket = nullptr;  // while connected (guarded by mu)
        std::thread thread;
        uint64_t generation = 0;   // which connection owns it
    };

    // A follower's outgoing stream. Its session thread sends catch-up,
    // heartbeats and whatever append() could not; append() sends a new
    // batch itself, on the commit thread, when the stream is caught up and
    // the socket takes it without blocking: the batch leaves without waking
    // the session thread, so the replicas' syncs start sooner (the confirm
    // waits for them). One sender at a time holds send_mu.
    struct Stream {
        std::mutex send_mu;
        Socket* socket = nullptr;       // guarded by send_mu; null once its session ends
        std::atomic<uint64_t> next{0};  // the next index to send: written under send_mu
        std::string tail;               // guarded by send_mu: the unsent rest of a frame append() began
        std::atomic<bool> has_tail{false};  // !tail.empty(), for the session thread's wait
    };

    mutable std::mutex mu;
    std::condition_variable cv;  // new entries the session threads must send, stop
    std::vector<std::shared_ptr<Stream>> streams;  // the sessions streaming now
    std::deque<Entry> ring;      // contiguous indexes
    size_t ring_bytes = 0;
    uint64_t last = 0;           // the last index written
    std::set<std::string> isr;
    std::map<std::string, Replica> replicas;
    // One per follower connection. Ended ones are joined and dropped at the
    // next accept (a follower that is refused reconnects every 200 ms: they
    // must not pile up), the rest at stop().
    struct Session {
        std::unique_ptr<Socket> socket;
        std::thread thread;
        std::atomic<bool> done{false};
    };
    std::list<Session> sessions;
    bool stopping = false;
    uint64_t pin = 0;                 // while a snapshot is sent: keep entries after this index
    Clock::time_point pin_until{};
    uint64_t generations = 0;
    uint64_t snapshots = 0;

    Impl(Store& s, Options o) : store(s), options(std::move(o)) {}

    void append(Store::LogPosition pos, std::string_view data) {
        std::vector<std::shared_ptr<Stream>> direct;
        {
            std::lock_guard lk(mu);
            if (pos.index <= last && !ring.empty()) return;  // shipped already (a failed sync's batch written again)
            if (!ring.empty() && pos.index != ring.back().index + 1) {
                ring.clear();  // cannot happen (one writer, in order): start afresh rather than ship a gap
                ring_bytes = 0;
            }
            ring.push_back({pos.index, std::make_shared<const std::string>(data), Clock::now()});
            ring_bytes += data.size();
            last = pos.index;
            const bool pinned = pin && Clock::now() < pin_until;
            while (ring.size() > 1 && ring_bytes > options.ring_bytes && !(pinned && ring.front().index > pin)) {
                ring_bytes -= ring.front().data->size();
                ring.pop_front();
            }
            direct = streams;
        }
        bool wake = false;  // a session thread has something to send
        std::string head;
        put_u64(head, options.epoch);
        put_u64(head, pos.index);
        for (auto& st : direct) {
            std::unique_lock sl(st->send_mu, std::try_to_lock);
            if (!sl.owns_lock() || !st->socket || st->next != pos.index || !st->tail.empty()) {
                wake = true;  // its thread is sending, or behind: it sends this one too
                continue;
            }
            switch (st->socket->try_send_frame(kBatch, head, data, st->tail)) {
                case Socket::Sent::all: st->next = pos.index + 1; break;
                case Socket::Sent::part:  // its thread sends the rest
                    st->next = pos.index + 1;
                    st->has_tail = true;
                    wake = true;
                    break;
                case Socket::Sent::none:   // a full buffer: its thread waits for room
                case Socket::Sent::error:  // its thread's next send fails and ends the session
                    wake = true;
                    break;
            }
        }
        if (wake) {
            std::lock_guard lk(mu);  // a session thread checks its wait's condition under mu
            cv.notify_all();
        }
        release();
    }

    // Confirms up to the lowest index every in-sync replica has synced.
    void release() {
        uint64_t through;
        {
            std::lock_guard lk(mu);
            through = last;
            for (const auto& node : isr) {
                auto it = replicas.find(node);
                through = std::min(through, it == replicas.end() ? 0 : it->second.acked);
            }
        }
        if (through) store.release_through(through);
    }

    // Where a follower at `f` continues: ok=false if its log left ours.
    bool on_our_history(Store::LogPosition f, uint64_t our_last) const {
        if (f.index > our_last) return false;
        if (f.index == 0) return true;
        if (f.epoch == options.epoch) return true;
        auto history = store.epoch_history();
        if (!history.count(f.epoch)) return false;
        auto next = history.upper_bound(f.epoch);
        return next == history.end() || f.index < next->second;
    }

    void session(Socket* sock, uint64_t generation) {
        uint8_t type;
        std::string payload;
        std::string node;
        auto finish = [&](const std::string& why) {
            std::lock_guard lk(mu);
            auto it = replicas.find(node);
            if (it != replicas.end() && it->second.generation == generation) {
                it->second.connected = false;
                it->second.state = "disconnected";
                it->second.socket = nullptr;
            }
            if (!why.empty() && !stopping) std::cerr << "sluiced: replication: " << (node.empty() ? "a follower" : node) << ": " << why << std::endl;
        };
        if (!sock->recv_frame(type, payload) || type != kHello) return finish("no hello");
        Reader r{payload};
        const std::string cluster = r.str();
        node = r.str();
        Store::LogPosition f{r.u64(), 0};
        f.index = r.u64();
        if (!r.ok) return finish("malformed hello");
        if (cluster != options.cluster_id) {
            std::string why;
            put_str(why, "this leader is in cluster " + options.cluster_id + ", the follower's data is of cluster " + cluster);
            sock->send_frame(kReject, why);
            return finish("refused: another cluster's data (" + cluster + ")");
        }
        uint64_t from;  // the first index to send
        bool snapshot;
        {
            std::lock_guard lk(mu);
            Replica& rep = replicas[node];
            if (rep.connected && rep.socket) rep.socket->shutdown();  // a newer connection of the same node wins
            rep.node = node;
            rep.connected = true;
            rep.socket = sock;
            rep.generation = generation;
            const uint64_t first = ring.empty() ? last + 1 : ring.front().index;
            snapshot = !on_our_history(f, last) || f.index + 1 < first;
            from = f.index + 1;
            rep.state = snapshot ? "snapshot" : "streaming";
            if (!snapshot) rep.acked = f.index;  // what it has synced
        }
        std::string welcome;
        put_u64(welcome, options.epoch);
        welcome.push_back(snapshot ? 1 : 0);
        put_u64(welcome, last_index());
        if (!sock->send_frame(kWelcome, welcome)) return finish("lost during the handshake");
        if (snapshot) {
            std::cerr << "sluiced: replication: " << node << " at " << position_text(f)
                      << " is not on this leader's log (or too far behind): sending a snapshot" << std::endl;
            std::string why = send_snapshot(*sock);
            return finish(why.empty() ? "" : "snapshot: " + why);
        }
        // Acks come in on their own thread; this one sends.
        std::atomic<bool> done{false};
        std::thread acks([&] {
            pthread_setname_np(pthread_self(), "repl-acks");
            uint8_t t;
            std::string p;
            while (sock->recv_frame(t, p)) {
                if (t != kAck) continue;
                Reader ar{p};
                uint64_t index = ar.u64();
                if (!ar.ok) break;
                {
                    std::lock_guard lk(mu);
                    auto it = replicas.find(node);
                    if (it != replicas.end() && it->second.generation == generation && index > it->second.acked)
                        it->second.acked = index;
                }
                release();
            }
            done = true;
            cv.notify_all();
        });
        std::string why = stream(*sock, from, done);
        sock->shutdown();
        acks.join();
        finish(why);
    }

    std::string stream(Socket& sock, uint64_t from, std::atomic<bool>& done) {
        auto st = std::make_shared<Stream>();
        st->socket = &sock;
        st->next = from;
        {
            std::lock_guard lk(mu);
            streams.push_back(st);
        }
        struct Leave {  // append() no longer sends on this socket once this returns
            Impl& d;
            std::shared_ptr<Stream> st;
            ~Leave() {
                {
                    std::lock_guard lk(d.mu);
                    d.streams.erase(std::find(d.streams.begin(), d.streams.end(), st));
                }
                std::lock_guard sl(st->send_mu);
                st->socket = nullptr;
            }
        } leave{*this, st};
        auto next_heartbeat = Clock::now() + kHeartbeatEvery;
        for (;;) {
            uint64_t leader_last;
            {
                std::unique_lock lk(mu);
                cv.wait_until(lk, next_heartbeat,
                              [&] { return stopping || done || last >= st->next || st->has_tail; });
                if (stopping) return "";
                if (done) return "the follower went away";
            }
            std::lock_guard sl(st->send_mu);
            if (!st->tail.empty()) {
                if (!sock.send_raw(st->tail)) return "send failed";
                st->tail.clear();
                st->has_tail = false;
            }
            std::vector<std::pair<uint64_t, std::shared_ptr<const std::string>>> out;  // sent without mu
            {
                std::lock_guard lk(mu);
                leader_last = last;
                if (last >= st->next) {
                    if (ring.empty() || ring.front().index > st->next)
                        return "fell behind the ring; it reconnects for a snapshot";
                    size_t bytes = 0;
                    for (size_t i = st->next - ring.front().index; i < ring.size() && bytes < (4u << 20); ++i) {
                        out.emplace_back(ring[i].index, ring[i].data);
                        bytes += ring[i].data->size();
                    }
                }
            }
            if (!out.empty()) {  // every batch ready, in one sendmsg
                std::vector<std::string> heads(out.size());
                std::vector<Socket::Frame> frames;
                frames.reserve(out.size());
                for (size_t i = 0; i < out.size(); ++i) {
                    put_u64(heads[i], options.epoch);
                    put_u64(heads[i], out[i].first);
                    frames.push_back({kBatch, heads[i], *out[i].second});
                }
                if (!sock.send_frames(frames)) return "send failed";
                st->next = out.back().first + 1;
            }
            if (Clock::now() >= next_heartbeat) {  // (the wait ended early only for batches to send)
                std::string hb;
                put_u64(hb, leader_last);
                if (!sock.send_frame(kHeartbeat, hb)) return "send failed";
                next_heartbeat = Clock::now() + kHeartbeatEvery;
            }
        }
    }

    std::string send_snapshot(Socket& sock) {
        std::string dir;
        {
            std::lock_guard lk(mu);
            pin = last ? last : 1;
            pin_until = Clock::now() + std::chrono::minutes(2);
            dir = (fs::path(options.snapshot_dir) / ("snapshot-" + std::to_string(++snapshots))).string();
        }
        std::error_code ec;
        fs::remove_all(dir, ec);
        fs::create_directories(fs::path(dir).parent_path(), ec);
        std::string error = store.checkpoint(dir);
        struct Cleanup {
            std::string dir;
            ~Cleanup() {
                std::error_code e;
                fs::remove_all(dir, e);
            }
        } cleanup{dir};
        if (!error.empty()) return error;
        for (const auto& entry : fs::directory_iterator(dir, ec)) {
            if (!entry.is_regular_file()) continue;
            const uint64_t size = entry.file_size();
            std::string head;
            put_str(head, entry.path().filename().string());
            put_u64(head, size);
            if (!sock.send_frame(kFile, head)) return "send failed";
            std::ifstream in(entry.path(), std::ios::binary);
            std::string chunk(1u << 20, '\0');
            uint64_t left = size;
            while (left > 0) {
                const size_t n = static_cast<size_t>(std::min<uint64_t>(left, chunk.size()));
                if (!in.read(chunk.data(), static_cast<std::streamsize>(n))) return "reading " + entry.path().string();
                if (!sock.send_frame(kData, std::string_view(chunk.data(), n))) return "send failed";
                left -= n;
            }
        }
        if (ec) return ec.message();
        if (!sock.send_frame(kSnapshotEnd, "")) return "send failed";
        // The follower installs it and connects again; wait for it to close.
        uint8_t t;
        std::string p;
        while (sock.recv_frame(t, p)) {
        }
        return "";
    }

    uint64_t last_index() const {
        std::lock_guard lk(mu);
        return last;
    }

    void accept_loop() {
        for (;;) {
            int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED) continue;
                return;  // closed by stop()
            }
            std::lock_guard lk(mu);
            if (stopping) {
                ::close(fd);
                return;
            }
            for (auto it = sessions.begin(); it != sessions.end();) {
                if (!it->done) {
                    ++it;
                    continue;
                }
                it->thread.join();  // its last step was setting done: it takes no lock now
                it = sessions.erase(it);
            }
            Session& s = sessions.emplace_back();
            s.socket = std::make_unique<Socket>(fd);
            const uint64_t gen = ++generations;
            s.thread = std::thread([this, &s, gen] {
                pthread_setname_np(pthread_self(), "repl-send");
                session(s.socket.get(), gen);
                s.done = true;
            });
        }
    }
};

ReplicationLeader::ReplicationLeader(Store& store, Options options)
    : impl_(std::make_unique<Impl>(store, std::move(options))) {}

ReplicationLeader::~ReplicationLeader() { stop(); }

std::string ReplicationLeader::start() {
    Impl& d = *impl_;
    {
        std::lock_guard lk(d.mu);
        d.last = d.store.log_position().index;
    }
    d.store.set_log_listener([&d](Store::LogPosition pos, std::string_view data) { d.append(pos, data); });
    int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool v6 = fd >= 0;
    if (!v6) fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::string("replication socket: ") + std::strerror(errno);
    int one = 1, zero = 0;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_storage ss{};
    socklen_t len;
    if (v6) {
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(d.options.port);
        a->sin6_addr = in6addr_any;
        if (!d.options.bind_host.empty()) {
            in_addr v4;
            if (::inet_pton(AF_INET, d.options.bind_host.c_str(), &v4) == 1) {
                // v4-mapped
                std::memset(&a->sin6_addr, 0, sizeof a->sin6_addr);
                a->sin6_addr.s6_addr[10] = 0xff;
                a->sin6_addr.s6_addr[11] = 0xff;
                std::memcpy(&a->sin6_addr.s6_addr[12], &v4, 4);
            } else {
                ::inet_pton(AF_INET6, d.options.bind_host.c_str(), &a->sin6_addr);
            }
        }
        len = sizeof(sockaddr_in6);
    } else {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(d.options.port);
        if (d.options.bind_host.empty() || ::inet_pton(AF_INET, d.options.bind_host.c_str(), &a->sin_addr) != 1)
            a->sin_addr.s_addr = INADDR_ANY;
        len = sizeof(sockaddr_in);
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 16) != 0) {
        std::string e = std::string("replication port ") + std::to_string(d.options.port) + ": " + std::strerror(errno);
        ::close(fd);
        return e;
    }
    sockaddr_storage bound{};
    socklen_t blen = sizeof bound;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen);
    d.port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                               : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    d.listen_fd = fd;
    d.accept_thread = std::thread([&d] {
        pthread_setname_np(pthread_self(), "repl-accept");
        d.accept_loop();
    });
    return "";
}

void ReplicationLeader::stop() {
    Impl& d = *impl_;
    {
        std::lock_guard lk(d.mu);
        if (d.stopping) return;
        d.stopping = true;
        for (auto& s : d.sessions) s.socket->shutdown();
    }
    d.cv.notify_all();
    if (d.listen_fd >= 0) {
        ::shutdown(d.listen_fd, SHUT_RDWR);
        ::close(d.listen_fd);
    }
    if (d.accept_thread.joinable()) d.accept_thread.join();
    for (auto& s : d.sessions) s.thread.join();  // no accept adds one now
    d.store.set_log_listener(nullptr);
}

uint16_t ReplicationLeader::port() const { return impl_->port; }

void ReplicationLeader::set_in_sync(const std::set<std::string>& nodes) {
    {
        std::lock_guard lk(impl_->mu);
        impl_->isr = nodes;
    }
    impl_->release();
}

uint64_t ReplicationLeader::last_index() const { return impl_->last_index(); }

std::vector<ReplicaState> ReplicationLeader::replicas() const {
    const Impl& d = *impl_;
    std::lock_guard lk(d.mu);
    std::vector<ReplicaState> out;
    auto now = Clock::now();
    std::set<std::string> names = d.isr;
    for (const auto& [name, r] : d.replicas) names.insert(name);
    for (const auto& name : names) {
        ReplicaState s;
        s.node = name;
        auto it = d.replicas.find(name);
        if (it != d.replicas.end()) {
            s.state = it->second.state;
            s.acked = it->second.acked;
        } else {
            s.state = "disconnected";
        }
        s.in_sync = d.isr.count(name) > 0;
        s.lag_batches = d.last > s.acked ? d.last - s.acked : 0;
        if (s.lag_batches) {
            for (const auto& e : d.ring) {
                if (e.index <= s.acked) continue;
                if (!s.lag_bytes) s.lag_time = std::chrono::duration_cast<std::chrono::milliseconds>(now - e.appended);
                s.lag_bytes += e.data->size();
            }
            // Older than the ring: as old as the ring's oldest, at least.
            if (!d.ring.empty() && d.ring.front().index > s.acked + 1)
                s.lag_time = std::max(s.lag_time, std::chrono::duration_cast<std::chrono::milliseconds>(
                                                      now - d.ring.front().appended));
        }
        out.push_back(std::move(s));
    }
    return out;
}

}  // namespace sluice::net
