// Replication's wire, shared by the leader's and the follower's halves
// (replication_leader.cpp, replication_follower.cpp; the interface is
// replication.hpp): frames of u32 length (big-endian) | u8 type | payload over
// a blocking TCP socket with timeouts. Private to net/.
#pragma once

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include "storage/store.hpp"

namespace sluice::net::replication_wire {

namespace fs = std::filesystem;
using storage::Store;

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

inline void put_u64(std::string& out, uint64_t v) { storage::append_u64_key(out, v); }
inline void put_str(std::string& out, std::string_view s) {
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

inline void sync_directory(const fs::path& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    ::fsync(fd);
    ::close(fd);
}

inline std::string position_text(Store::LogPosition p) {
    return "epoch " + std::to_string(p.epoch) + " index " + std::to_string(p.index);
}

}  // namespace sluice::net::replication_wire
