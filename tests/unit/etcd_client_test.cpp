// net/etcd_client.* against a real etcd 3.4 (Debian's etcd-server): one
// single-member etcd per test binary run, on ephemeral loopback ports with a
// temp data dir. Without /usr/bin/etcd the tests skip, unless CI is set:
// then they fail, so a CI image without etcd-server cannot pass silently.
#include "net/etcd_client.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace sluice::net {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kEtcd = "/usr/bin/etcd";

// A loopback socket bound to a port the kernel picked; listening when asked
// (then connects succeed into the backlog and nothing ever answers).
class BoundSocket {
public:
    explicit BoundSocket(bool listening = false) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
            (listening && ::listen(fd_, 16) != 0) || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
            throw std::runtime_error("cannot bind a loopback port");
        port_ = ntohs(a.sin_port);
    }
    ~BoundSocket() { close(); }
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    int fd() const { return fd_; }
    uint16_t port() const { return port_; }
    std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }

private:
    int fd_ = -1;
    uint16_t port_ = 0;
};

// An endpoint where nothing listens: connects are refused.
std::string dead_endpoint() { return BoundSocket().endpoint(); }

// A stand-in for an etcd member that misbehaves: on each of `connections`
// connections it reads one request, writes `response` (keep-alive, as etcd
// does) and then closes the connection, as a server closing an idle
// keep-alive connection would. Gives up after 5 s so a broken client cannot
// hang the test.
class OneRequestPerConnectionServer {
public:
    OneRequestPerConnectionServer(unsigned status, std::string body, int connections) : socket_(true) {
        response_ = "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: application/json\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\n\r\n" + body;
        thread_ = std::thread([this, connections] { serve(connections); });
    }
    ~OneRequestPerConnectionServer() { thread_.join(); }
    std::string endpoint() const { return socket_.endpoint(); }
    int served() const { return served_; }

private:
    void serve(int connections) {
        const auto deadline = Clock::now() + 5s;
        for (int i = 0; i < connections; ++i) {
            pollfd p{socket_.fd(), POLLIN, 0};
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0 || ::poll(&p, 1, int(left.count())) != 1) return;
            int fd = ::accept4(socket_.fd(), nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) return;
            timeval tv{5, 0};
            ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            std::string request;
            char buf[4096];
            size_t header_end = std::string::npos, length = 0;
            while (header_end == std::string::npos || request.size() < header_end + 4 + length) {
                ssize_t n = ::read(fd, buf, sizeof buf);
                if (n <= 0) break;
                request.append(buf, size_t(n));
                if (header_end == std::string::npos && (header_end = request.find("\r\n\r\n")) != std::string::npos) {
                    size_t at = request.find("Content-Length: ");
                    if (at != std::string::npos && at < header_end) length = std::stoul(request.substr(at + 16));
                }
            }
            if (::write(fd, response_.data(), response_.size()) == ssize_t(response_.size())) ++served_;
            ::close(fd);
        }
    }

    BoundSocket socket_;
    std::string response_;
    std::atomic<int> served_{0};
    std::thread thread_;
};

std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    return s.size() > 4000 ? s.substr(s.size() - 4000) : s;
}

class EtcdClientTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (::access(kEtcd, X_OK) != 0) return;
        char dir_template[] = "/tmp/sluice-etcd-test-XXXXXX";
        if (!::mkdtemp(dir_template)) {
            start_error_ = "mkdtemp failed";
            return;
        }
        dir_ = dir_template;
        BoundSocket client_port, peer_port;  // both held until both are picked, so they differ
        endpoint_ = client_port.endpoint();
        std::string client_url = "http://" + endpoint_;
        std::string peer_url = "http://" + peer_port.endpoint();
        client_port.close();
        peer_port.close();
        std::vector<std::string> args = {kEtcd,
                                         "--name", "default",
                                         "--data-dir", (dir_ / "data").string(),
                                         "--listen-client-urls", client_url,
                                         "--advertise-client-urls", client_url,
                                         "--listen-peer-urls", peer_url,
                                         "--initial-advertise-peer-urls", peer_url,
                                         "--initial-cluster", "default=" + peer_url};
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        std::string log = (dir_ / "etcd.log").string();
        posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        int rc = posix_spawn(&pid_, kEtcd, &actions, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (rc != 0) {
            pid_ = -1;
            start_error_ = std::string("posix_spawn etcd: ") + std::strerror(rc);
            return;
        }
        // Ready when a linearizable read answers: the member has elected itself.
        EtcdClient probe({endpoint_}, 500ms);
        std::vector<EtcdKV> kvs;
        const auto deadline = Clock::now() + 20s;
        while (!probe.range("probe", "", kvs)) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                start_error_ = "etcd exited during start-up; its log:\n" + read_file(dir_ / "etcd.log");
                return;
            }
            if (Clock::now() > deadline) {
                start_error_ = "etcd did not answer within 20 s (" + probe.error() + "); its log:\n" +
                               read_file(dir_ / "etcd.log");
                return;
            }
            std::this_thread::sleep_for(20ms);  // poll interval, not synchronisation
        }
    }

    static void TearDownTestSuite() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
            pid_ = -1;
        }
        std::error_code ignored;
        if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
    }

    void SetUp() override {
        if (::access(kEtcd, X_OK) != 0) {
            if (std::getenv("CI")) FAIL() << kEtcd << " is missing and CI is set: install etcd-server (deploy/install-deps.sh --test)";
            GTEST_SKIP() << kEtcd << " is missing (Debian's etcd-server; deploy/install-deps.sh --test)";
        }
        ASSERT_TRUE(start_error_.empty()) << start_error_;
        // Every test's keys live under its own name.
        prefix_ = std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "/";
    }

    static inline pid_t pid_ = -1;
    static inline std::filesystem::path dir_;
    static inline std::string endpoint_, start_error_;
    std::string prefix_;
};

TEST_F(EtcdClientTest, BinaryKeysAndValuesRoundTrip) {
    EtcdClient c({endpoint_}, 2s);
    std::string key = prefix_ + std::string("\x00\xff\x01k", 4);
    std::string value;
    for (int b = 0; b < 256; ++b) value.push_back(char(b));
    ASSERT_TRUE(c.put(key, value)) << c.error();

    std::vector<EtcdKV> kvs;
    int64_t revision = 0;
    ASSERT_TRUE(c.range(key, "", kvs, &revision)) << c.error();
    ASSERT_EQ(kvs.size(), 1u);
    EXPECT_EQ(kvs[0].key, key);
    EXPECT_EQ(kvs[0].value, value);
    EXPECT_EQ(kvs[0].version, 1);
    EXPECT_GT(kvs[0].create_revision, 0);
    EXPECT_EQ(kvs[0].mod_revision, kvs[0].create_revision);
    EXPECT_EQ(kvs[0].lease, 0);
    EXPECT_GE(revision, kvs[0].mod_revision);

    ASSERT_TRUE(c.put(key, std::string("\0", 1))) << c.error();
    ASSERT_TRUE(c.range(key, "", kvs)) << c.error();
    ASSERT_EQ(kvs.size(), 1u);
    EXPECT_EQ(kvs[0].value, std::string("\0", 1));
    EXPECT_EQ(kvs[0].version, 2);
    EXPECT_GT(kvs[0].mod_revision, kvs[0].create_revision);

    ASSERT_TRUE(c.put(key, "")) << c.error();  // an empty value is a value, not an absent key
    ASSERT_TRUE(c.range(key, "", kvs)) << c.error();
    ASSERT_EQ(kvs.size(), 1u);
    EXPECT_EQ(kvs[0].value, "");

    ASSERT_TRUE(c.range(prefix_ + "absent", "", kvs)) << c.error();
    EXPECT_TRUE(kvs.empty());
}

