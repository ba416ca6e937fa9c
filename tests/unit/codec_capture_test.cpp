// Decodes byte sequences produced by real client libraries (pika 1.2.0 and
// py-amqp, the kombu/Celery transport, as shipped by Debian 12), byte for byte,
// and checks that re-encoding what was decoded reproduces them exactly.
// The constants were captured from the libraries' own frame encoders.
#include <gtest/gtest.h>

#include <string>

#include "net/amqp/frame.hpp"
#include "net/amqp/methods.hpp"
#include "net/amqp/properties.hpp"

namespace sluice::amqp {
namespace {

template <size_t N>
std::string_view bytes(const char (&s)[N]) {
    return std::string_view(s, N - 1);
}

// 298 bytes
constexpr char kPikaStartOk[] =
    "\x01\x00\x00\x00\x00\x01\x22\x00\x0a\x00\x0b\x00\x00\x00\xfe\x07\x70\x72\x6f\x64\x75\x63\x74\x53"
    "\x00\x00\x00\x1a\x50\x69\x6b\x61\x20\x50\x79\x74\x68\x6f\x6e\x20\x43\x6c\x69\x65\x6e\x74\x20\x4c"
    "\x69\x62\x72\x61\x72\x79\x08\x70\x6c\x61\x74\x66\x6f\x72\x6d\x53\x00\x00\x00\x0d\x50\x79\x74\x68"
    "\x6f\x6e\x20\x33\x2e\x31\x31\x2e\x32\x0c\x63\x61\x70\x61\x62\x69\x6c\x69\x74\x69\x65\x73\x46\x00"
    "\x00\x00\x6f\x1c\x61\x75\x74\x68\x65\x6e\x74\x69\x63\x61\x74\x69\x6f\x6e\x5f\x66\x61\x69\x6c\x75"
    "\x72\x65\x5f\x63\x6c\x6f\x73\x65\x74\x01\x0a\x62\x61\x73\x69\x63\x2e\x6e\x61\x63\x6b\x74\x01\x12"
    "\x63\x6f\x6e\x6e\x65\x63\x74\x69\x6f\x6e\x2e\x62\x6c\x6f\x63\x6b\x65\x64\x74\x01\x16\x63\x6f\x6e"
    "\x73\x75\x6d\x65\x72\x5f\x63\x61\x6e\x63\x65\x6c\x5f\x6e\x6f\x74\x69\x66\x79\x74\x01\x12\x70\x75"
    "\x62\x6c\x69\x73\x68\x65\x72\x5f\x63\x6f\x6e\x66\x69\x72\x6d\x73\x74\x01\x0b\x69\x6e\x66\x6f\x72"
    "\x6d\x61\x74\x69\x6f\x6e\x53\x00\x00\x00\x18\x53\x65\x65\x20\x68\x74\x74\x70\x3a\x2f\x2f\x70\x69"
    "\x6b\x61\x2e\x72\x74\x66\x64\x2e\x6f\x72\x67\x07\x76\x65\x72\x73\x69\x6f\x6e\x53\x00\x00\x00\x05"
    "\x31\x2e\x32\x2e\x30\x05\x50\x4c\x41\x49\x4e\x00\x00\x00\x0c\x00\x67\x75\x65\x73\x74\x00\x67\x75"
    "\x65\x73\x74\x05\x65\x6e\x5f\x55\x53\xce";
// 29 bytes
constexpr char kPikaPublish[] =
    "\x01\x00\x01\x00\x00\x00\x15\x00\x3c\x00\x28\x00\x00\x0a\x61\x6d\x71\x2e\x64\x69\x72\x65\x63\x74"
    "\x02\x72\x6b\x01\xce";
// 93 bytes
constexpr char kPikaHeader[] =
    "\x02\x00\x01\x00\x00\x00\x55\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\xbe\x40\x10\x61\x70"
    "\x70\x6c\x69\x63\x61\x74\x69\x6f\x6e\x2f\x6a\x73\x6f\x6e\x00\x00\x00\x0f\x01\x6b\x53\x00\x00\x00"
    "\x01\x76\x01\x6e\x49\x00\x00\x00\x07\x02\x05\x02\x63\x31\x15\x61\x6d\x71\x2e\x72\x61\x62\x62\x69"
    "\x74\x6d\x71\x2e\x72\x65\x70\x6c\x79\x2d\x74\x6f\x00\x00\x00\x00\x65\x53\xf1\x00\xce";
// 13 bytes
constexpr char kPikaBody[] =
    "\x03\x00\x01\x00\x00\x00\x05\x68\x65\x6c\x6c\x6f\xce";
// 117 bytes
constexpr char kPikaQueueDeclare[] =
    "\x01\x00\x01\x00\x00\x00\x6d\x00\x32\x00\x0a\x00\x00\x02\x71\x31\x02\x00\x00\x00\x5f\x0d\x78\x2d"
    "\x6d\x65\x73\x73\x61\x67\x65\x2d\x74\x74\x6c\x49\x00\x00\xea\x60\x0c\x78\x2d\x71\x75\x65\x75\x65"
    "\x2d\x74\x79\x70\x65\x53\x00\x00\x00\x07\x63\x6c\x61\x73\x73\x69\x63\x0e\x78\x2d\x6d\x61\x78\x2d"
    "\x70\x72\x69\x6f\x72\x69\x74\x79\x49\x00\x00\x00\x0a\x16\x78\x2d\x64\x65\x61\x64\x2d\x6c\x65\x74"
    "\x74\x65\x72\x2d\x65\x78\x63\x68\x61\x6e\x67\x65\x53\x00\x00\x00\x03\x64\x6c\x78\xce";
// 45 bytes
constexpr char kPikaConsume[] =
    "\x01\x00\x02\x00\x00\x00\x25\x00\x3c\x00\x14\x00\x00\x02\x71\x31\x06\x63\x74\x61\x67\x2d\x31\x04"
    "\x00\x00\x00\x10\x0a\x78\x2d\x70\x72\x69\x6f\x72\x69\x74\x79\x49\xff\xff\xff\xfb\xce";
// 21 bytes
constexpr char kPikaNack[] =
    "\x01\x00\x03\x00\x00\x00\x0d\x00\x3c\x00\x78\x00\x00\x01\x00\x00\x00\x00\x03\x01\xce";
// 54 bytes
constexpr char kPikaExchangeDeclare[] =
    "\x01\x00\x01\x00\x00\x00\x2e\x00\x28\x00\x0a\x00\x00\x02\x65\x78\x05\x74\x6f\x70\x69\x63\x0a\x00"
    "\x00\x00\x1a\x12\x61\x6c\x74\x65\x72\x6e\x61\x74\x65\x2d\x65\x78\x63\x68\x61\x6e\x67\x65\x53\x00"
    "\x00\x00\x02\x61\x65\xce";
// 32 bytes
constexpr char kPikaDeliver[] =
    "\x01\x00\x01\x00\x00\x00\x18\x00\x3c\x00\x3c\x06\x63\x74\x61\x67\x2d\x31\x00\x00\x00\x00\x00\x00"
    "\x00\x2a\x01\x00\x02\x71\x31\xce";
// 36 bytes
constexpr char kPikaClose[] =
    "\x01\x00\x00\x00\x00\x00\x1c\x00\x0a\x00\x32\x01\x40\x11\x43\x4f\x4e\x4e\x45\x43\x54\x49\x4f\x4e"
    "\x5f\x46\x4f\x52\x43\x45\x44\x00\x3c\x00\x28\xce";
// 8 bytes
constexpr char kPikaHeartbeat[] =
    "\x08\x00\x00\x00\x00\x00\x00\xce";
// 76 bytes
constexpr char kPikaTable[] =
    "\x00\x00\x00\x48\x01\x74\x74\x01\x01\x69\x49\xff\xff\xff\xfe\x03\x62\x69\x67\x6c\x00\x00\x01\x00"
    "\x00\x00\x00\x00\x01\x64\x44\x02\x00\x00\x01\x3a\x02\x74\x73\x54\x00\x00\x00\x00\x65\x53\xf1\x00"
    "\x01\x61\x41\x00\x00\x00\x0c\x49\x00\x00\x00\x01\x53\x00\x00\x00\x01\x78\x56\x01\x62\x78\x00\x00"
    "\x00\x02\x00\xff";
// 92 bytes
constexpr char kPyAmqpTable[] =
    "\x00\x00\x00\x58\x01\x66\x64\x3f\xf8\x00\x00\x00\x00\x00\x00\x01\x69\x49\x00\x00\x00\x07\x03\x6e"
    "\x65\x67\x4c\xff\xff\xff\x00\x00\x00\x00\x00\x01\x64\x44\x02\xff\xff\xff\x83\x01\x6e\x56\x01\x74"
    "\x74\x00\x02\x74\x73\x54\x00\x00\x00\x00\x65\x53\xf1\x00\x01\x61\x41\x00\x00\x00\x17\x41\x00\x00"
    "\x00\x05\x49\x00\x00\x00\x01\x46\x00\x00\x00\x08\x01\x78\x53\x00\x00\x00\x01\x79";
// 183 bytes
constexpr char kPyAmqpPublish[] =
    "\x01\x00\x01\x00\x00\x00\x15\x00\x3c\x00\x28\x00\x00\x06\x63\x65\x6c\x65\x72\x79\x06\x63\x65\x6c"
    "\x65\x72\x79\x02\xce\x02\x00\x01\x00\x00\x00\x7b\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0f"
    "\xfe\x00\x10\x61\x70\x70\x6c\x69\x63\x61\x74\x69\x6f\x6e\x2f\x6a\x73\x6f\x6e\x05\x75\x74\x66\x2d"
    "\x38\x00\x00\x00\x3e\x04\x6c\x61\x6e\x67\x53\x00\x00\x00\x02\x70\x79\x04\x74\x61\x73\x6b\x53\x00"
    "\x00\x00\x09\x74\x61\x73\x6b\x73\x2e\x61\x64\x64\x07\x72\x65\x74\x72\x69\x65\x73\x49\x00\x00\x00"
    "\x00\x03\x65\x74\x61\x56\x03\x62\x69\x67\x4c\x00\x00\x01\x00\x00\x00\x00\x00\x02\x03\x04\x61\x31"
    "\x62\x32\x0c\x63\x65\x6c\x65\x72\x79\x2d\x72\x65\x70\x6c\x79\xce\x03\x00\x01\x00\x00\x00\x0f\x7b"
    "\x22\x74\x61\x73\x6b\x22\x3a\x20\x22\x61\x64\x64\x22\x7d\xce";

// Parses exactly one frame covering all of `wire`.
Frame one_frame(std::string_view wire, uint8_t type) {
    const FrameParse p = parse_frame(wire, 131072);
    EXPECT_EQ(p.status, FrameStatus::ok);
    EXPECT_EQ(p.consumed, wire.size());
    EXPECT_EQ(p.frame.type, type);
    return p.frame;
}

template <typename M>
M decode_as(std::string_view payload) {
    Method m;
    EXPECT_EQ(decode_method(payload, m), DecodeError::none);
    EXPECT_TRUE(std::holds_alternative<M>(m)) << "holds " << m.index();
    return std::holds_alternative<M>(m) ? std::get<M>(m) : M{};
}

template <typename M>
std::string reframed(uint16_t channel, const M& m) {
    std::string out;
    write_method(out, channel, m);
    return out;
}

int64_t int_of(const FieldTable& t, std::string_view name) {
    const FieldValue* v = t.find(name);
    EXPECT_NE(v, nullptr) << name;
    return v && v->as_int() ? *v->as_int() : -999;
}

std::string str_of(const FieldTable& t, std::string_view name) {
    const FieldValue* v = t.find(name);
    EXPECT_NE(v, nullptr) << name;
    return v && v->as_string() ? std::string(*v->as_string()) : "<none>";
}

TEST(ClientCaptures, PikaStartOk) {
    const Frame f = one_frame(bytes(kPikaStartOk), kFrameMethod);
    EXPECT_EQ(f.channel, 0);
    const auto m = decode_as<method::ConnectionStartOk>(f.payload);
    EXPECT_EQ(m.mechanism, "PLAIN");
    EXPECT_EQ(m.response, std::string_view("\0guest\0guest", 12));
    EXPECT_EQ(m.locale, "en_US");
    const FieldTable& p = m.client_properties;
    ASSERT_EQ(p.size(), 5u);
    EXPECT_EQ(p.entries[0].first, "product");  // wire order is kept
    EXPECT_EQ(str_of(p, "product"), "Pika Python Client Library");
    EXPECT_EQ(str_of(p, "version"), "1.2.0");
    const FieldValue* caps = p.find("capabilities");
    ASSERT_TRUE(caps && caps->as_table());
    EXPECT_EQ(caps->as_table()->size(), 5u);
    for (const char* c : {"authentication_failure_close", "basic.nack", "connection.blocked",
                          "consumer_cancel_notify", "publisher_confirms"}) {
        const FieldValue* v = caps->as_table()->find(c);
        ASSERT_NE(v, nullptr) << c;
        EXPECT_EQ(v->as_bool(), std::optional<bool>(true)) << c;
    }
    EXPECT_EQ(reframed(0, m), bytes(kPikaStartOk));
}

TEST(ClientCaptures, PikaPublishHeaderBody) {
    const Frame f = one_frame(bytes(kPikaPublish), kFrameMethod);
    EXPECT_EQ(f.channel, 1);
    EXPECT_TRUE(method_has_content(peek_method_key(f.payload)));
    const auto m = decode_as<method::BasicPublish>(f.payload);
    EXPECT_EQ(m.reserved_1, 0);
    EXPECT_EQ(m.exchange, "amq.direct");
    EXPECT_EQ(m.routing_key, "rk");
    EXPECT_TRUE(m.mandatory);
    EXPECT_FALSE(m.immediate);
    EXPECT_EQ(reframed(1, m), bytes(kPikaPublish));

    const Frame h = one_frame(bytes(kPikaHeader), kFrameHeader);
    ContentHeader ch;
    ASSERT_TRUE(decode_content_header(h.payload, ch));
    EXPECT_EQ(ch.class_id, 60);
    EXPECT_EQ(ch.body_size, 5u);
    EXPECT_EQ(peek_delivery_mode(ch.properties), std::optional<uint8_t>(2));
    EXPECT_EQ(peek_priority(ch.properties), std::optional<uint8_t>(5));
    BasicProperties props;
    ASSERT_TRUE(decode_properties(ch.properties, props));
    EXPECT_EQ(props.content_type, "application/json");
    EXPECT_EQ(props.delivery_mode, 2);
    EXPECT_EQ(props.priority, 5);
    EXPECT_EQ(props.correlation_id, "c1");
    EXPECT_EQ(props.reply_to, "amq.rabbitmq.reply-to");
    EXPECT_EQ(props.timestamp, 1700000000u);
    EXPECT_FALSE(props.content_encoding || props.expiration || props.message_id || props.type ||
                 props.user_id || props.app_id || props.cluster_id);
    ASSERT_TRUE(props.headers);
    EXPECT_EQ(str_of(*props.headers, "k"), "v");
    EXPECT_EQ(int_of(*props.headers, "n"), 7);
    EXPECT_EQ(props.headers->find("n")->type_code(), 'I');
    std::string raw;
    encode_properties(raw, props);
    EXPECT_EQ(raw, ch.properties);
    std::string payload;
    encode_content_header(payload, ch.class_id, ch.body_size, raw);
    std::string frame;
    write_frame(frame, kFrameHeader, 1, payload);
    EXPECT_EQ(frame, bytes(kPikaHeader));

    const Frame b = one_frame(bytes(kPikaBody), kFrameBody);
    EXPECT_EQ(b.payload, "hello");
}

TEST(ClientCaptures, PikaQueueDeclareWithArguments) {
    const Frame f = one_frame(bytes(kPikaQueueDeclare), kFrameMethod);
    const auto m = decode_as<method::QueueDeclare>(f.payload);
    EXPECT_EQ(m.queue, "q1");
    EXPECT_FALSE(m.passive);
    EXPECT_TRUE(m.durable);
    EXPECT_FALSE(m.exclusive);
    EXPECT_FALSE(m.auto_delete);
    EXPECT_FALSE(m.no_wait);
    ASSERT_EQ(m.arguments.size(), 4u);
    EXPECT_EQ(int_of(m.arguments, "x-message-ttl"), 60000);
    EXPECT_EQ(str_of(m.arguments, "x-queue-type"), "classic");
    EXPECT_EQ(int_of(m.arguments, "x-max-priority"), 10);
    EXPECT_EQ(str_of(m.arguments, "x-dead-letter-exchange"), "dlx");
    EXPECT_EQ(reframed(1, m), bytes(kPikaQueueDeclare));
}

TEST(ClientCaptures, PikaConsumeNackDeliverClose) {
    {
        const Frame f = one_frame(bytes(kPikaConsume), kFrameMethod);
        EXPECT_EQ(f.channel, 2);
        const auto m = decode_as<method::BasicConsume>(f.payload);
        EXPECT_EQ(m.queue, "q1");
        EXPECT_EQ(m.consumer_tag, "ctag-1");
        EXPECT_FALSE(m.no_local);
        EXPECT_FALSE(m.no_ack);
        EXPECT_TRUE(m.exclusive);
        EXPECT_FALSE(m.no_wait);
        EXPECT_EQ(int_of(m.arguments, "x-priority"), -5);
        EXPECT_EQ(reframed(2, m), bytes(kPikaConsume));
    }
    {
        const Frame f = one_frame(bytes(kPikaNack), kFrameMethod);
        const auto m = decode_as<method::BasicNack>(f.payload);
        EXPECT_EQ(m.delivery_tag, (uint64_t(1) << 40) + 3);
        EXPECT_TRUE(m.multiple);
        EXPECT_FALSE(m.requeue);
        EXPECT_EQ(reframed(3, m), bytes(kPikaNack));
    }
    {
        const Frame f = one_frame(bytes(kPikaDeliver), kFrameMethod);
        const auto m = decode_as<method::BasicDeliver>(f.payload);
        EXPECT_EQ(m.consumer_tag, "ctag-1");
        EXPECT_EQ(m.delivery_tag, 42u);
        EXPECT_TRUE(m.redelivered);
        EXPECT_EQ(m.exchange, "");
        EXPECT_EQ(m.routing_key, "q1");
        EXPECT_EQ(reframed(1, m), bytes(kPikaDeliver));
    }
    {
        const Frame f = one_frame(bytes(kPikaClose), kFrameMethod);
        const auto m = decode_as<method::ConnectionClose>(f.payload);
        EXPECT_EQ(m.reply_code, 320);
        EXPECT_EQ(m.reply_text, "CONNECTION_FORCED");
        EXPECT_EQ(m.failing_class_id, 60);
        EXPECT_EQ(m.failing_method_id, 40);
        EXPECT_EQ(reframed(0, m), bytes(kPikaClose));
    }
}

TEST(ClientCaptures, PikaExchangeDeclare) {
    const Frame f = one_frame(bytes(kPikaExchangeDeclare), kFrameMethod);
    const auto m = decode_as<method::ExchangeDeclare>(f.payload);
    EXPECT_EQ(m.exchange, "ex");
    EXPECT_EQ(m.type, "topic");
    EXPECT_FALSE(m.passive);
    EXPECT_TRUE(m.durable);
    EXPECT_FALSE(m.auto_delete);
    EXPECT_TRUE(m.internal);
    EXPECT_FALSE(m.no_wait);
    EXPECT_EQ(str_of(m.arguments, "alternate-exchange"), "ae");
    EXPECT_EQ(reframed(1, m), bytes(kPikaExchangeDeclare));
}

TEST(ClientCaptures, PikaHeartbeat) {
    const Frame f = one_frame(bytes(kPikaHeartbeat), kFrameHeartbeat);
    EXPECT_EQ(f.channel, 0);
    EXPECT_TRUE(f.payload.empty());
    std::string out;
    write_heartbeat(out);
    EXPECT_EQ(out, bytes(kPikaHeartbeat));
}

TEST(ClientCaptures, PikaTableTypes) {
    std::string_view in = bytes(kPikaTable);
    FieldTable t;
    ASSERT_EQ(decode_table(in, t), TableError::none);
    EXPECT_TRUE(in.empty());
    EXPECT_EQ(t.find("t")->as_bool(), std::optional<bool>(true));
    EXPECT_EQ(t.find("i")->v, FieldValue::Variant(int32_t(-2)));
    EXPECT_EQ(t.find("big")->v, FieldValue::Variant(int64_t(1) << 40));
    EXPECT_EQ(t.find("d")->v, FieldValue::Variant(Decimal{2, 314}));
    EXPECT_EQ(t.find("ts")->v, FieldValue::Variant(Timestamp{1700000000}));
    const FieldArray want_a{FieldValue(int32_t(1)), FieldValue("x"), FieldValue(Void{})};
    EXPECT_EQ(t.find("a")->v, FieldValue::Variant(want_a));
    EXPECT_EQ(t.find("b")->v, FieldValue::Variant(ByteArray{std::string("\x00\xff", 2)}));
    std::string again;
    encode_table(again, t);
    EXPECT_EQ(again, bytes(kPikaTable));
}

// py-amqp writes 64-bit ints as 'L' (RabbitMQ reads it as signed 64-bit) and
// negative decimals with a signed mantissa.
TEST(ClientCaptures, PyAmqpTableTypes) {
    std::string_view in = bytes(kPyAmqpTable);
    FieldTable t;
    ASSERT_EQ(decode_table(in, t), TableError::none);
    EXPECT_TRUE(in.empty());
    EXPECT_EQ(t.find("f")->v, FieldValue::Variant(1.5));  // a Python float is 'd'
    EXPECT_EQ(t.find("i")->v, FieldValue::Variant(int32_t(7)));
    EXPECT_EQ(t.find("neg")->v, FieldValue::Variant(-(int64_t(1) << 40)));
    EXPECT_EQ(t.find("d")->v, FieldValue::Variant(Decimal{2, uint32_t(-125)}));
    EXPECT_EQ(t.find("n")->v, FieldValue::Variant(Void{}));
    EXPECT_EQ(t.find("t")->as_bool(), std::optional<bool>(false));
    EXPECT_EQ(t.find("ts")->v, FieldValue::Variant(Timestamp{1700000000}));
    FieldTable xy;
    xy.set("x", FieldValue("y"));
    const FieldArray want_a{FieldValue(FieldArray{FieldValue(int32_t(1))}), FieldValue(xy)};
    EXPECT_EQ(t.find("a")->v, FieldValue::Variant(want_a));
    // Re-encoding is identical except that 'L' comes back as 'l'.
    std::string again;
    encode_table(again, t);
    std::string want(bytes(kPyAmqpTable));
    want[want.find("neg") + 3] = 'l';
    EXPECT_EQ(again, want);
}

TEST(ClientCaptures, PyAmqpPublishWithHeaders) {
    std::string_view wire = bytes(kPyAmqpPublish);
    FrameParse p = parse_frame(wire, 131072);
    ASSERT_EQ(p.status, FrameStatus::ok);
    const auto m = decode_as<method::BasicPublish>(p.frame.payload);
    EXPECT_EQ(m.exchange, "celery");
    EXPECT_EQ(m.routing_key, "celery");
    EXPECT_FALSE(m.mandatory);
    EXPECT_TRUE(m.immediate);
    EXPECT_EQ(reframed(1, m), wire.substr(0, p.consumed));
    wire.remove_prefix(p.consumed);

    p = parse_frame(wire, 131072);
    ASSERT_EQ(p.status, FrameStatus::ok);
    ASSERT_EQ(p.frame.type, kFrameHeader);
    ContentHeader ch;
    ASSERT_TRUE(decode_content_header(p.frame.payload, ch));
    EXPECT_EQ(ch.body_size, 15u);
    EXPECT_EQ(peek_delivery_mode(ch.properties), std::optional<uint8_t>(2));
    EXPECT_EQ(peek_priority(ch.properties), std::optional<uint8_t>(3));
    BasicProperties props;
    ASSERT_TRUE(decode_properties(ch.properties, props));
    EXPECT_EQ(props.content_type, "application/json");
    EXPECT_EQ(props.content_encoding, "utf-8");
    EXPECT_EQ(props.correlation_id, "a1b2");
    EXPECT_EQ(props.reply_to, "celery-reply");
    ASSERT_TRUE(props.headers);
    EXPECT_EQ(str_of(*props.headers, "task"), "tasks.add");
    EXPECT_EQ(int_of(*props.headers, "retries"), 0);
    EXPECT_EQ(int_of(*props.headers, "big"), int64_t(1) << 40);
    EXPECT_EQ(props.headers->find("eta")->type_code(), 'V');
    wire.remove_prefix(p.consumed);

    p = parse_frame(wire, 131072);
    ASSERT_EQ(p.status, FrameStatus::ok);
    EXPECT_EQ(p.frame.type, kFrameBody);
    EXPECT_EQ(p.frame.payload, "{\"task\": \"add\"}");
    EXPECT_EQ(p.consumed, wire.size());
}

}  // namespace
}  // namespace sluice::amqp
