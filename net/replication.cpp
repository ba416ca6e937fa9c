#include "net/replication.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <list>
#include <map>
#include <mutex>
#include <thread>

namespace sluice::net {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using storage::Store;

namespace {

enum Frame : uint8_t {
    kHello = 1,      // f→l: cluster, node, epoch, index
    kWelcome = 2,    // l→f: epoch, mode (0 stream, 1 snapshot), leader's last index
    kReject = 3,     // l→f: reason
    kBatch = 4,      // l→f: epoch, index, data
    kHeartbeat = 5,  // l→f: leader's last index
    kAck = 6,        // f→l: index synced
    kFile = 7,       // l→f: name, size; then kData frames with its bytes
    kData = 8,
    kSnapshotEnd = 9,
};

constexpr auto kIoTimeout = std::chrono::seconds(3);  // a peer silent this long is gone
constexpr auto kHeartbeatEvery = std::chrono::milliseconds(250);
constexpr size_t kMaxFrame = 1u << 30;

void put_u64(std::string& out, uint64_t v) { storage::append_u64_key(out, v); }
void put_str(std::string& out, std::string_view s) {
    storage::append_u32_be(out, static_cast<uint32_t>(s.size()));
    out.append(s);
}

struct Reader {
    std::string_view in;
    bool ok = true;
    uint64_t u64() {
        if (in.size() < 8) return ok = false, 0;
        uint64_t v = storage::read_u64_key(in, 0);
        in.remove_prefix(8);
        return v;
    }
    uint8_t u8() {
        if (in.empty()) return ok = false, 0;
        uint8_t v = static_cast<uint8_t>(in[0]);
        in.remove_prefix(1);
        return v;
    }
    std::string str() {
        uint32_t n = storage::read_u32_be(in, 0);
        if (in.size() < 4 || in.size() - 4 < n) return ok = false, std::string();
        std::string s(in.substr(4, n));
        in.remove_prefix(4 + n);
        return s;
    }
};

// A blocking TCP socket with send/receive timeouts.
class Socket {
public:
    Socket() = default;
    explicit Socket(int fd) : fd_(fd) { configure(); }
    ~Socket() { close(); }
    Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
    Socket& operator=(Socket&& o) noexcept {
        if (this != &o) {
            close();
            fd_ = o.fd_;
            o.fd_ = -1;
        }
        return *this;
    }
    int fd() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    // Wakes a thread blocked on this socket (close() could race with it).
    void shutdown() {
        if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
    }

    static Socket connect(const std::string& host, uint16_t port, std::string& error, bool* refused = nullptr) {
        if (refused) *refused = false;
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
        if (rc != 0) {
            error = "resolving " + host + ": " + gai_strerror(rc);
            return Socket();
        }
        Socket s;
        for (addrinfo* a = res; a; a = a->ai_next) {
            int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
            if (fd < 0) continue;
            // A bounded connect: non-blocking, then poll.
            int flags = 1;
            ::ioctl(fd, FIONBIO, &flags);
            int r = ::connect(fd, a->ai_addr, a->ai_addrlen);
            if (r != 0 && errno == EINPROGRESS) {
                pollfd p{fd, POLLOUT, 0};
                r = ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kIoTimeout).count())) == 1 ? 0 : -1;
                int err = 0;
                socklen_t len = sizeof err;
                if (r == 0 && (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)) {
                    errno = err;
                    r = -1;
                } else if (r != 0) {
                    errno = ETIMEDOUT;
                }
            }
            if (r == 0) {
                flags = 0;
                ::ioctl(fd, FIONBIO, &flags);
                s = Socket(fd);
                break;
            }
            error = "connecting to " + host + ":" + std::to_string(port) + ": " + std::strerror(errno);
            if (refused) *refused = errno == ECONNREFUSED;
            ::close(fd);
        }
        ::freeaddrinfo(res);
        if (s.valid()) error.clear();
        return s;
    }

    bool send_frame(uint8_t type, std::string_view a, std::string_view b = {}) {
        std::string head;
        storage::append_u32_be(head, static_cast<uint32_t>(1 + a.size() + b.size()));
        head.push_back(static_cast<char>(type));
        return send_all(head) && send_all(a) && send_all(b);
    }

    // Reads one frame. False on EOF, error or timeout.
    bool recv_frame(uint8_t& type, std::string& payload) {
        char head[5];
        if (!recv_all(head, 5)) return false;
        uint32_t n = storage::read_u32_be(std::string_view(head, 4), 0);
        if (n == 0 || n > kMaxFrame) return false;
        type = static_cast<uint8_t>(head[4]);
        payload.resize(n - 1);
        return recv_all(payload.data(), n - 1);
    }

    // Bytes already received and not yet read.
    size_t pending() const {
        int n = 0;
        return ::ioctl(fd_, FIONREAD, &n) == 0 && n > 0 ? static_cast<size_t>(n) : 0;
    }