TEST(EtcdClientPrefixEnd, IncrementsTheLastByteBelow0xff) {  // needs no etcd
    EXPECT_EQ(EtcdClient::prefix_end("ab"), "ac");
    EXPECT_EQ(EtcdClient::prefix_end(std::string("a\xff", 2)), "b");
    EXPECT_EQ(EtcdClient::prefix_end(std::string("\xff\xff", 2)), std::string(1, '\0'));
    EXPECT_EQ(EtcdClient::prefix_end(""), std::string(1, '\0'));
}

TEST_F(EtcdClientTest, PrefixRangeAndDelete) {
    EtcdClient c({endpoint_}, 2s);
    const std::string p = prefix_ + "isr/";
    for (std::string k : {p + "b", p + "a", p + "c/d", prefix_ + "isr", prefix_ + "isr0"})
        ASSERT_TRUE(c.put(k, "v:" + k)) << c.error();

    std::vector<EtcdKV> kvs;
    ASSERT_TRUE(c.range(p, EtcdClient::prefix_end(p), kvs)) << c.error();
    ASSERT_EQ(kvs.size(), 3u);  // in key order, without the prefix's neighbours
    EXPECT_EQ(kvs[0].key, p + "a");
    EXPECT_EQ(kvs[1].key, p + "b");
    EXPECT_EQ(kvs[2].key, p + "c/d");
    EXPECT_EQ(kvs[2].value, "v:" + p + "c/d");

    ASSERT_TRUE(c.del(p, EtcdClient::prefix_end(p))) << c.error();
    ASSERT_TRUE(c.range(p, EtcdClient::prefix_end(p), kvs)) << c.error();
    EXPECT_TRUE(kvs.empty());
    ASSERT_TRUE(c.range(prefix_, EtcdClient::prefix_end(prefix_), kvs)) << c.error();
    ASSERT_EQ(kvs.size(), 2u);
    EXPECT_EQ(kvs[0].key, prefix_ + "isr");
    EXPECT_EQ(kvs[1].key, prefix_ + "isr0");

    ASSERT_TRUE(c.del(prefix_ + "isr")) << c.error();  // one key
    ASSERT_TRUE(c.range(prefix_, EtcdClient::prefix_end(prefix_), kvs)) << c.error();
    ASSERT_EQ(kvs.size(), 1u);
    EXPECT_EQ(kvs[0].key, prefix_ + "isr0");
}

TEST_F(EtcdClientTest, CreateIfAbsentTxnSucceedsOnceAndReturnsTheHolder) {
    EtcdClient c({endpoint_}, 2s);
    const std::string key = prefix_ + "leader";
    auto claim = [&](const std::string& me, bool& won, std::vector<std::vector<EtcdKV>>& ranges) {
        EtcdCompare absent{key, EtcdCompare::Target::create, EtcdCompare::Result::equal, 0, ""};
        EtcdOp take{EtcdOp::Kind::put, key, me, "", 0};
        EtcdOp read{EtcdOp::Kind::range, key, "", "", 0};
        return c.txn({absent}, {take}, {read}, won, &ranges);
    };
    bool won = false;
    std::vector<std::vector<EtcdKV>> ranges;
    ASSERT_TRUE(claim("node-a", won, ranges)) << c.error();
    EXPECT_TRUE(won);
    ASSERT_EQ(ranges.size(), 1u);  // the put's entry
    EXPECT_TRUE(ranges[0].empty());

    ASSERT_TRUE(claim("node-b", won, ranges)) << c.error();
    EXPECT_FALSE(won);
    ASSERT_EQ(ranges.size(), 1u);
    ASSERT_EQ(ranges[0].size(), 1u);
    EXPECT_EQ(ranges[0][0].key, key);
    EXPECT_EQ(ranges[0][0].value, "node-a");

    std::vector<EtcdKV> kvs;
    ASSERT_TRUE(c.range(key, "", kvs)) << c.error();
    ASSERT_EQ(kvs.size(), 1u);
    EXPECT_EQ(kvs[0].value, "node-a");
    EXPECT_EQ(kvs[0].version, 1);
}

