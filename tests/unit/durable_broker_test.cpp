// The broker over a real store on the power-loss file system
// (power_loss_fs.hpp), driven by sans-IO sessions (session_harness.hpp): the
// promises a client hears — a confirm, a durable -ok — checked against what
// survives a crash (the process dies, the page cache survives) and a power
// loss (everything not synced is gone). A kill -9 test cannot tell synced
// from cached; these can.
//
// The broker thread's executor is run by hand: settle() runs it until the
// store is idle and nothing is left to run, so every "end of turn" and every
// commit callback happens at a point the test chooses.
#include <unistd.h>

#include <chrono>
#include <optional>

#include "broker/operations.hpp"
#include "tests/unit/durable_broker_fixture.hpp"

namespace sluice::test {
namespace {

// Issue 12, item 1: a confirmed message routed to two durable queues shares
// one stored body (8 KiB). An ack of one copy and the delete (or purge) of
// that queue in the same batch released the body twice — once for the ack,
// once more when the delete scanned the database, which did not have the
// ack's removal yet — and the other queue's copy lost its body.
class SharedBodyTest : public DurableBrokerTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(SharedBodyTest, SurvivesAnAckAndTheDeleteOfTheOtherQueueInOneBatch) {
    const std::string how = GetParam();
    start();
    TestClient& c = connect();
    declare_durable_fanout(c, "fx");
    declare_durable_queue(c, "q1");
    declare_durable_queue(c, "q2");
    for (const char* q : {"q1", "q2"}) {
        m::QueueBind b;
        b.queue = q;
        b.exchange = "fx";
        c.send(1, b);
        settle();
        c.expect<m::QueueBindOk>(1);
    }
    ASSERT_TRUE(c.confirm_select(1));
    const std::string body(8192, 'b');
    c.publish(1, "fx", "", body, persistent());
    settle();
    c.expect<m::BasicAck>(1);
    c.consume(1, "q1");
    ServerFrame d = c.expect<m::BasicDeliver>(1);
    const uint64_t tag = d.get<m::BasicDeliver>().delivery_tag;
    // The ack and the delete arrive in one read: one turn, one batch.
    c.batch([&] {
        c.ack(1, tag);
        purge_or_delete(c, "q1", how == "purge");
    });
    settle();
    EXPECT_EQ(broker_->durability().shared_bodies(), 1u);  // q2's copy holds it

    for (int round = 0; round < 2; ++round) {
        if (round == 0) crash();
        else lose_power();
        start();
        EXPECT_EQ(broker_->recovery_stats().missing_bodies, 0u);
        ASSERT_TRUE(queue("q2"));
        EXPECT_EQ(queue("q2")->ready_count(), 1u);
    }
    TestClient& c2 = connect();
    auto got = drain(c2, "q2");
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].body, body);
    EXPECT_TRUE(got[0].get<m::BasicGetOk>().redelivered);
    settle();
    EXPECT_EQ(broker_->durability().shared_bodies(), 0u);  // the last copy took the body with it
}

INSTANTIATE_TEST_SUITE_P(DeleteOrPurge, SharedBodyTest, ::testing::Values("delete", "purge"));

// Persistent messages' bytes are in segment files: a file that a few
// long-lived messages still point at, after everything else in it was
// consumed, is compacted (their chunks written again elsewhere) and goes,
// and those messages survive a power loss after it.
TEST_F(DurableBrokerTest, ASegmentFilePinnedByLongLivedMessagesIsCompactedAndGoes) {
    segment_file_bytes = 8 << 10;
    start();
    broker_->durability().set_segment_compaction_quiet(std::chrono::seconds(0));
    auto seg_files = [&] { return segment_files(); };
    TestClient& c = connect();
    declare_durable_queue(c, "keep");
    declare_durable_queue(c, "busy");
    for (int round = 0; round < 20; ++round) {
        c.batch([&] {
            c.publish(1, "", "keep", "k" + std::to_string(round), persistent());
            for (int i = 0; i < 20; ++i) c.publish(1, "", "busy", std::string(200, 'b'), persistent());
        });
        settle();
    }
    const size_t before = seg_files();
    EXPECT_GE(before, 8u) << "each 8 KiB file holds two rounds";
    EXPECT_EQ(drain(c, "busy").size(), 400u);
    settle();
    for (int i = 0; i < 2000 && seg_files() > 2; ++i) {
        settle();
        usleep(1000);
    }
    EXPECT_LE(seg_files(), 2u) << "from " << before << " files, after all but 20 small messages were consumed";
    EXPECT_GT(broker_->durability().segment_files_compacted(), 0u);

    lose_power();
    restart_and_expect("keep", "k", 20);
}

