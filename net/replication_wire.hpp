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
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

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
    Socket(Socket&& o) noexcept : fd_(o.fd_), rbuf_(std::move(o.rbuf_)), rpos_(o.rpos_) {
        o.fd_ = -1;
        o.rpos_ = 0;
    }
    Socket& operator=(Socket&& o) noexcept {
        if (this != &o) {
            close();
            fd_ = o.fd_;
            o.fd_ = -1;
            rbuf_ = std::move(o.rbuf_);
            rpos_ = o.rpos_;
            o.rpos_ = 0;
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

    // Frames, each `type` then the bytes of `a` and `b`, in one sendmsg per
    // IOV_MAX parts (the socket has TCP_NODELAY: separate sends of a head and
    // its parts would be separate segments, each waking the reader).
    struct Frame {
        uint8_t type;
        std::string_view a, b;
    };
    bool send_frames(const std::vector<Frame>& frames) {
        std::vector<std::array<char, 5>> heads(frames.size());
        std::vector<iovec> parts;
        parts.reserve(frames.size() * 3);
        for (size_t i = 0; i < frames.size(); ++i) {
            const Frame& f = frames[i];
            put_head(heads[i], f.type, f.a.size() + f.b.size());
            parts.push_back({heads[i].data(), heads[i].size()});
            parts.push_back({const_cast<char*>(f.a.data()), f.a.size()});
            parts.push_back({const_cast<char*>(f.b.data()), f.b.size()});
        }
        constexpr size_t kMaxParts = 1023 / 3 * 3;  // IOV_MAX is 1024 on Linux
        for (size_t at = 0; at < parts.size(); at += kMaxParts)
            if (!send_parts(parts.data() + at, std::min(kMaxParts, parts.size() - at))) return false;
        return true;
    }
    bool send_frame(uint8_t type, std::string_view a, std::string_view b = {}) {
        std::array<char, 5> head;
        put_head(head, type, a.size() + b.size());
        iovec parts[3] = {{head.data(), head.size()},
                          {const_cast<char*>(a.data()), a.size()},
                          {const_cast<char*>(b.data()), b.size()}};
        return send_parts(parts, 3);
    }

    // Sends what it can of one frame without blocking. `part`: `rest` holds
    // the bytes still to go, which must follow before any other frame.
    // `none`: the socket's buffer is full.
    enum class Sent { all, part, none, error };
    Sent try_send_frame(uint8_t type, std::string_view a, std::string_view b, std::string& rest) {
        std::array<char, 5> head;
        put_head(head, type, a.size() + b.size());
        iovec parts[3] = {{head.data(), head.size()},
                          {const_cast<char*>(a.data()), a.size()},
                          {const_cast<char*>(b.data()), b.size()}};
        msghdr m{};
        m.msg_iov = parts;
        m.msg_iovlen = 3;
        ssize_t n;
        do {
            n = ::sendmsg(fd_, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? Sent::none : Sent::error;
        rest.clear();
        size_t skip = static_cast<size_t>(n);
        for (const iovec& p : parts) {
            const size_t k = std::min(skip, p.iov_len);
            rest.append(static_cast<const char*>(p.iov_base) + k, p.iov_len - k);
            skip -= k;
        }
        return rest.empty() ? Sent::all : Sent::part;
    }
    // Bytes as they are (the rest of a frame that try_send_frame began).
    bool send_raw(std::string_view bytes) {
        iovec part{const_cast<char*>(bytes.data()), bytes.size()};
        return send_parts(&part, 1);
    }

    // Reads one frame, its first `split` bytes (or fewer) into `head` and
    // the rest into `rest` (a batch's position apart from its data, which can
    // then be handed on without a copy). False on EOF, error or timeout.
    bool recv_frame(uint8_t& type, std::string& head, std::string& rest, size_t split) {
        char h[5];
        if (!recv_all(h, 5)) return false;
        uint32_t n = storage::read_u32_be(std::string_view(h, 4), 0);
        if (n == 0 || n > kMaxFrame) return false;
        type = static_cast<uint8_t>(h[4]);
        const size_t first = std::min<size_t>(split, n - 1);
        head.resize(first);
        rest.resize(n - 1 - first);
        return recv_all(head.data(), first) && recv_all(rest.data(), rest.size());
    }
    // The whole payload in one string.
    bool recv_frame(uint8_t& type, std::string& payload) {
        std::string none;
        return recv_frame(type, payload, none, SIZE_MAX);
    }

    // Bytes received and not yet read (buffered here or in the socket).
    size_t pending() const {
        int n = 0;
        const size_t buffered = rbuf_.size() - rpos_;
        return buffered + (::ioctl(fd_, FIONREAD, &n) == 0 && n > 0 ? static_cast<size_t>(n) : 0);
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
    bool send_parts(iovec* parts, size_t count) {
        size_t left = 0;
        for (size_t i = 0; i < count; ++i) left += parts[i].iov_len;
        while (left > 0) {
            while (count > 0 && parts->iov_len == 0) {
                ++parts;
                --count;
            }
            msghdr m{};
            m.msg_iov = parts;
            m.msg_iovlen = count;
            ssize_t n = ::sendmsg(fd_, &m, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            left -= static_cast<size_t>(n);
            for (size_t done = static_cast<size_t>(n); done > 0;) {  // a partial send: skip what went
                const size_t k = std::min(done, parts->iov_len);
                parts->iov_base = static_cast<char*>(parts->iov_base) + k;
                parts->iov_len -= k;
                done -= k;
                if (parts->iov_len == 0 && count > 1) {
                    ++parts;
                    --count;
                }
            }
        }
        return true;
    }
    // u32 length (type and payload), then the type.
    static void put_head(std::array<char, 5>& h, uint8_t type, size_t payload) {
        const uint32_t n = static_cast<uint32_t>(1 + payload);
        for (int k = 0; k < 4; ++k) h[k] = static_cast<char>(n >> (24 - 8 * k));
        h[4] = static_cast<char>(type);
    }
    // Small reads (frame heads, acks, heartbeats) come from a buffer filled
    // a socket read at a time; a large payload is read straight into place.
    bool recv_all(char* p, size_t n) {
        while (n > 0) {
            if (rpos_ < rbuf_.size()) {
                const size_t k = std::min(n, rbuf_.size() - rpos_);
                std::memcpy(p, rbuf_.data() + rpos_, k);
                rpos_ += k;
                p += k;
                n -= k;
                continue;
            }
            rbuf_.clear();
            rpos_ = 0;
            if (n >= kReadBuffer) return recv_direct(p, n);
            rbuf_.resize(kReadBuffer);
            ssize_t r = ::recv(fd_, rbuf_.data(), kReadBuffer, 0);
            if (r < 0 && errno == EINTR) r = 0;
            else if (r <= 0) {
                rbuf_.clear();
                return false;
            }
            rbuf_.resize(static_cast<size_t>(r));
        }
        return true;
    }
    bool recv_direct(char* p, size_t n) {
        while (n > 0) {
            ssize_t r = ::recv(fd_, p, n, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return false;
            p += r;
            n -= static_cast<size_t>(r);
        }
        return true;
    }
    static constexpr size_t kReadBuffer = 16 * 1024;
    int fd_ = -1;
    std::string rbuf_;  // received, not yet read from rpos_ on
    size_t rpos_ = 0;
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
