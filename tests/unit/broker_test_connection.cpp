// Session tests: the connection handshake, refused connections, channel
// lifecycle and the connection-level errors for bad frames.
#include <gtest/gtest.h>

#include "net/amqp/wire.hpp"
#include "tests/unit/session_harness.hpp"

namespace sluice::test {
namespace {

namespace m = amqp::method;
using amqp::kProtocolHeader;

TEST_F(SessionTest, HandshakeFramesAndServerCapabilities) {
    ClientOptions o;
    o.heartbeat = 30;
    TestClient& c = client(o);
    ASSERT_TRUE(c.handshake()) << c.describe_pending();

    const m::ConnectionStart& start = c.start();
    EXPECT_EQ(start.version_major, 0);
    EXPECT_EQ(start.version_minor, 9);
    EXPECT_NE(std::string_view(start.mechanisms).find("PLAIN"), std::string_view::npos);
    EXPECT_NE(std::string_view(start.locales).find("en_US"), std::string_view::npos);
    const amqp::FieldValue* caps = start.server_properties.find("capabilities");
    ASSERT_NE(caps, nullptr);
    ASSERT_NE(caps->as_table(), nullptr);
    for (const char* name : {"publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                             "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
                             "authentication_failure_close", "per_consumer_qos", "direct_reply_to"}) {
        const amqp::FieldValue* v = caps->as_table()->find(name);
        ASSERT_NE(v, nullptr) << "capability " << name << " not advertised";
        EXPECT_EQ(v->type_code(), 't') << name;
        EXPECT_EQ(v->as_bool(), std::optional<bool>(true)) << name;
    }
    EXPECT_NE(start.server_properties.find("product"), nullptr);
    EXPECT_NE(start.server_properties.find("version"), nullptr);

    EXPECT_EQ(c.tune().channel_max, config.channel_max);
    EXPECT_EQ(c.tune().frame_max, config.frame_max);
    EXPECT_EQ(c.tune().heartbeat, config.heartbeat);
    // The client's heartbeat answer is what the host is told to run.
    EXPECT_EQ(c.host().heartbeat, std::optional<uint16_t>(30));
    EXPECT_EQ(c.host().close_calls, 0);
    EXPECT_GT(c.host().flush_requests, 0);
    EXPECT_FALSE(c.session().closed());
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    EXPECT_TRUE(c.open_channel(1));
}

TEST_F(SessionTest, ProtocolHeaderSplitAcrossReads) {
    TestClient& c = client();
    c.send_raw(kProtocolHeader.substr(0, 3));
    EXPECT_EQ(c.pending(), 0u);
    c.send_raw(kProtocolHeader.substr(3));
    c.expect<m::ConnectionStart>(0);
}

TEST_F(SessionTest, HeartbeatZeroTurnsTimerOff) {
    TestClient& c = client();  // heartbeat 0 in tune-ok
    ASSERT_TRUE(c.handshake());
    EXPECT_EQ(c.host().heartbeat, std::optional<uint16_t>(0));
}

TEST_F(SessionTest, AmqplainLogin) {
    ClientOptions o;
    o.mechanism = "AMQPLAIN";
    TestClient& c = client(o);
    EXPECT_TRUE(c.handshake()) << c.describe_pending();
}

TEST_F(SessionTest, WrongProtocolHeaderGetsOursAndClose) {
    TestClient& c = client();
    c.set_auto_drain(false);
    c.send_raw(std::string_view("AMQP\x01\x01\x00\x0a", 8));  // AMQP 0-10
    EXPECT_EQ(c.session().output(), kProtocolHeader);
    EXPECT_EQ(c.host().close_calls, 1);
    EXPECT_TRUE(c.session().closed());
}

TEST_F(SessionTest, HttpInsteadOfAmqpGetsHeaderAndClose) {
    TestClient& c = client();
    c.set_auto_drain(false);
    c.send_raw("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(c.session().output(), kProtocolHeader);
    EXPECT_EQ(c.host().close_calls, 1);
    EXPECT_TRUE(c.session().closed());
}

TEST_F(SessionTest, BadPasswordGetsConnectionClose403) {
    ClientOptions o;
    o.password = "wrong";
    TestClient& c = client(o);
    EXPECT_FALSE(c.handshake());
    c.expect_connection_close(403);
    EXPECT_GE(c.host().close_calls, 1);
    EXPECT_FALSE(c.host().heartbeat.has_value());
}

TEST_F(SessionTest, BadPasswordWithoutFailureCloseCapabilityJustCloses) {
    ClientOptions o;
    o.password = "wrong";
    o.capabilities = {};
    TestClient& c = client(o);
    EXPECT_FALSE(c.handshake());
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    EXPECT_EQ(c.host().close_calls, 1);
    EXPECT_TRUE(c.session().closed());
}

TEST_F(SessionTest, GuestRefusedFromNonLoopbackPeer) {
    ClientOptions o;
    o.loopback = false;
    TestClient& c = client(o);
    EXPECT_FALSE(c.handshake());
    c.expect_connection_close(403);
}

TEST_F(SessionTest, UnknownMechanismRefused) {
    ClientOptions o;
    o.mechanism = "EXTERNAL";
    TestClient& c = client(o);
    EXPECT_FALSE(c.handshake());
    c.expect_connection_close(403);
}

TEST_F(SessionTest, ExternalIsOfferedOnlyWithACertificateUser) {
    TestClient& plain = client();
    ASSERT_TRUE(plain.handshake());
    EXPECT_EQ(std::string_view(plain.start().mechanisms), "PLAIN AMQPLAIN");
    ClientOptions o;
    o.cert_user = "guest";
    TestClient& tls = client(o);
    ASSERT_TRUE(tls.handshake());
    EXPECT_EQ(std::string_view(tls.start().mechanisms), "PLAIN AMQPLAIN EXTERNAL");
}

TEST_F(SessionTest, ExternalLogsInAsTheCertificateUserWithoutAPassword) {
    ClientOptions o;
    o.mechanism = "EXTERNAL";
    o.cert_user = "guest";
    o.user = "";
    o.password = "";
    TestClient& c = client(o);
    ASSERT_TRUE(c.handshake()) << c.describe_pending();
    EXPECT_EQ(c.session().user(), "guest");
}

TEST_F(SessionTest, ExternalForAnUnknownCertificateUserIs403) {
    ClientOptions o;
    o.mechanism = "EXTERNAL";
    o.cert_user = "mallory";
    TestClient& c = client(o);
    EXPECT_FALSE(c.handshake());
    c.expect_connection_close(403);
    EXPECT_TRUE(c.session().user().empty());
}

TEST_F(SessionTest, ExternalKeepsTheDefaultUsersLoopbackRule) {
    ClientOptions o;
    o.mechanism = "EXTERNAL";
    o.cert_user = "guest";
    o.loopback = false;
    TestClient& c = client(o);
    EXPECT_FALSE(c.handshake());
    c.expect_connection_close(403);
}

TEST_F(SessionTest, TuneOkFrameMaxBelowMinimumIs530) {
    ClientOptions o;
    o.frame_max = 1024;
    TestClient& c = client(o);
    EXPECT_FALSE(c.handshake());
    c.expect_connection_close(530);
    EXPECT_GE(c.host().close_calls, 1);
}

TEST_F(SessionTest, TuneOkFrameMaxAboveServerIs530) {
    ClientOptions o;
    o.frame_max = config.frame_max + 1;
    TestClient& c = client(o);
    EXPECT_FALSE(c.handshake());
    c.expect_connection_close(530);
}

TEST_F(SessionTest, UnknownVhostIs530) {
    ClientOptions o;
    o.vhost = "/nope";
    TestClient& c = client(o);
    EXPECT_FALSE(c.handshake());
    c.expect_connection_close(530);
}

TEST_F(SessionTest, ConnectionCloseHandshake) {
    TestClient& c = connect();
    m::ConnectionClose close;
    close.reply_code = 200;
    close.reply_text = "bye";
    c.send(0, close);
    c.expect<m::ConnectionCloseOk>(0);
    EXPECT_EQ(c.host().close_calls, 1);
    EXPECT_TRUE(c.session().closed());
    // Anything afterwards is ignored.
    c.send(1, m::ChannelOpen{});
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
}

TEST_F(SessionTest, ChannelOpenCloseAndReopen) {
    TestClient& c = connect();
    EXPECT_TRUE(c.open_channel(2));
    EXPECT_TRUE(c.close_channel(1));
    // Channel 2 is untouched; channel 1 can be opened again.
    EXPECT_FALSE(c.declare_queue(2, "q").empty());
    EXPECT_TRUE(c.open_channel(1));
    EXPECT_FALSE(c.declare_queue(1, "q").empty());
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
}

TEST_F(SessionTest, ServerChannelCloseIgnoresFramesUntilCloseOk) {
    TestClient& c = connect();
    ASSERT_TRUE(c.open_channel(2));
    QueueOpts passive;
    passive.passive = true;
    m::QueueDeclare d;
    d.queue = "missing";
    d.passive = true;
    c.send(1, d);
    ServerFrame close = c.expect<m::ChannelClose>(1);
    ASSERT_TRUE(close.is<m::ChannelClose>());
    EXPECT_EQ(close.get<m::ChannelClose>().reply_code, 404);
    EXPECT_EQ(close.get<m::ChannelClose>().failing_class_id, m::QueueDeclare::class_id);
    EXPECT_EQ(close.get<m::ChannelClose>().failing_method_id, m::QueueDeclare::method_id);
    EXPECT_EQ(std::string_view(close.get<m::ChannelClose>().reply_text),
              "NOT_FOUND - no queue 'missing' in vhost '/'");
    // Until the close-ok, the channel ignores methods.
    c.send(1, m::QueueDeclare{});
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    c.send(1, m::ChannelCloseOk{});
    // Connection and other channel are fine; channel 1 can be reopened.
    EXPECT_FALSE(c.declare_queue(2, "q2").empty());
    EXPECT_TRUE(c.open_channel(1));
    EXPECT_EQ(c.host().close_calls, 0);
}

TEST_F(SessionTest, MethodOnUnopenedChannelIs504) {
    TestClient& c = connect();
    m::QueueDeclare d;
    d.queue = "q";
    c.send(7, d);
    ServerFrame f = c.expect_connection_close(504);
    ASSERT_TRUE(f.is<m::ConnectionClose>());
    EXPECT_EQ(f.get<m::ConnectionClose>().failing_class_id, m::QueueDeclare::class_id);
    EXPECT_EQ(f.get<m::ConnectionClose>().failing_method_id, m::QueueDeclare::method_id);
    EXPECT_GE(c.host().close_calls, 1);
    // After connection.close only close-ok matters.
    c.send(1, m::QueueDeclare{});
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    c.send(0, m::ConnectionCloseOk{});
    EXPECT_TRUE(c.session().closed());
}

TEST_F(SessionTest, SecondChannelOpenIs504) {
    TestClient& c = connect();
    c.send(1, m::ChannelOpen{});
    c.expect_connection_close(504);
}

TEST_F(SessionTest, ChannelFrameBeforeOpenIs504) {
    TestClient& c = client();
    c.send_raw(kProtocolHeader);
    c.expect<m::ConnectionStart>(0);
    c.send(1, m::ChannelOpen{});
    c.expect_connection_close(504);
}

TEST_F(SessionTest, ChannelAboveChannelMaxIs530) {
    // RabbitMQ answers a channel.open above the negotiated channel_max with
    // connection.close 530 NOT_ALLOWED (its Java client's
    // ChannelLimitNegotiation.openingTooManyChannels test checks exactly that).
    ClientOptions o;
    o.channel_max = 8;
    TestClient& c = connect(o);
    EXPECT_TRUE(c.open_channel(8));
    c.send(9, m::ChannelOpen{});
    ServerFrame f = c.next();
    ASSERT_TRUE(f.is<m::ConnectionClose>()) << f.describe();
    EXPECT_EQ(f.get<m::ConnectionClose>().reply_code, 530) << f.describe();
}

TEST_F(SessionTest, FrameLargerThanFrameMaxIs501) {
    ClientOptions o;
    o.frame_max = 4096;
    TestClient& c = connect(o);
    c.send_frame(amqp::kFrameBody, 1, std::string(5000, 'x'));
    c.expect_connection_close(501);
}

TEST_F(SessionTest, BadFrameEndIs501) {
    TestClient& c = connect();
    std::string frame;
    amqp::write_method(frame, 1, m::BasicQos{});
    frame.back() = '\x00';
    c.send_raw(frame);
    c.expect_connection_close(501);
}

TEST_F(SessionTest, UnknownFrameTypeIs501) {
    TestClient& c = connect();
    c.send_raw(std::string_view("\x05\x00\x01\x00\x00\x00\x00\xce", 8));
    c.expect_connection_close(501);
}

TEST_F(SessionTest, HeartbeatFramesAreAcceptedSilently) {
    TestClient& c = connect();
    std::string hb;
    amqp::write_heartbeat(hb);
    c.send_raw(hb);
    EXPECT_EQ(c.pending(), 0u) << c.describe_pending();
    EXPECT_FALSE(c.session().closed());
}

TEST_F(SessionTest, HeartbeatOnNonZeroChannelIs501) {
    TestClient& c = connect();
    c.send_frame(amqp::kFrameHeartbeat, 1, "");
    c.expect_connection_close(501);
}

TEST_F(SessionTest, HeartbeatDueWritesHeartbeatFrame) {
    TestClient& c = connect();
    int flushes = c.host().flush_requests;
    c.session().on_heartbeat_due();
    ServerFrame f = c.next();
    EXPECT_EQ(f.type, amqp::kFrameHeartbeat) << f.describe();
    EXPECT_EQ(f.channel, 0);
    EXPECT_GT(c.host().flush_requests, flushes);
}

TEST_F(SessionTest, UnknownMethodIs540) {
    TestClient& c = connect();
    std::string payload;
    amqp::put_u16(payload, 60);
    amqp::put_u16(payload, 999);
    c.send_frame(amqp::kFrameMethod, 1, payload);
    c.expect_connection_close(540);
}

// RabbitMQ: 501 "FRAME_ERROR - cannot decode <<...>>" for arguments that do
// not decode, short or long.
TEST_F(SessionTest, TruncatedMethodIs501) {
    TestClient& c = connect();
    std::string frame;
    m::QueueDeclare d;
    d.queue = "some-queue";
    std::string payload;
    amqp::encode(payload, d);
    payload.resize(8);  // cut inside the queue name
    c.send_frame(amqp::kFrameMethod, 1, payload);
    c.expect_connection_close(501);
}

TEST_F(SessionTest, ContentHeaderWithoutPublishIs505) {
    TestClient& c = connect();
    std::string header;
    std::string props;
    amqp::encode_properties(props, {});
    amqp::encode_content_header(header, 60, 3, props);
    c.send_frame(amqp::kFrameHeader, 1, header);
    c.expect_connection_close(505);
}

TEST_F(SessionTest, MethodInsteadOfContentHeaderIs505) {
    TestClient& c = connect();
    m::BasicPublish p;
    p.routing_key = "q";
    c.send(1, p);
    c.send(1, m::BasicQos{});
    c.expect_connection_close(505);
}

TEST_F(SessionTest, BodyLongerThanHeaderSaysIs501) {
    TestClient& c = connect();
    m::BasicPublish p;
    p.routing_key = "q";
    c.send(1, p);
    std::string header, props;
    amqp::encode_properties(props, {});
    amqp::encode_content_header(header, 60, 3, props);
    c.send_frame(amqp::kFrameHeader, 1, header);
    c.send_frame(amqp::kFrameBody, 1, "toolong");
    c.expect_connection_close(501);
}

TEST_F(SessionTest, ContentOnChannelZeroIs505) {
    TestClient& c = connect();
    c.send_frame(amqp::kFrameBody, 0, "x");
    c.expect_connection_close(505);
}

TEST_F(SessionTest, ChannelMethodOnChannelZeroIs504) {
    TestClient& c = connect();
    c.send(0, m::QueueDeclare{});
    c.expect_connection_close(504);
}

TEST_F(SessionTest, ErrorOnOneConnectionLeavesOthersAlone) {
    TestClient& a = connect();
    TestClient& b = connect();
    std::string q = b.declare_queue(1, "shared");
    a.send(9, m::QueueDeclare{});
    a.expect_connection_close(504);
    EXPECT_EQ(b.host().close_calls, 0);
    b.publish(1, "", q, "still here");
    ServerFrame f = b.get(1, q);
    ASSERT_TRUE(f.is<m::BasicGetOk>()) << f.describe();
    EXPECT_EQ(f.body, "still here");
}

}  // namespace
}  // namespace sluice::test