// A clean stop right after the last messages were consumed (the batch that
// deletes their chunk is in flight; its callback never runs, the loop is
// stopping) still lets their segment file go.
TEST_F(DurableBrokerTest, ACleanStopRightAfterTheLastAckLetsItsSegmentFileGo) {
    start();
    TestClient& c = connect();
    fill_durable_queue(c, "q", 10);
    ASSERT_EQ(segment_files(), 1u);
    for (int i = 0; i < 10; ++i) {
        m::BasicGet g;
        g.queue = "q";
        g.no_ack = true;
        c.send(1, g);
    }
    executor_.run_all();  // the gets; their batch goes to the commit thread
    broker_->durability().shutdown();  // sluiced's clean stop
    stop();
    EXPECT_EQ(segment_files(), 0u);
    start();
    EXPECT_EQ(queue("q")->ready_count(), 0u);
}

// Async mode syncs at intervals and when the store closes: that sync covers
// the segment files' bytes too, before the pointers to them, so a power loss
// after a clean stop loses nothing.
TEST_F(DurableBrokerTest, AsyncModesCleanStopSyncsTheSegmentBytesBeforeThePointers) {
    durability = storage::Durability::async;
    start();
    TestClient& c = connect();
    fill_durable_queue(c, "q", 50);
    stop();  // the store closes (as at the end of sluiced's clean stop), then the power goes
    fs_->cut_power();
    fs_->drop_unsynced();
    fs_->restore_power();
    restart_and_expect("q", "m", 50);
}

// Issue 12, item 2: after a crash every message that may have been
// delivered comes back redelivered — those recovered into memory and those
// left paged in the store alike.
TEST_F(DurableBrokerTest, EveryRecoveredMessageIsRedeliveredIncludingPagedOnes) {
    config.queue_memory_messages = 4;
    start();
    TestClient& c = connect();
    declare_durable_queue(c, "q");
    ASSERT_TRUE(c.confirm_select(1));
    for (int i = 0; i < 20; ++i) c.publish(1, "", "q", "m" + std::to_string(i), persistent());
    settle();
    crash();
    start();
    ASSERT_EQ(queue("q")->ready_count(), 20u);
    EXPECT_GT(queue("q")->paged_count(), 0u);
    TestClient& c2 = connect();
    auto got = drain(c2, "q");
    ASSERT_EQ(got.size(), 20u);
    for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].body, "m" + std::to_string(i));
        EXPECT_TRUE(got[i].get<m::BasicGetOk>().redelivered) << "message " << i;
    }
}

// Issue 12, item 3: recovery brings back no more than the queue's memory
// limit, and what it brings back is counted.
TEST_F(DurableBrokerTest, RecoveryStaysWithinTheQueueMemoryLimitAndCountsWhatItLoads) {
    config.queue_memory_bytes = 64 << 10;
    start();
    TestClient& c = connect();
    declare_durable_queue(c, "q");
    const std::string body(16 << 10, 'x');
    for (int i = 0; i < 40; ++i) c.publish(1, "", "q", body, persistent());
    settle();
    crash();
    start();
    auto q = queue("q");
    ASSERT_EQ(q->ready_count(), 40u);
    EXPECT_GT(q->memory_bytes(), 0u);
    EXPECT_LE(q->memory_bytes(), (64u << 10) + body.size());
    EXPECT_EQ(broker_->message_memory(), q->memory_bytes());
    EXPECT_GE(q->paged_count(), 40u - 5u);
    TestClient& c2 = connect();
    EXPECT_EQ(drain(c2, "q").size(), 40u);
    EXPECT_EQ(broker_->message_memory(), 0u);
}