TEST_F(EtcdClientTest, TxnFencesOnModRevisionAndValue) {
    EtcdClient c({endpoint_}, 2s);
    const std::string key = prefix_ + "isr";
    ASSERT_TRUE(c.put(key, "a,b")) << c.error();
    std::vector<EtcdKV> kvs;
    ASSERT_TRUE(c.range(key, "", kvs)) << c.error();
    ASSERT_EQ(kvs.size(), 1u);
    const int64_t seen = kvs[0].mod_revision;

    EtcdCompare unchanged{key, EtcdCompare::Target::mod, EtcdCompare::Result::equal, seen, ""};
    EtcdOp write{EtcdOp::Kind::put, key, "a", "", 0};
    bool ok = false;
    ASSERT_TRUE(c.txn({unchanged}, {write}, {}, ok)) << c.error();
    EXPECT_TRUE(ok);
    ASSERT_TRUE(c.txn({unchanged}, {write}, {}, ok)) << c.error();  // the revision moved on: fenced
    EXPECT_FALSE(ok);

    EtcdCompare is_a{key, EtcdCompare::Target::value, EtcdCompare::Result::equal, 0, "a"};
    EtcdCompare newer{key, EtcdCompare::Target::mod, EtcdCompare::Result::greater, seen, ""};
    EtcdCompare not_b{key, EtcdCompare::Target::value, EtcdCompare::Result::not_equal, 0, "b"};
    EtcdCompare young{key, EtcdCompare::Target::version, EtcdCompare::Result::less, 3, ""};
    ASSERT_TRUE(c.txn({is_a, newer, not_b, young}, {}, {}, ok)) << c.error();
    EXPECT_TRUE(ok);
    EtcdCompare old{key, EtcdCompare::Target::version, EtcdCompare::Result::less, 2, ""};
    ASSERT_TRUE(c.txn({is_a, old}, {}, {}, ok)) << c.error();  // all must hold
    EXPECT_FALSE(ok);
}

TEST_F(EtcdClientTest, LeaseLifecycle) {
    EtcdClient c({endpoint_}, 2s);
    int64_t id = 0, ttl = 0;
    ASSERT_TRUE(c.lease_grant(10, id, ttl)) << c.error();
    EXPECT_NE(id, 0);
    EXPECT_EQ(ttl, 10);

    const std::string key = prefix_ + "leader";
    ASSERT_TRUE(c.put(key, "node-a", id)) << c.error();
    std::vector<EtcdKV> kvs;
    ASSERT_TRUE(c.range(key, "", kvs)) << c.error();
    ASSERT_EQ(kvs.size(), 1u);
    EXPECT_EQ(kvs[0].lease, id);

    int64_t left = 0;
    ASSERT_TRUE(c.lease_keepalive(id, left)) << c.error();
    EXPECT_GT(left, 0);
    EXPECT_LE(left, 10);

    ASSERT_TRUE(c.lease_revoke(id)) << c.error();
    ASSERT_TRUE(c.range(key, "", kvs)) << c.error();
    EXPECT_TRUE(kvs.empty()) << "revoking the lease deletes its keys";

    // etcd 3.4 answers a keepalive of a revoked lease with success and no TTL.
    left = 99;
    ASSERT_TRUE(c.lease_keepalive(id, left)) << c.error();
    EXPECT_LE(left, 0);

    EXPECT_FALSE(c.lease_revoke(id));
    EXPECT_NE(c.error().find("requested lease not found"), std::string::npos) << c.error();
    EXPECT_FALSE(c.put(key, "node-a", id));
    EXPECT_NE(c.error().find("requested lease not found"), std::string::npos) << c.error();
    EXPECT_NE(c.error().find(endpoint_), std::string::npos) << c.error();

    ASSERT_TRUE(c.put(key, "still usable")) << c.error();  // an etcd error leaves the connection usable
}

