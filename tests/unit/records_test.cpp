// storage/records.hpp: the byte formats a data dir holds. The expected bytes
// are spelled out: a change here is a change of the on-disk format, which an
// existing data dir must still read (these are the bytes earlier versions
// wrote).
#include "storage/records.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using namespace sluice::storage::records;
using namespace std::string_literals;

TEST(Records, ExchangeKeyAndValueBytes) {
    EXPECT_EQ(exchange_key("/", "ex"), "e\x01/\x02" "ex"s);
    const std::string args = "\0\0\0\0"s;  // an empty field table
    const std::string v = exchange_value(3, true, true, args);
    EXPECT_EQ(v, "\x03\x03\0\0\0\0"s);
    ExchangeRecord r;
    ASSERT_TRUE(decode_exchange(exchange_key("/", "ex"), v, r));
    EXPECT_EQ(r.vhost, "/");
    EXPECT_EQ(r.name, "ex");
    EXPECT_EQ(r.type, 3);
    EXPECT_TRUE(r.auto_delete);
    EXPECT_TRUE(r.internal);
    EXPECT_EQ(r.arguments, args);
}

TEST(Records, QueueKeyAndValueBytes) {
    EXPECT_EQ(queue_key("v", "q"), "q\x01v\x01q"s);
    const std::string v = queue_value(0x0102, false, "");
    EXPECT_EQ(v, "\0\0\0\0\0\0\x01\x02\0"s);
    QueueRecord r;
    ASSERT_TRUE(decode_queue(queue_key("v", "q"), v, r));
    EXPECT_EQ(r.id, 0x0102u);
    EXPECT_FALSE(r.auto_delete);
    EXPECT_FALSE(decode_queue(queue_key("v", "q"), "\0\0"s, r)) << "a short value is damaged";
}

TEST(Records, DelayLogRecordAndHeldMessageKeyBytes) {
    EXPECT_EQ(delay_log_key("/", "dx"), "d\x01/\x02" "dx"s);
    const std::string v = delay_log_value(7, 0x0102, 9);
    EXPECT_EQ(v, "\0\0\0\0\0\0\0\x07" "\0\0\0\0\0\0\x01\x02" "\0\0\0\0\0\0\0\x09"s);
    DelayLogRecord r;
    ASSERT_TRUE(decode_delay_log(delay_log_key("/", "dx"), v, r));
    EXPECT_EQ(r.vhost, "/");
    EXPECT_EQ(r.exchange, "dx");
    EXPECT_EQ(r.id, 7u);
    EXPECT_EQ(r.messages, 0x0102u);
    EXPECT_EQ(r.next_seq, 9u);
    EXPECT_FALSE(decode_delay_log(delay_log_key("/", "dx"), v.substr(0, 16), r)) << "a short value is damaged";
    // Keys sort by log, then due time, then seq: a log is read in due-time order.
    EXPECT_EQ(delayed_key(1, 2, 3), "\0\0\0\0\0\0\0\x01" "\0\0\0\0\0\0\0\x02" "\0\0\0\0\0\0\0\x03"s);
    EXPECT_LT(delayed_key(1, 2, 9), delayed_key(1, 3, 1));
    EXPECT_LT(delayed_key(1, 0x100, 1), delayed_key(1, 0x100, 2));
    EXPECT_LT(delayed_key(1, UINT64_MAX, UINT64_MAX), delayed_key(2, 0, 0));
    DelayedKey k;
    ASSERT_TRUE(decode_delayed_key(delayed_key(5, 1'900'000'000'000, 42), k));
    EXPECT_EQ(k.log_id, 5u);
    EXPECT_EQ(k.due_ms, 1'900'000'000'000u);
    EXPECT_EQ(k.seq, 42u);
    EXPECT_FALSE(decode_delayed_key("short", k));
}

TEST(Records, BindingKeyBytesRoundTrip) {
    BindingRecord b;
    b.vhost = "/";
    b.source = "amq.topic";
    b.to_queue = false;
    b.destination = "dst";
    b.routing_key = "a.#";
    const std::string args = "\0\0\0\0"s;  // an empty field table (the record views it)
    b.arguments = args;
    const std::string k = binding_key(b);
    EXPECT_EQ(k, "b\x01/\x09" "amq.topic" "e\x03" "dst\x03" "a.#\0\0\0\0"s);
    BindingRecord r;
    ASSERT_TRUE(decode_binding(k, r));
    EXPECT_EQ(r.source, "amq.topic");
    EXPECT_FALSE(r.to_queue);
    EXPECT_EQ(r.destination, "dst");
    EXPECT_EQ(r.routing_key, "a.#");
    EXPECT_EQ(r.arguments, b.arguments);
    EXPECT_FALSE(decode_binding("b\x01/\x09" "amq.topic" "x"s, r)) << "an unknown destination kind";
}

TEST(Records, MessageAndSpillRecordBytes) {
    MessageParts m{"ex", "rk", "PR", "body"};
    std::string enc;
    append_message(enc, m);
    EXPECT_EQ(enc, "\x02" "ex\x02" "rk\0\0\0\x02" "PRbody"s);
    MessageParts back;
    ASSERT_TRUE(decode_message(enc, back));
    EXPECT_EQ(back.body, "body");
    EXPECT_FALSE(decode_message(enc.substr(0, 7), back));

    std::string run;
    append_spill_record(run, 7, 9, m);
    append_spill_record(run, 8, 0, MessageParts{"", "", "", ""});
    EXPECT_EQ(run.substr(0, 20), "\0\0\0\0\0\0\0\x07\0\0\0\0\0\0\0\x09\0\0\0\x10"s);
    int n = 0;
    EXPECT_TRUE(for_each_spill_record(run, [&](uint64_t seq, uint64_t expires, const MessageParts& p) {
        EXPECT_EQ(seq, n == 0 ? 7u : 8u);
        EXPECT_EQ(expires, n == 0 ? 9u : 0u);
        EXPECT_EQ(p.body, n == 0 ? "body" : "");
        ++n;
        return true;
    }));
    EXPECT_EQ(n, 2);
    EXPECT_FALSE(for_each_spill_record(run.substr(0, run.size() - 1), [](uint64_t, uint64_t, const MessageParts&) {
        return true;
    })) << "a cut record is damaged";
    EXPECT_EQ(body_key(1), "\0\0\0\0\0\0\0\x01"s);
}

}  // namespace