// Issue 12, item 7: publishes synced by one batch are confirmed by one
// basic.ack multiple=true, not an ack per message.
TEST_F(DurableBrokerTest, OneBatchOfPublishesGetsOneMultipleAck) {
    start();
    TestClient& c = connect();
    declare_durable_queue(c, "q");
    ASSERT_TRUE(c.confirm_select(1));
    c.batch([&] {
        for (int i = 0; i < 50; ++i) c.publish(1, "", "q", "m", persistent());
    });
    settle();
    ServerFrame ack = c.expect<m::BasicAck>(1);
    EXPECT_EQ(ack.get<m::BasicAck>().delivery_tag, 50u);
    EXPECT_TRUE(ack.get<m::BasicAck>().multiple);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
}

// No confirm before its batch is synced: with a slow disk the confirm is
// not there while the sync runs; a power loss at a random point keeps every
// message whose confirm was heard, in every round.
TEST_F(DurableBrokerTest, EveryConfirmedMessageSurvivesAPowerLossAtARandomPoint) {
    std::mt19937 rng(1204);
    start();
    {
        TestClient& c = connect();
        declare_durable_queue(c, "q");
    }
    std::set<std::string> confirmed;
    int next = 0;
    for (int round = 0; round < 6; ++round) {
        TestClient& c = connect();
        ASSERT_TRUE(c.confirm_select(1));
        std::vector<std::string> sent;  // by publish seq - 1
        const int turns = 5 + static_cast<int>(rng() % 20);
        for (int t = 0; t < turns; ++t) {
            const int n = 1 + static_cast<int>(rng() % 30);
            c.batch([&] {
                for (int i = 0; i < n; ++i) {
                    sent.push_back("m" + std::to_string(next++));
                    c.publish(1, "", "q", sent.back(), persistent());
                }
            });
            executor_.run_all();                 // end of turn: a commit may start
            if (rng() % 3 == 0) store_->wait_idle();  // sometimes it finishes
            executor_.run_all();
        }
        // Confirms heard before the lights go out.
        for (const ServerFrame& f : c.inbox()) {
            if (!f.is<m::BasicAck>()) continue;
            const auto& a = f.get<m::BasicAck>();
            if (a.multiple)
                for (uint64_t t = 1; t <= a.delivery_tag; ++t) confirmed.insert(sent[t - 1]);
            else
                confirmed.insert(sent[a.delivery_tag - 1]);
        }
        lose_power();
        start();
    }
    TestClient& c = connect();
    std::set<std::string> there;
    for (const ServerFrame& f : drain(c, "q")) there.insert(f.body);
    for (const std::string& body : confirmed) EXPECT_TRUE(there.count(body)) << "confirmed " << body << " is gone";
    EXPECT_GT(confirmed.size(), 0u);
}

// Recovery writes too (it drops what older versions left, deletes chunks
// whose every record was acked): a power loss during it, and crashes one
// after another, lose nothing confirmed and bring back nothing acked whose
// ack record was synced.
TEST_F(DurableBrokerTest, APowerLossDuringRecoveryAndRepeatedCrashesLoseNothing) {
    config.queue_memory_messages = 8;
    start();
    TestClient& c = connect();
    declare_durable_queue(c, "q");
    ASSERT_TRUE(c.confirm_select(1));
    c.batch([&] {
        for (int i = 0; i < 60; ++i) c.publish(1, "", "q", "m" + std::to_string(i), persistent());
    });
    settle();
    c.expect<m::BasicAck>(1);
    // Acknowledge the first 20 (their chunk gets an ack record).
    for (int i = 0; i < 20; ++i) {
        ServerFrame f = get(c, "q", false);
        ASSERT_TRUE(f.is<m::BasicGetOk>());
        c.ack(1, f.get<m::BasicGetOk>().delivery_tag);
    }
    settle();
    crash();
    for (int round = 0; round < 3; ++round) {
        fs_->cut_power();  // recovery runs, but nothing it writes counts
        start();
        stop();
        fs_->drop_unsynced();
        fs_->restore_power();
        start();
        ASSERT_EQ(queue("q")->ready_count(), 40u) << "round " << round;
        crash();
    }
    start();
    TestClient& c2 = connect();
    auto got = drain(c2, "q");
    ASSERT_EQ(got.size(), 40u);
    for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].body, "m" + std::to_string(i + 20));
        EXPECT_TRUE(got[i].get<m::BasicGetOk>().redelivered);
    }
}

