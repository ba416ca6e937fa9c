// The replicated log (storage/store.hpp: Store::lead and the held commit
// callbacks) and its shipping between two real stores over loopback TCP
// (net/replication.hpp): confirms wait for the in-sync replica, a follower's
// store ends up equal to the leader's, a follower whose log left the
// leader's (an old leader that wrote what nobody got) is resynced from a
// snapshot — and loses those batches — and batches of an older epoch are
// refused.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "net/replication.hpp"
#include "net/replication_wire.hpp"
#include "storage/store.hpp"

namespace sluice {
namespace {

using storage::Batch;
using storage::Column;
using storage::Store;
using namespace std::chrono_literals;

struct Dir {
    Dir() {
        std::string t = (std::filesystem::temp_directory_path() / "sluice-repl-XXXXXX").string();
        path = mkdtemp(t.data());
    }
    ~Dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string path;
};

storage::StoreOptions options_in(const std::string& dir) {
    storage::StoreOptions o;
    o.path = dir + "/db";
    return o;
}

std::unique_ptr<Store> open_store(const std::string& dir) {
    std::string error;
    auto s = Store::open(options_in(dir), error);
    EXPECT_TRUE(s) << error;
    return s;
}

// A commit whose callback is observed (it may run on another thread).
struct Pending {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::string error;
    void commit(Store& s, const std::string& key, const std::string& value) {
        Batch b = s.new_batch();
        b.put(Column::meta, key, value);
        s.commit(std::move(b), [this](std::string e) {
            std::lock_guard lk(mu);
            done = true;
            error = std::move(e);
            cv.notify_all();
        });
    }
    bool wait(std::chrono::milliseconds timeout) {
        std::unique_lock lk(mu);
        return cv.wait_for(lk, timeout, [&] { return done; });
    }
    bool is_done() {
        std::lock_guard lk(mu);
        return done;
    }
};

std::map<std::string, std::string> meta_of(Store& s) {
    std::map<std::string, std::string> out;
    s.scan(Column::meta, "", "", [&](std::string_view k, std::string_view v) {
        out.emplace(k, v);
        return true;
    });
    return out;
}

template <class F>
bool eventually(F f, std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (f()) return true;
        std::this_thread::sleep_for(5ms);
    }
    return f();
}

TEST(ReplicatedLog, EveryBatchOfALeaderCarriesItsPositionAcrossARestart) {
    Dir d;
    auto s = open_store(d.path);
    EXPECT_EQ(s->log_position(), (Store::LogPosition{0, 0}));
    ASSERT_EQ(s->lead(7), "");
    EXPECT_EQ(s->log_position(), (Store::LogPosition{7, 1}));  // the epoch's history entry
    for (int i = 0; i < 3; ++i) {
        Batch b = s->new_batch();
        b.put(Column::meta, "k" + std::to_string(i), "v");
        ASSERT_EQ(s->commit_now(std::move(b)), "");
    }
    EXPECT_EQ(s->log_position(), (Store::LogPosition{7, 4}));
    s.reset();
    s = open_store(d.path);
    EXPECT_EQ(s->log_position(), (Store::LogPosition{7, 4}));
    EXPECT_EQ(s->epoch_history(), (std::map<uint64_t, uint64_t>{{7, 1}}));
    EXPECT_NE(s->lead(7), "") << "an epoch the log has seen cannot lead again";
    ASSERT_EQ(s->lead(9), "");
    EXPECT_EQ(s->epoch_history(), (std::map<uint64_t, uint64_t>{{7, 1}, {9, 5}}));
}

TEST(ReplicatedLog, ALeadersCommitCallbacksWaitForTheRelease) {
    Dir d;
    auto s = open_store(d.path);
    ASSERT_EQ(s->lead(1), "");
    Pending a, b;
    a.commit(*s, "a", "1");
    ASSERT_TRUE(eventually([&] { return s->log_position().index == 2; }));
    b.commit(*s, "b", "2");
    ASSERT_TRUE(eventually([&] { return s->log_position().index == 3; }));
    s->wait_idle();
    EXPECT_FALSE(a.is_done()) << "synced here, but no replica has it yet";
    s->release_through(2);
    EXPECT_TRUE(a.wait(1s));
    EXPECT_FALSE(b.is_done());
    s->fail_held("leadership lost");
    ASSERT_TRUE(b.wait(1s));
    EXPECT_EQ(b.error, "leadership lost") << "a batch whose replication is unknown is not confirmed";
    Pending c;
    c.commit(*s, "c", "3");
    ASSERT_TRUE(c.wait(2s));
    EXPECT_EQ(c.error, "leadership lost");
}

struct Node {
    Dir dir;
    std::unique_ptr<Store> store = open_store(dir.path);
};

net::ReplicationLeader::Options leader_options(uint64_t epoch, const std::string& snapshots) {
    net::ReplicationLeader::Options o;
    o.bind_host = "127.0.0.1";
    o.cluster_id = "test-cluster";
    o.epoch = epoch;
    o.snapshot_dir = snapshots;
    return o;
}

// `node` leads `epoch`, shipping on an ephemeral loopback port; confirms
// wait for `in_sync`.
std::unique_ptr<net::ReplicationLeader> lead(Node& node, uint64_t epoch, const std::set<std::string>& in_sync) {
    auto shipping =
        std::make_unique<net::ReplicationLeader>(*node.store, leader_options(epoch, node.dir.path + "/snapshots"));
    EXPECT_EQ(shipping->start(), "");
    EXPECT_EQ(node.store->lead(epoch), "");
    shipping->set_in_sync(in_sync);
    return shipping;
}

// `node` (named `id`, of `cluster`) follows that leader, knowing `epoch`.
std::unique_ptr<net::ReplicationFollower> follow(Node& node, const std::string& id, const net::ReplicationLeader& leader,
                                                 uint64_t epoch, const std::string& cluster = "test-cluster") {
    auto applying = std::make_unique<net::ReplicationFollower>(
        node.store, net::ReplicationFollower::Options{cluster, id, options_in(node.dir.path)});
    applying->follow("127.0.0.1", leader.port(), epoch);
    return applying;
}

TEST(Replication, AConfirmWaitsForTheInSyncFollowerAndItsStoreEqualsTheLeaders) {
    Node leader, follower;
    auto shipping_ptr = lead(leader, 3, {"f"});
    auto& shipping = *shipping_ptr;
    auto applying_ptr = follow(follower, "f", shipping, 3);
    auto& applying = *applying_ptr;
    for (int i = 0; i < 50; ++i) {
        Pending p;
        p.commit(*leader.store, "key" + std::to_string(i), std::string(100, 'x'));
        ASSERT_TRUE(p.wait(10s)) << "batch " << i;
        ASSERT_EQ(p.error, "");
        // Confirmed only once the follower synced it: it is there now.
        std::string v;
        ASSERT_TRUE(follower.store->get(Column::meta, "key" + std::to_string(i), v)) << "confirmed before replicated";
    }
    auto reps = shipping.replicas();
    ASSERT_EQ(reps.size(), 1u);
    EXPECT_EQ(reps[0].state, "streaming");
    EXPECT_EQ(reps[0].acked, shipping.last_index());
    applying.stop();
    EXPECT_EQ(meta_of(*follower.store), meta_of(*leader.store));
    EXPECT_EQ(follower.store->log_position(), leader.store->log_position());

    // With the follower gone, confirms wait — until it leaves the ISR.
    Pending held;
    held.commit(*leader.store, "after", "1");
    EXPECT_FALSE(held.wait(300ms));
    shipping.set_in_sync({});
    EXPECT_TRUE(held.wait(2s));
}

// The commit thread hands a new batch to a caught-up follower's socket
// itself, without blocking: a follower that stops reading fills the socket,
// and the leader's commits go on (its session thread sends the rest, a
// frame begun by the commit thread first). What the follower then reads is
// every batch, whole, in order.
TEST(Replication, AFollowerThatStopsReadingHoldsUpNoCommitAndGetsEveryBatchWholeInOrder) {
    namespace wire = net::replication_wire;
    Node leader;
    auto shipping = lead(leader, 2, {});  // confirms wait for no replica
    std::string error;
    wire::Socket follower = wire::Socket::connect("127.0.0.1", shipping->port(), error);
    ASSERT_TRUE(follower.valid()) << error;
    std::string hello;
    wire::put_str(hello, "test-cluster");
    wire::put_str(hello, "slow");
    wire::put_u64(hello, 0);
    wire::put_u64(hello, 0);
    ASSERT_TRUE(follower.send_frame(wire::kHello, hello));
    uint8_t type = 0;
    std::string payload;
    ASSERT_TRUE(follower.recv_frame(type, payload));
    ASSERT_EQ(type, wire::kWelcome);
    ASSERT_TRUE(eventually([&] {
        auto reps = shipping->replicas();
        return reps.size() == 1 && reps[0].state == "streaming";
    }));

    // 16 MiB while the follower reads nothing: more than loopback's socket
    // buffers hold. (Within the 3 s a silent peer is given.)
    const std::string value(1u << 20, 'v');
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 16; ++i) {
        Pending p;
        p.commit(*leader.store, "big" + std::to_string(i), value);
        ASSERT_TRUE(p.wait(2s)) << "commit " << i << " waited for the follower's socket";
        ASSERT_EQ(p.error, "");
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
    const uint64_t last = shipping->last_index();

    uint64_t next = 1;  // the epoch's history entry first
    size_t big = 0;
    while (next <= last) {
        std::string head, data;
        ASSERT_TRUE(follower.recv_frame(type, head, data, 16)) << "at index " << next;
        if (type == wire::kHeartbeat) continue;
        ASSERT_EQ(type, wire::kBatch);
        wire::Reader r{head};
        EXPECT_EQ(r.u64(), 2u);
        ASSERT_EQ(r.u64(), next) << "batches arrive in order, none missing";
        if (data.size() > value.size()) {
            EXPECT_NE(data.find(value), std::string::npos) << "batch " << next << " arrived whole";
            ++big;
        }
        ++next;
    }
    EXPECT_EQ(big, 16u);
}

TEST(Replication, AnOldLeadersUnreplicatedBatchesAreReplacedByASnapshot) {
    Node a, b;
    // A leads epoch 1; B gets everything up to k2.
    {
        auto shipping_ptr = lead(a, 1, {"b"});
        auto& shipping = *shipping_ptr;
        auto applying_ptr = follow(b, "b", shipping, 1);
        auto& applying = *applying_ptr;
        for (int i = 0; i < 3; ++i) {
            Pending p;
            p.commit(*a.store, "k" + std::to_string(i), "a");
            ASSERT_TRUE(p.wait(10s));
        }
        applying.stop();
        // A writes on alone (synced locally, never confirmed), then dies.
        shipping.set_in_sync({});
        for (int i = 3; i < 6; ++i) {
            Pending p;
            p.commit(*a.store, "lost" + std::to_string(i), "a");
            ASSERT_TRUE(p.wait(10s));
        }
        shipping.stop();
    }
    a.store.reset();
    a.store = open_store(a.dir.path);  // A restarts: its log is (1, 7), B's (1, 4)
    EXPECT_EQ(a.store->log_position(), (Store::LogPosition{1, 7}));
    ASSERT_EQ(b.store->log_position(), (Store::LogPosition{1, 4}));

    // B leads epoch 2 and writes on; A follows it.
    auto shipping = lead(b, 2, {});
    Pending p;
    p.commit(*b.store, "b-wrote", "b");
    ASSERT_TRUE(p.wait(10s));
    shipping->set_in_sync({"a"});
    auto applying_ptr = follow(a, "a", *shipping, 2);
    auto& applying = *applying_ptr;
    Pending q;
    q.commit(*b.store, "b-wrote-2", "b");
    ASSERT_TRUE(q.wait(20s));
    EXPECT_EQ(q.error, "");
    applying.stop();
    EXPECT_EQ(applying.status().snapshots, 1u);
    auto meta = meta_of(*a.store);
    EXPECT_EQ(meta, meta_of(*b.store));
    EXPECT_EQ(meta.count("lost3"), 0u) << "what only the old leader had is gone";
    EXPECT_EQ(meta.count("k2"), 1u);
    EXPECT_EQ(meta.count("b-wrote-2"), 1u);
}

TEST(Replication, AFollowerRefusesALeaderOfAnOlderEpochAndAnotherClustersLeaderRefusesIt) {
    Node leader, follower;
    auto shipping = lead(leader, 4, {});
    {
        // The follower knows epoch 5 has begun: the leader of 4 is deposed.
        auto applying = follow(follower, "f", *shipping, 5);
        ASSERT_TRUE(eventually([&] { return !applying->status().error.empty(); }));
        EXPECT_NE(applying->status().error.find("older"), std::string::npos) << applying->status().error;
        EXPECT_EQ(follower.store->log_position().index, 0u);
    }
    {
        auto applying = follow(follower, "f", *shipping, 4, "other-cluster");
        ASSERT_TRUE(eventually([&] { return !applying->status().error.empty(); }));
        EXPECT_NE(applying->status().error.find("cluster"), std::string::npos) << applying->status().error;
    }
}

}  // namespace
}  // namespace sluice
