// A sans-IO harness for broker::Session: a FakeHost that records what the
// session asks of net/, and a TestClient that owns a Session, speaks the
// client side of AMQP with the codec (handshake, methods, content split by
// frame_max) and reads back the frames the session wrote, decoded, with
// content (header + body frames) reassembled onto its method.
//
// Several TestClients may share one broker::Broker: that is how a test
// exercises cross-connection behaviour (publisher on one, consumer on
// another). Everything is synchronous and single-threaded.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/broker.hpp"
#include "broker/session.hpp"
#include "net/amqp/field_table.hpp"
#include "net/amqp/frame.hpp"
#include "net/amqp/methods.hpp"
#include "net/amqp/properties.hpp"

namespace sluice::test {

// Records the session's requests to the transport. (No `override`: the
// interface grows, e.g. resume_reading for alarms, and the host should keep
// compiling on either side of such a change.)
class FakeHost : public broker::SessionHost {
public:
    void request_flush() { ++flush_requests; }
    void close_transport() { ++close_calls; }
    void start_heartbeat(uint16_t seconds) { heartbeat = seconds; }
    void resume_reading() {
        ++resume_reading_calls;
        if (on_resume) on_resume();  // as a real host does: parse what it buffered
    }
    std::function<void()> on_resume;

    int flush_requests = 0;
    int close_calls = 0;
    int resume_reading_calls = 0;
    std::optional<uint16_t> heartbeat;  // unset until start_heartbeat
};

// One frame the session wrote, decoded. A method that carries content
// (basic.deliver, basic.get-ok, basic.return) has its header and body frames
// folded into it; stray header/body frames stand alone.
struct ServerFrame {
    uint8_t type = 0;  // 0 = "no frame" (returned when nothing was pending)
    uint16_t channel = 0;
    std::shared_ptr<const std::string> payload;  // method's string_views point into it
    amqp::Method method;                          // method frames only
    amqp::DecodeError decode_error = amqp::DecodeError::none;

    // Content, for content-carrying methods.
    bool has_content = false;
    uint16_t content_class = 0;
    uint64_t body_size = 0;
    std::string raw_properties;
    amqp::BasicProperties properties;
    std::string body;
    std::vector<size_t> body_frame_sizes;  // payload size of each body frame

    bool valid() const { return type != 0; }
    uint32_t key() const;  // method_key, 0 if not a method
    template <typename M>
    bool is() const { return std::holds_alternative<M>(method); }
    template <typename M>
    const M& get() const { return std::get<M>(method); }  // throws if another method
    // "basic.deliver on channel 1", "heartbeat", … for failure messages.
    std::string describe() const;
};

struct ClientOptions {
    std::string user = "guest";
    std::string password = "guest";
    std::string mechanism = "PLAIN";
    bool loopback = true;
    // The user a verified TLS client certificate names (ConnectionInfo::cert_user).
    std::string cert_user;
    // Capabilities announced in client-properties.
    std::vector<std::string> capabilities = {"publisher_confirms",     "exchange_exchange_bindings",
                                             "basic.nack",             "consumer_cancel_notify",
                                             "connection.blocked",     "authentication_failure_close"};
    // tune-ok values; nullopt = echo the server's tune.
    std::optional<uint32_t> frame_max;
    std::optional<uint16_t> channel_max;
    uint16_t heartbeat = 0;
    std::string vhost = "/";
};

struct QueueOpts {
    bool passive = false;
    bool durable = false;
    bool exclusive = false;
    bool auto_delete = false;
    amqp::FieldTable arguments;
};

class TestClient {
public:
    explicit TestClient(broker::Broker& broker, ClientOptions options = {});
    ~TestClient();
    TestClient(const TestClient&) = delete;
    TestClient& operator=(const TestClient&) = delete;

    broker::Session& session() { return *session_; }
    FakeHost& host() { return host_; }
    const ClientOptions& options() const { return options_; }
    // frame_max the client agreed to (from tune-ok), for splitting bodies.
    uint32_t frame_max() const { return frame_max_; }
    const amqp::method::ConnectionTune& tune() const { return tune_; }
    const amqp::method::ConnectionStart& start() const { return start_->get<amqp::method::ConnectionStart>(); }

    // Protocol header, start-ok, tune-ok, open; ADD_FAILUREs on surprises.
    // Returns true when the connection is open.
    bool handshake();

    // --- sending -----------------------------------------------------------
    // Bytes into Session::on_bytes (unconsumed bytes are kept for the next call).
    void send_raw(std::string_view bytes);
    // Frames are sent one on_bytes call each, unless inside batch(): then
    // every frame the callback sends goes in one on_bytes call at its end.
    void batch(const std::function<void()>& fn);
    template <typename M>
    void send(uint16_t channel, const M& m) {
        std::string out;
        amqp::write_method(out, channel, m);
        send_raw_or_batch(out);
    }
    void send_frame(uint8_t type, uint16_t channel, std::string_view payload);
    // basic.publish + content header + body frames (split by frame_max).
    void publish(uint16_t channel, std::string_view exchange, std::string_view routing_key, std::string_view body,
                 const amqp::BasicProperties& props = {}, bool mandatory = false);
    // The session thinks the socket went away.
    void transport_closed() { session_->on_transport_closed(); }