TEST_F(DurableBrokerTest, ADurableDeclareOkWaitsForItsSync) {
    start();
    TestClient& c = connect();
    fs_->sync_delay(std::chrono::milliseconds(100));
    m::QueueDeclare d;
    d.queue = "slow";
    d.durable = true;
    c.send(1, d);
    executor_.run_all();  // the commit starts; its sync takes 100 ms
    c.drain();
    EXPECT_EQ(c.pending(), 0u) << "declare-ok before the sync: " << c.describe_pending();
    settle();
    c.expect<m::QueueDeclareOk>(1);
}

// Issue 12, item 4: failed writes. Three ways a batch's write can fail, each
// leaving its fate on disk different: a full disk (the WAL append fails:
// nothing of it is on disk), a failed fsync whose data stays in the page
// cache (it may reach the disk later, or never: "fsyncgate"), and a failed
// fsync whose data did reach the disk. Whatever happened, the clients of the
// failed batch hear an error (541, a nack), nothing later is acknowledged
// before memory and disk agree again, and after a power loss the broker
// comes back with exactly what it held in memory.
class FailedWriteTest : public DurableBrokerTest, public ::testing::WithParamInterface<const char*> {
public:
    static void expect_closed_with(TestClient& c, uint16_t code) {
        ServerFrame f = c.next();
        while (f.type != 0 && !f.is<m::ConnectionClose>()) f = c.next();
        ASSERT_TRUE(f.is<m::ConnectionClose>()) << "the client of the failed batch heard no error";
        EXPECT_EQ(f.get<m::ConnectionClose>().reply_code, code);
    }

protected:
    void fault(bool on) {
        const std::string how = GetParam();
        if (how == "disk-full") fs_->disk_full(on);
        else if (how == "sync-fails") fs_->fail_syncs(on);
        else fs_->fail_after_sync(on);
    }
    // What a client can see of the durable state: each queue's messages.
    std::map<std::string, std::vector<std::string>> contents(const std::vector<std::string>& names) {
        std::map<std::string, std::vector<std::string>> out;
        TestClient& c = connect();
        for (const auto& name : names) {
            if (!queue(name)) continue;
            auto& bodies = out[name];
            for (const ServerFrame& f : drain(c, name)) bodies.push_back(f.body);
        }
        return out;
    }
};

TEST_P(FailedWriteTest, MemoryAndDiskAgreeBeforeAnythingElseIsAcknowledged) {
    start();
    TestClient& c = connect();
    for (const char* q : {"q1", "q2", "q3"}) declare_durable_queue(c, q);
    declare_durable_fanout(c, "fx");
    ASSERT_TRUE(c.confirm_select(1));
    c.publish(1, "", "q1", "p0", persistent());
    c.publish(1, "", "q3", "p1", persistent());
    settle();
    c.expect<m::BasicAck>(1);
    ServerFrame got = get(c, "q1", false);
    ASSERT_TRUE(got.is<m::BasicGetOk>());
    settle();

    // One batch that fails: an ack, a publish, a delete, a declare and a bind.
    fault(true);
    c.batch([&] {
        c.ack(1, got.get<m::BasicGetOk>().delivery_tag);
        c.publish(1, "", "q1", "a", persistent());
        m::QueueDelete del;
        del.queue = "q2";
        c.send(1, del);
        m::QueueDeclare d;
        d.queue = "q4";
        d.durable = true;
        c.send(1, d);
        m::QueueBind b;
        b.queue = "q3";
        b.exchange = "fx";
        c.send(1, b);
    });
    settle();
    ServerFrame nack = c.next();
    ASSERT_TRUE(nack.is<m::BasicNack>()) << "the publish of the failed batch was not nacked";
    EXPECT_EQ(nack.get<m::BasicNack>().delivery_tag, 3u);
    expect_closed_with(c, 541);  // the delete-ok could not be given
    // In memory: q1 [a], q2 gone, q3 [p1] bound to fx, q4 declared.
    ASSERT_FALSE(queue("q2"));
    ASSERT_TRUE(queue("q4"));

    // The disk is back. A later client's -ok and confirm come only once the
    // failed batch is written again.
    fault(false);
    TestClient& c2 = connect();
    declare_durable_queue(c2, "q4");  // the redeclare of the failed declare
    ASSERT_TRUE(c2.confirm_select(1));
    c2.publish(1, "fx", "", "b", persistent());
    settle();
    c2.expect<m::BasicAck>(1);
    EXPECT_EQ(store_->stats().write_errors, store_->stats().rewritten_batches)
        << "each failed batch is written again, once";

    const std::vector<std::string> names{"q1", "q2", "q3", "q4"};
    lose_power();
    start();
    auto after = contents(names);
    using Bodies = std::vector<std::string>;
    EXPECT_EQ(after.count("q2"), 0u) << "a deleted queue came back";
    EXPECT_EQ(after["q1"], (Bodies{"a"})) << "the acked p0 came back, or the nacked a is lost";
    EXPECT_EQ(after["q3"], (Bodies{"p1", "b"})) << "the binding made in the failed batch is lost";
    EXPECT_EQ(after.count("q4"), 1u) << "a redeclare was acknowledged that the disk does not have";
}