TEST_F(EtcdClientTest, KeyOfALeaseWithoutKeepalivesDisappears) {
    EtcdClient c({endpoint_}, 2s);
    int64_t id = 0, ttl = 0;
    ASSERT_TRUE(c.lease_grant(2, id, ttl)) << c.error();
    const std::string key = prefix_ + "leader";
    const auto granted = Clock::now();
    ASSERT_TRUE(c.put(key, "node-a", id)) << c.error();
    std::vector<EtcdKV> kvs;
    ASSERT_TRUE(c.range(key, "", kvs)) << c.error();
    ASSERT_EQ(kvs.size(), 1u);

    const auto deadline = granted + 10s;
    for (;;) {
        ASSERT_TRUE(c.range(key, "", kvs)) << c.error();
        if (kvs.empty()) break;
        ASSERT_LT(Clock::now(), deadline) << "the key outlived its 2 s lease by 8 s";
        std::this_thread::sleep_for(50ms);  // poll interval
    }
    EXPECT_GE(Clock::now() - granted, 1500ms) << "the key went before its lease could have expired";
    int64_t left = 99;
    ASSERT_TRUE(c.lease_keepalive(id, left)) << c.error();
    EXPECT_LE(left, 0);
}

TEST_F(EtcdClientTest, TxnComparesTheLease) {
    EtcdClient c({endpoint_}, 2s);
    int64_t id = 0, ttl = 0;
    ASSERT_TRUE(c.lease_grant(30, id, ttl)) << c.error();
    const std::string key = prefix_ + "leader";
    ASSERT_TRUE(c.put(key, "node-a", id)) << c.error();

    // "Still leader" = the key is held by my lease: only then write the ISR.
    const std::string isr = prefix_ + "isr";
    EtcdOp write{EtcdOp::Kind::put, isr, "a,b", "", 0};
    bool ok = false;
    EtcdCompare mine{key, EtcdCompare::Target::lease, EtcdCompare::Result::equal, id, ""};
    ASSERT_TRUE(c.txn({mine}, {write}, {}, ok)) << c.error();
    EXPECT_TRUE(ok);
    EtcdCompare other{key, EtcdCompare::Target::lease, EtcdCompare::Result::equal, id + 1, ""};
    EtcdOp read{EtcdOp::Kind::range, key, "", "", 0};
    std::vector<std::vector<EtcdKV>> ranges;
    ASSERT_TRUE(c.txn({other}, {write}, {read}, ok, &ranges)) << c.error();
    EXPECT_FALSE(ok);
    ASSERT_EQ(ranges.size(), 1u);
    ASSERT_EQ(ranges[0].size(), 1u);
    EXPECT_EQ(ranges[0][0].lease, id);

    ASSERT_TRUE(c.lease_revoke(id)) << c.error();
    ASSERT_TRUE(c.txn({mine}, {write}, {}, ok)) << c.error();  // the key went with the lease
    EXPECT_FALSE(ok);
}

TEST_F(EtcdClientTest, EtcdErrorsAreReported) {
    EtcdClient c({endpoint_}, 2s);
    EXPECT_FALSE(c.put("", "v"));
    EXPECT_NE(c.error().find("key is not provided"), std::string::npos) << c.error();
    EXPECT_NE(c.error().find("HTTP 400"), std::string::npos) << c.error();
}

TEST_F(EtcdClientTest, RoundRobinSkipsADeadEndpoint) {
    const std::string dead = dead_endpoint();
    EtcdClient c({dead, endpoint_}, 1s);
    ASSERT_TRUE(c.put(prefix_ + "k", "v")) << c.error();
    EXPECT_EQ(c.endpoint(), endpoint_);
    std::vector<EtcdKV> kvs;
    ASSERT_TRUE(c.range(prefix_ + "k", "", kvs)) << c.error();  // stays on the live one
    EXPECT_EQ(c.endpoint(), endpoint_);
    ASSERT_EQ(kvs.size(), 1u);
}