private:
    void configure() {
        int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        timeval tv{};
        tv.tv_sec = std::chrono::duration_cast<std::chrono::seconds>(kIoTimeout).count();
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    bool send_all(std::string_view data) {
        while (!data.empty()) {
            ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            data.remove_prefix(static_cast<size_t>(n));
        }
        return true;
    }
    bool recv_all(char* p, size_t n) {
        while (n > 0) {
            ssize_t r = ::recv(fd_, p, n, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return false;
            p += r;
            n -= static_cast<size_t>(r);
        }
        return true;
    }
    int fd_ = -1;
};

void sync_directory(const fs::path& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    ::fsync(fd);
    ::close(fd);
}

std::string position_text(Store::LogPosition p) {
    return "epoch " + std::to_string(p.epoch) + " index " + std::to_string(p.index);
}

}  // namespace

// ---------------------------------------------------------------- leader

struct ReplicationLeader::Impl {
    Store& store;
    Options options;
    int listen_fd = -1;
    uint16_t port = 0;
    std::thread accept_thread;

    struct Entry {
        uint64_t index;
        std::string data;
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

    mutable std::mutex mu;
    std::condition_variable cv;  // new entries, stop
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
        {
            std::lock_guard lk(mu);
            if (pos.index <= last && !ring.empty()) return;  // shipped already (a failed sync's batch written again)
            if (!ring.empty() && pos.index != ring.back().index + 1) {
                ring.clear();  // cannot happen (one writer, in order): start afresh rather than ship a gap
                ring_bytes = 0;
            }
            ring.push_back({pos.index, std::string(data), Clock::now()});
            ring_bytes += data.size();
            last = pos.index;
            const bool pinned = pin && Clock::now() < pin_until;
            while (ring.size() > 1 && ring_bytes > options.ring_bytes && !(pinned && ring.front().index > pin)) {
                ring_bytes -= ring.front().data.size();
                ring.pop_front();
            }
        }
        cv.notify_all();
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
        auto next_heartbeat = Clock::now() + kHeartbeatEvery;
        for (;;) {
            std::vector<std::pair<uint64_t, std::string>> out;  // copies: sent without the lock
            uint64_t leader_last;
            {
                std::unique_lock lk(mu);
                cv.wait_until(lk, next_heartbeat, [&] { return stopping || done || last >= from; });
                if (stopping) return "";
                if (done) return "the follower went away";
                leader_last = last;
                if (last >= from) {
                    if (ring.empty() || ring.front().index > from) return "fell behind the ring; it reconnects for a snapshot";
                    size_t bytes = 0;
                    for (size_t i = from - ring.front().index; i < ring.size() && bytes < (4u << 20); ++i) {
                        out.emplace_back(ring[i].index, ring[i].data);
                        bytes += ring[i].data.size();
                    }
                }
            }
            for (auto& [index, data] : out) {
                std::string head;
                put_u64(head, options.epoch);
                put_u64(head, index);
                if (!sock.send_frame(kBatch, head, data)) return "send failed";
                from = index + 1;
            }
            if (out.empty() || Clock::now() >= next_heartbeat) {
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
    d.accept_thread = std::thread([&d] { d.accept_loop(); });
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
                s.lag_bytes += e.data.size();
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
        for (;;) {
            if (!sock.recv_frame(type, payload)) return "the leader went silent";
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
                std::string err = store->apply(r.in, !more);
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
    impl_->thread = std::thread([d = impl_.get()] { d->run(); });
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