INSTANTIATE_TEST_SUITE_P(Faults, FailedWriteTest, ::testing::Values("disk-full", "sync-fails", "sync-fails-after-disk"),
                         [](const auto& info) {
                             std::string n = info.param;
                             n.erase(std::remove(n.begin(), n.end(), '-'), n.end());
                             return n;
                         });

// A redeclare of what a failed batch declared, with nothing else going on:
// its -ok waits for a commit that writes the failed batch again (the queue
// is already in memory, so the redeclare itself writes nothing).
TEST_F(DurableBrokerTest, ARedeclareAfterAFailedDeclareIsOnDiskWhenItsOkComes) {
    start();
    TestClient& c = connect();
    fs_->disk_full(true);
    m::QueueDeclare d;
    d.queue = "q";
    d.durable = true;
    c.send(1, d);
    settle();
    FailedWriteTest::expect_closed_with(c, 541);
    fs_->disk_full(false);
    TestClient& c2 = connect();
    declare_durable_queue(c2, "q");
    lose_power();
    start();
    EXPECT_TRUE(queue("q")) << "declare-ok for a queue that a power loss took";
}

// The store cannot reopen after a failed write (the disk is still full):
// the broker is told as soon as the commit that tried comes back, once,
// before anything reads from the closed store.
TEST_F(DurableBrokerTest, AFailedReopenStopsTheBroker) {
    start();
    std::vector<std::string> lost;
    broker_->durability().set_on_store_lost([&](const std::string& why) { lost.push_back(why); });
    TestClient& c = connect();
    declare_durable_queue(c, "q");
    fs_->disk_full(true);
    c.publish(1, "", "q", "x", persistent());
    settle();  // the write fails
    EXPECT_TRUE(lost.empty());
    c.publish(1, "", "q", "y", persistent());
    settle();  // the next commit reopens the database (on the commit thread): that fails too
    EXPECT_TRUE(store_->down());
    ASSERT_EQ(lost.size(), 1u);
    EXPECT_NE(lost[0].find("could not be reopened"), std::string::npos);
    fs_->disk_full(false);
}

// Transient messages that page out go to the spill file, not the store;
// they read back in order and the spill space is given back.
TEST_F(DurableBrokerTest, PagedTransientMessagesComeBackInOrderAndFreeTheirSpace) {
    config.queue_memory_messages = 8;
    start();
    TestClient& c = connect();
    ASSERT_FALSE(c.declare_queue(1, "t").empty());
    const uint64_t batches_before = store_->stats().batches;
    // 500 KiB: full runs (128 KiB) are sealed into the spill file, the last
    // one may stay open in memory.
    auto body = [](int i) { return "t" + std::to_string(i) + std::string(1000, 'x'); };
    for (int i = 0; i < 500; ++i) c.publish(1, "", "t", body(i));
    settle();
    EXPECT_GT(queue("t")->paged_count(), 400u);
    EXPECT_EQ(store_->stats().batches, batches_before) << "transient page-outs went to the store";
    EXPECT_GT(broker_->durability().spill()->stats().live_bytes, 0u);
    auto got = drain(c, "t");
    ASSERT_EQ(got.size(), 500u);
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i].body, body(static_cast<int>(i)));
    EXPECT_EQ(broker_->durability().spill()->stats().live_bytes, 0u);
    EXPECT_EQ(broker_->durability().spill()->stats().disk_bytes, 0u);
}