TEST_F(EtcdClientTest, OnlyADeadEndpointFailsNamingIt) {
    const std::string dead = dead_endpoint();
    EtcdClient c({dead}, 1s);
    const auto start = Clock::now();
    EXPECT_FALSE(c.put(prefix_ + "k", "v"));
    EXPECT_LT(Clock::now() - start, 1500ms);
    EXPECT_NE(c.error().find(dead), std::string::npos) << c.error();
    EXPECT_NE(c.error().find("refused"), std::string::npos) << c.error();
    EXPECT_EQ(c.endpoint(), dead);

    const std::string dead2 = dead_endpoint();
    EtcdClient both({dead, dead2}, 1s);
    EXPECT_FALSE(both.del(prefix_ + "k"));
    EXPECT_NE(both.error().find(dead + ": cannot connect"), std::string::npos) << both.error();
    EXPECT_NE(both.error().find(dead2 + ": cannot connect"), std::string::npos) << both.error();
    EXPECT_EQ(both.endpoint(), dead2);  // the last one tried

    EtcdClient malformed({"no-port"}, 1s);
    EXPECT_FALSE(malformed.put(prefix_ + "k", "v"));
    EXPECT_NE(malformed.error().find("'no-port' is not host:port"), std::string::npos) << malformed.error();
}

TEST_F(EtcdClientTest, ASilentEndpointTimesOutAndTheNextAnswers) {
    BoundSocket silent(/*listening=*/true);  // accepts into its backlog, never answers
    {
        EtcdClient c({silent.endpoint()}, 300ms);
        const auto start = Clock::now();
        int64_t id = 0, ttl = 0;
        EXPECT_FALSE(c.lease_grant(5, id, ttl));
        const auto took = Clock::now() - start;
        EXPECT_GE(took, 250ms);
        EXPECT_LT(took, 2s);
        EXPECT_NE(c.error().find(silent.endpoint()), std::string::npos) << c.error();
        EXPECT_NE(c.error().find("no answer within 300 ms"), std::string::npos) << c.error();
    }
    EtcdClient c({silent.endpoint(), endpoint_}, 300ms);
    ASSERT_TRUE(c.put(prefix_ + "k", "v")) << c.error();
    EXPECT_EQ(c.endpoint(), endpoint_);
}

TEST_F(EtcdClientTest, ReconnectsWhenTheServerClosedTheKeptAliveConnection) {
    OneRequestPerConnectionServer server(200, R"({"header":{"revision":"7"}})", 2);
    EtcdClient c({server.endpoint()}, 1s);
    ASSERT_TRUE(c.put("k", "v")) << c.error();
    ASSERT_TRUE(c.put("k", "v")) << c.error();  // the kept connection is dead: a fresh one, same endpoint
    EXPECT_EQ(server.served(), 2);
}

TEST_F(EtcdClientTest, Http503MovesOnButOtherEtcdErrorsDoNot) {
    const std::string no_leader = R"({"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14})";
    {
        OneRequestPerConnectionServer unavailable(503, no_leader, 1);
        EtcdClient c({unavailable.endpoint(), endpoint_}, 1s);
        ASSERT_TRUE(c.put(prefix_ + "k", "v")) << c.error();
        EXPECT_EQ(c.endpoint(), endpoint_);
    }
    {
        OneRequestPerConnectionServer unavailable(503, no_leader, 1);
        EtcdClient c({unavailable.endpoint()}, 1s);
        EXPECT_FALSE(c.put(prefix_ + "k", "v"));
        EXPECT_EQ(c.error(), "etcd " + unavailable.endpoint() + ": etcdserver: no leader (HTTP 503)");
    }
    {
        const std::string bad = R"({"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3})";
        OneRequestPerConnectionServer refuses(400, bad, 1);
        EtcdClient c({refuses.endpoint(), endpoint_}, 1s);
        EXPECT_FALSE(c.put(prefix_ + "k", "v"));
        EXPECT_EQ(c.error(), "etcd " + refuses.endpoint() + ": etcdserver: key is not provided (HTTP 400)");
    }
}

}  // namespace
}  // namespace sluice::net
