// The fixture of the broker-over-a-real-store tests (durable_broker_test.cpp,
// delayed_messages_test.cpp,
// durable_dedup_test.cpp): a broker over RocksDB on the power-loss file
// system (power_loss_fs.hpp), driven by sans-IO sessions
// (session_harness.hpp), whose executor is run by hand: settle() runs it
// until the store is idle and nothing is left to run, so every "end of
// turn" and every commit callback happens at a point the test chooses.
#pragma once

#include <gtest/gtest.h>

#include <rocksdb/env.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "broker/broker.hpp"
#include "broker/executor.hpp"
#include "broker/vhost.hpp"
#include "storage/spill_file.hpp"
#include "storage/store.hpp"
#include "tests/unit/power_loss_fs.hpp"
#include "tests/unit/session_harness.hpp"

namespace sluice::test {

namespace m = amqp::method;
namespace fs = std::filesystem;

class HandExecutor final : public broker::Executor {
public:
    void post(std::function<void()> fn) override {
        std::lock_guard lk(mu_);
        q_.push_back(std::move(fn));
    }
    // Runs what is queued now and what that queues; returns how many ran.
    size_t run_all() {
        size_t n = 0;
        for (;;) {
            std::function<void()> fn;
            {
                std::lock_guard lk(mu_);
                if (q_.empty()) return n;
                fn = std::move(q_.front());
                q_.pop_front();
            }
            fn();
            ++n;
        }
    }

private:
    std::mutex mu_;
    std::deque<std::function<void()>> q_;
};

inline amqp::BasicProperties persistent() {
    amqp::BasicProperties p;
    p.delivery_mode = 2;
    return p;
}

class DurableBrokerTest : public ::testing::Test {
protected:
    DurableBrokerTest()
        : fs_(std::make_shared<power::PowerLossFileSystem>(rocksdb::FileSystem::Default())),
          env_(rocksdb::NewCompositeEnv(fs_)) {
        std::string tmpl = (fs::temp_directory_path() / "sluice-durable-XXXXXX").string();
        dir_ = mkdtemp(tmpl.data());
    }
    ~DurableBrokerTest() override {
        stop();
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }

    // Opens the store and a broker over it, recovered.
    void start() {
        storage::StoreOptions o;
        o.path = dir_ + "/db";
        fs::create_directories(o.path);  // else RocksDB logs a NotFound on the first open
        o.env = env_.get();
        o.write_buffer_bytes = 256 << 10;
        o.segment_file_bytes = segment_file_bytes;
        o.durability = durability;
        o.sync_interval = std::chrono::hours(1);  // async mode: only a clean stop syncs
        std::string error;
        store_ = storage::Store::open(o, error);
        ASSERT_TRUE(store_) << error;
        broker_ = std::make_unique<broker::Broker>(config);
        broker_->attach_storage(store_.get(), &executor_);
        broker_->recover();
        settle();
    }
    // The process dies: nothing more is written; what reached the OS stays.
    void crash() { stop(); }
    // The power goes: what was not synced is gone too.
    void lose_power() {
        fs_->cut_power();
        stop();
        fs_->drop_unsynced();
        fs_->restore_power();
    }
    void stop() {
        clients_.clear();
        broker_.reset();
        store_.reset();  // joins the commit thread; its last callback posts here
        executor_.run_all();
    }
    // Ends turns and waits for commits until nothing is left to do.
    void settle() {
        for (int i = 0; i < 1000; ++i) {
            size_t ran = executor_.run_all();
            store_->wait_idle();
            if (ran == 0 && executor_.run_all() == 0) return;
        }
        FAIL() << "the broker never settled";
    }
    TestClient& connect() {
        clients_.push_back(std::make_unique<TestClient>(*broker_));
        TestClient& c = *clients_.back();
        EXPECT_TRUE(c.handshake());
        EXPECT_TRUE(c.open_channel(1));
        settle();
        return c;
    }
    // Segment files in the store's directory (persistent messages' bytes).
    size_t segment_files() const {
        size_t n = 0;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(storage::segments_dir(dir_ + "/db"), ec))
            n += e.path().extension() == ".seg";
        return n;
    }
    broker::QueuePtr queue(std::string_view name) { return broker_->find_vhost("/")->find_queue(name); }
    // Declares, and waits for the -ok (sent once the declare is synced).
    void declare_durable_queue(TestClient& c, std::string_view name) {
        m::QueueDeclare d;
        d.queue = name;
        d.durable = true;
        c.send(1, d);
        settle();
        c.expect<m::QueueDeclareOk>(1);
    }
    // A durable queue `name` holding `n` persistent messages "m0", "m1", …
    // published in one read: with a small config.queue_memory_messages, all
    // but its head are paged.
    void fill_durable_queue(TestClient& c, std::string_view name, int n) {
        declare_durable_queue(c, name);
        c.batch([&] {
            for (int i = 0; i < n; ++i) c.publish(1, "", name, "m" + std::to_string(i), persistent());
        });
        settle();
    }
    // A durable fanout exchange, once its declare is synced.
    void declare_durable_fanout(TestClient& c, std::string_view name) {
        m::ExchangeDeclare x;
        x.exchange = name;
        x.type = "fanout";
        x.durable = true;
        c.send(1, x);
        settle();
        c.expect<m::ExchangeDeclareOk>(1);
    }
    // basic.get, its answer once any read of the queue's head is back (a
    // get whose head is on disk is answered when the read thread is done).
    ServerFrame get(TestClient& c, std::string_view queue, bool no_ack) {
        m::BasicGet g;
        g.queue = queue;
        g.no_ack = no_ack;
        c.send(1, g);
        settle();
        ServerFrame f = c.next();
        if (!f.is<m::BasicGetOk>() && !f.is<m::BasicGetEmpty>())
            ADD_FAILURE() << "expected basic.get-ok or get-empty, got " << f.describe();
        return f;
    }
    // queue.purge or queue.delete of `name`.
    static void purge_or_delete(TestClient& c, std::string_view name, bool purge) {
        if (purge) {
            m::QueuePurge p;
            p.queue = name;
            c.send(1, p);
        } else {
            m::QueueDelete d;
            d.queue = name;
            c.send(1, d);
        }
    }
    // Every message left in `name`, by basic.get with no_ack.
    std::vector<ServerFrame> drain(TestClient& c, std::string_view name) {
        std::vector<ServerFrame> out;
        for (;;) {
            ServerFrame f = get(c, name, true);
            if (!f.is<m::BasicGetOk>()) return out;
            out.push_back(std::move(f));
        }
    }

    // Starts again after a stop: recovery lost nothing, and `name` holds
    // exactly `prefix`0 … `prefix`(n-1), in order.
    void restart_and_expect(std::string_view name, const std::string& prefix, int n) {
        start();
        EXPECT_EQ(broker_->recovery_stats().missing_bodies, 0u);
        TestClient& c = connect();
        auto got = drain(c, name);
        ASSERT_EQ(got.size(), static_cast<size_t>(n));
        for (int i = 0; i < n; ++i) EXPECT_EQ(got[i].body, prefix + std::to_string(i));
    }
    broker::BrokerConfig config;
    uint64_t segment_file_bytes = 16u << 20;
    storage::Durability durability = storage::Durability::sync;
    std::string dir_;
    std::shared_ptr<power::PowerLossFileSystem> fs_;
    std::unique_ptr<rocksdb::Env> env_;
    HandExecutor executor_;
    std::unique_ptr<storage::Store> store_;
    std::unique_ptr<broker::Broker> broker_;
    std::vector<std::unique_ptr<TestClient>> clients_;
};

}  // namespace sluice::test