// A fanout's queues page out the same messages: each message's bytes go to
// the spill file once, every queue reads them back whole and in order, and
// the space is given back only when the last queue is done with them —
// whether it drains, purges or is deleted, in any order. A message with a
// TTL is spilled per queue (its expiry differs per queue).
TEST_F(DurableBrokerTest, AFanoutSpillsEachMessageOnceAndEveryQueueReadsItBack) {
    config.queue_memory_messages = 8;
    start();
    TestClient& c = connect();
    ASSERT_TRUE(c.declare_exchange(1, "fan", "fanout"));
    for (const char* q : {"a", "b", "c", "d"}) {
        ASSERT_FALSE(c.declare_queue(1, q).empty());
        ASSERT_TRUE(c.bind_queue(1, q, "fan", ""));
    }
    auto body = [](int i) { return "f" + std::to_string(i) + std::string(1000, 'x'); };
    const int n = 600;
    c.batch([&] {
        for (int i = 0; i < n; ++i) {
            amqp::BasicProperties p;
            if (i == 300) p.expiration = "600000";  // per-queue records for this one
            c.publish(1, "fan", "", body(i), p);
        }
    });
    settle();
    for (const char* q : {"a", "b", "c", "d"}) ASSERT_GT(queue(q)->paged_count(), 500u) << q;
    const auto st = broker_->durability().spill()->stats();
    // About one copy of each paged message (~1 KiB), not four.
    EXPECT_LT(st.bytes_appended, uint64_t{n} * 1100 * 3 / 2) << st.bytes_appended;
    EXPECT_GT(st.bytes_appended, uint64_t{n - 10} * 1000);

    auto check = [&](const char* q) {
        auto got = drain(c, q);
        ASSERT_EQ(got.size(), size_t(n)) << q;
        for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i].body, body(static_cast<int>(i))) << q << " " << i;
    };
    check("a");  // the others still hold every spilled record
    EXPECT_GT(broker_->durability().spill()->stats().live_bytes, 0u);
    purge_or_delete(c, "b", true);
    settle();
    c.clear();
    check("c");
    purge_or_delete(c, "d", false);
    settle();
    c.clear();
    EXPECT_EQ(broker_->durability().spill()->stats().live_bytes, 0u);
    EXPECT_EQ(broker_->durability().spill()->stats().disk_bytes, 0u);
    EXPECT_EQ(broker_->message_memory(), 0u);

    // After everything was released, the same fanout spills again (new
    // segments: an old extent never names new bytes).
    c.batch([&] {
        for (int i = 0; i < 100; ++i) c.publish(1, "fan", "", body(i));
    });
    settle();
    auto got = drain(c, "a");
    ASSERT_EQ(got.size(), 100u);
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i].body, body(static_cast<int>(i)));
    got = drain(c, "c");
    ASSERT_EQ(got.size(), 100u);
    EXPECT_EQ(got.back().body, body(99));
}

// Issue 12, item 6: the broker thread never waits on the disk for a paged
// backlog. A consumer gets the in-memory head at once; what is paged is read
// on the store's read thread and delivered when the read comes back (here:
// when settle() runs the executor), in order, for stored and spilled
// messages alike. Before, dispatch read the store inline and delivered
// everything in the same call.
class PagedReadTest : public DurableBrokerTest, public ::testing::WithParamInterface<bool> {};