    // --- common conversations (each expects the -ok; ADD_FAILURE otherwise) --
    bool open_channel(uint16_t channel);
    bool close_channel(uint16_t channel);
    // Returns the queue name from declare-ok ("" on failure).
    std::string declare_queue(uint16_t channel, std::string_view name, const QueueOpts& opts = {});
    bool declare_exchange(uint16_t channel, std::string_view name, std::string_view type,
                          bool durable = false, bool auto_delete = false, bool internal = false);
    bool bind_queue(uint16_t channel, std::string_view queue, std::string_view exchange, std::string_view key,
                    const amqp::FieldTable& args = {});
    // Returns the consumer tag from consume-ok.
    std::string consume(uint16_t channel, std::string_view queue, bool no_ack = false,
                        std::string_view tag = "", bool exclusive = false);
    bool qos(uint16_t channel, uint16_t prefetch_count, bool global = false);
    bool confirm_select(uint16_t channel);
    void ack(uint16_t channel, uint64_t tag, bool multiple = false);
    void nack(uint16_t channel, uint64_t tag, bool multiple, bool requeue);
    void reject(uint16_t channel, uint64_t tag, bool requeue);
    // basic.get; returns the get-ok (with content) or the get-empty frame.
    ServerFrame get(uint16_t channel, std::string_view queue, bool no_ack = false);

    // --- receiving ---------------------------------------------------------
    // Reads what the session wrote so far (unless auto_drain is off, every
    // send drains automatically). Returns the number of frames added.
    size_t drain();
    // When false, output stays in Session::output() until drain() is called
    // (to test back-pressure).
    void set_auto_drain(bool on) { auto_drain_ = on; }
    // The next frame, or one with type 0 (and no failure) when none is pending.
    ServerFrame next();
    // The next frame, which must be method M on `channel` (ADD_FAILURE otherwise;
    // the frame is returned anyway so the test's get<M>() fails loudly).
    template <typename M>
    ServerFrame expect(uint16_t channel) {
        ServerFrame f = next();
        check_expected(f, M::key, M::name, channel);
        return f;
    }
    // Expects channel.close with this code, answers close-ok. Returns the frame.
    ServerFrame expect_channel_close(uint16_t channel, uint16_t code);
    // Expects connection.close with this code (does not answer).
    ServerFrame expect_connection_close(uint16_t code);
    size_t pending() const { return inbox_.size(); }
    const std::deque<ServerFrame>& inbox() const { return inbox_; }
    // Every pending frame, described, for failure messages.
    std::string describe_pending() const;
    void clear() { inbox_.clear(); }

private:
    void send_raw_or_batch(std::string_view bytes);
    void after_send();
    void check_expected(const ServerFrame& f, uint32_t key, std::string_view name, uint16_t channel);

    broker::Broker& broker_;
    ClientOptions options_;
    FakeHost host_;
    std::unique_ptr<broker::Session> session_;
    std::string input_;     // bytes the session has not consumed yet
    std::string received_;  // output bytes not yet parsed into frames
    std::deque<ServerFrame> inbox_;
    bool resuming_ = false;  // host_.on_resume is feeding input_
    std::optional<ServerFrame> assembling_;  // content method waiting for its header/body
    bool batching_ = false;
    std::string batch_;
    bool auto_drain_ = true;
    uint32_t frame_max_ = 0;
    amqp::method::ConnectionTune tune_;
    std::optional<ServerFrame> start_;
};

// A field table from (name, value) pairs.
amqp::FieldTable table(std::initializer_list<std::pair<std::string, amqp::FieldValue>> entries);

}  // namespace sluice::test

// --- gtest fixture ----------------------------------------------------------

namespace sluice::test {

// One broker per test; connect() gives handshaken clients with channel 1 open.
// Set `config` before the first broker()/connect() call to change settings.
class SessionTest : public ::testing::Test {
protected:
    broker::Broker& broker() {
        if (!broker_) broker_ = std::make_unique<broker::Broker>(config);
        return *broker_;
    }
    // A new client, not yet handshaken.
    TestClient& client(ClientOptions options = {}) {
        clients_.push_back(std::make_unique<TestClient>(broker(), std::move(options)));
        return *clients_.back();
    }
    // A new client after the handshake, with channel 1 open.
    TestClient& connect(ClientOptions options = {}) {
        TestClient& c = client(std::move(options));
        EXPECT_TRUE(c.handshake()) << c.describe_pending();
        EXPECT_TRUE(c.open_channel(1)) << c.describe_pending();
        return c;
    }
    broker::VHost& vhost() { return *broker().find_vhost("/"); }
    broker::QueuePtr queue(std::string_view name) { return vhost().find_queue(name); }

    broker::BrokerConfig config;

private:
    std::unique_ptr<broker::Broker> broker_;  // declared first: outlives the clients
    std::vector<std::unique_ptr<TestClient>> clients_;
};

}  // namespace sluice::test