TEST_P(PagedReadTest, PagedMessagesAreReadOffTheBrokerThreadAndDeliveredInOrder) {
    const bool stored = GetParam();
    config.queue_memory_messages = 8;
    start();
    TestClient& c = connect();
    if (stored) {
        declare_durable_queue(c, "q");
    } else {
        ASSERT_FALSE(c.declare_queue(1, "q").empty());
    }
    auto body = [](int i) { return "m" + std::to_string(i) + std::string(1000, 'x'); };
    c.batch([&] {
        for (int i = 0; i < 300; ++i) c.publish(1, "", "q", body(i), stored ? persistent() : amqp::BasicProperties{});
    });
    settle();
    ASSERT_GT(queue("q")->paged_count(), 250u);
    c.consume(1, "q", true);
    size_t delivered_at_once = 0;
    for (const ServerFrame& f : c.inbox()) delivered_at_once += f.is<m::BasicDeliver>();
    EXPECT_LE(delivered_at_once, 8u) << "paged messages were delivered before any read came back";
    settle();
    std::vector<std::string> got;
    for (ServerFrame f = c.next(); f.type != 0; f = c.next())
        if (f.is<m::BasicDeliver>()) got.push_back(f.body);
    ASSERT_EQ(got.size(), 300u);
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], body(static_cast<int>(i))) << "at " << i;
    EXPECT_EQ(queue("q")->ready_count(), 0u);
    EXPECT_EQ(broker_->message_memory(), 0u);
}

// basic.get of a queue whose head is on disk: the broker thread does not
// wait for the read. The get is answered when the read is back, and the
// connection's later frames wait behind it (in order); other connections
// go on meanwhile. Before, get() read the store inline.
TEST_F(DurableBrokerTest, AGetOfAPagedHeadIsAnsweredWhenTheReadIsBackInOrder) {
    config.queue_memory_messages = 8;
    start();
    TestClient& c = connect();
    fill_durable_queue(c, "q", 100);
    ASSERT_GT(queue("q")->paged_count(), 80u);
    TestClient& other = connect();  // (connecting settles: before the gets)
    // In one read: the 8 in memory, a 9th whose message is on disk (the
    // first get started reading ahead; it is not back), and a frame after it.
    c.batch([&] {
        m::BasicGet g;
        g.queue = "q";
        g.no_ack = true;
        for (int i = 0; i < 9; ++i) c.send(1, g);
        m::QueueDeclare passive;
        passive.queue = "q";
        passive.passive = true;
        c.send(1, passive);
    });
    for (int i = 0; i < 8; ++i) {
        ServerFrame f = c.next();
        ASSERT_TRUE(f.is<m::BasicGetOk>()) << f.describe();
        EXPECT_EQ(f.body, "m" + std::to_string(i));
    }
    EXPECT_EQ(c.pending(), 0u) << "answered before the read was back: " << c.describe_pending();
    // Another connection is served meanwhile.
    m::QueueDeclare d;
    d.queue = "other";
    other.send(1, d);
    other.expect<m::QueueDeclareOk>(1);
    settle();
    ServerFrame ninth = c.next();
    ASSERT_TRUE(ninth.is<m::BasicGetOk>()) << ninth.describe();
    EXPECT_EQ(ninth.body, "m8");
    EXPECT_EQ(ninth.get<m::BasicGetOk>().message_count, 91u);
    c.expect<m::QueueDeclareOk>(1);
    auto rest = drain(c, "q");
    ASSERT_EQ(rest.size(), 91u);
    EXPECT_EQ(rest.front().body, "m9");
    EXPECT_EQ(rest.back().body, "m99");
}

// The queue is deleted by another connection while a get waits for its
// head: the get fails as a get of a missing queue does (404), and the
// waiting connection parses its later frames again.
TEST_F(DurableBrokerTest, AGetWaitingForAReadOfADeletedQueueGets404AndTheConnectionGoesOn) {
    config.queue_memory_messages = 8;
    start();
    TestClient& c = connect();
    fill_durable_queue(c, "q", 100);
    ASSERT_TRUE(c.open_channel(2));
    TestClient& other = connect();  // (connecting settles: before the gets)
    c.batch([&] {
        m::BasicGet g;
        g.queue = "q";
        g.no_ack = true;
        for (int i = 0; i < 9; ++i) c.send(1, g);  // the 9th waits for the disk
        m::QueueDeclare d;
        d.queue = "after";
        c.send(2, d);
    });
    for (int i = 0; i < 8; ++i) ASSERT_TRUE(c.next().is<m::BasicGetOk>());
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    m::QueueDelete del;
    del.queue = "q";
    other.send(1, del);
    settle();
    other.expect<m::QueueDeleteOk>(1);
    ServerFrame f = c.next();
    ASSERT_TRUE(f.is<m::ChannelClose>()) << f.describe();
    EXPECT_EQ(f.get<m::ChannelClose>().reply_code, 404);
    c.expect<m::QueueDeclareOk>(2);  // the frame behind the get was parsed after it
}

// The management API's get (POST /api/queues/…/get) of a queue whose head
// is on disk: as basic.get, the broker thread does not wait for the read —
// the get takes what is in memory, goes on when the read is back, and
// answers with every message in order. Before, get() read the store inline
// and answered inside the call.
TEST_F(DurableBrokerTest, AnApiGetOfAPagedHeadGoesOnWhenTheReadIsBack) {
    config.queue_memory_messages = 8;
    start();
    TestClient& c = connect();
    fill_durable_queue(c, "q", 100);
    ASSERT_GT(queue("q")->paged_count(), 80u);
    std::vector<std::string> got;
    std::optional<bool> removed_stored;
    broker::get_messages(
        queue("q"), broker::GetAckMode::ack_requeue_false, 30, 1u << 20,
        [&](const broker::QueuedMessage& qm, size_t) { got.push_back(std::string(qm.message->body())); },
        [&](bool removed) { removed_stored = removed; });
    EXPECT_FALSE(removed_stored.has_value()) << "answered inside the call, after " << got.size() << " messages";
    EXPECT_LT(got.size(), 30u);
    settle();
    ASSERT_TRUE(removed_stored.has_value());
    EXPECT_TRUE(*removed_stored);  // the answer waits for the removals' sync
    ASSERT_EQ(got.size(), 30u);
    for (int i = 0; i < 30; ++i) EXPECT_EQ(got[size_t(i)], "m" + std::to_string(i));
    auto rest = drain(c, "q");
    ASSERT_EQ(rest.size(), 70u);
    EXPECT_EQ(rest.front().body, "m30");
}

// A queue deleted or purged while a read of its paged tail is in flight:
// the read's result is dropped when it comes back, and a spilled run's
// space is given back then (not before: the read uses its file).
class PagedReadDropTest : public DurableBrokerTest, public ::testing::WithParamInterface<bool> {};

TEST_P(PagedReadDropTest, DeletingOrPurgingDuringAReadLosesNothingElseAndFreesTheSpill) {
    const bool purge = GetParam();
    config.queue_memory_messages = 8;
    start();
    TestClient& c = connect();
    for (const char* q : {"a", "b"}) ASSERT_FALSE(c.declare_queue(1, q).empty());
    auto body = [](int i) { return "t" + std::to_string(i) + std::string(1000, 'x'); };
    c.batch([&] {
        for (int i = 0; i < 400; ++i) {
            c.publish(1, "", "a", body(i));
            c.publish(1, "", "b", body(i));
        }
    });
    settle();
    ASSERT_GT(queue("a")->paged_count(), 300u);
    c.consume(1, "a", true);  // starts a read of a's paged tail
    purge_or_delete(c, "a", purge);
    settle();
    c.clear();
    // b is untouched and reads back whole.
    auto got = drain(c, "b");
    ASSERT_EQ(got.size(), 400u);
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i].body, body(static_cast<int>(i)));
    if (purge) {
        EXPECT_EQ(queue("a")->ready_count(), 0u);
    } else {
        EXPECT_FALSE(queue("a"));
    }
    settle();
    EXPECT_EQ(broker_->durability().spill()->stats().live_bytes, 0u);
    EXPECT_EQ(broker_->message_memory(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Paging, PagedReadTest, ::testing::Bool(),
                         [](const auto& info) { return std::string(info.param ? "Stored" : "Spilled"); });
INSTANTIATE_TEST_SUITE_P(Paging, PagedReadDropTest, ::testing::Bool(),
                         [](const auto& info) { return std::string(info.param ? "Purge" : "Delete"); });

}  // namespace
}  // namespace sluice::test
