#include "net/amqp_client_connection.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "net/amqp/delivery.hpp"
#include "net/amqp/properties.hpp"
#include "net/amqp/wire.hpp"

namespace sluice::net {

namespace asio = boost::asio;
namespace m = amqp::method;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {
constexpr uint32_t kFrameMaxWanted = 131072;
constexpr size_t kReadChunk = 64 * 1024;
constexpr auto kCloseWait = std::chrono::seconds(2);
constexpr auto kConnectTimeout = std::chrono::seconds(10);
// RabbitMQ's own ceiling for a message; a peer's header announcing more is
// refused rather than trusted with an allocation.
constexpr uint64_t kMaxBodySize = 512ull << 20;
}  // namespace

struct AmqpClientConnection::Impl {
    Impl(asio::io_context& io, ClientEndpoint e, Observer& o)
        : io(io), endpoint(std::move(e)), observer(&o), resolver(io), socket(io), timer(io), heartbeat_timer(io) {}

    enum class State { idle, connecting, handshake, open, closing, closed };

    asio::io_context& io;
    ClientEndpoint endpoint;
    Observer* observer;  // null once quiet
    tcp::resolver resolver;
    tcp::socket socket;
    asio::steady_timer timer;            // connect deadline, then close-ok deadline
    asio::steady_timer heartbeat_timer;
    State state = State::idle;
    std::string in;                      // unparsed bytes
    std::string out, writing;
    bool write_in_flight = false;
    bool flush_posted = false;
    uint32_t frame_max = kFrameMaxWanted;
    uint16_t heartbeat_s = 0;
    std::chrono::steady_clock::time_point last_read{};

    // content being assembled after basic.deliver
    bool in_content = false, header_seen = false, skip_content = false;
    uint64_t body_left = 0;
    ClientDelivery pending;
};

std::shared_ptr<AmqpClientConnection> AmqpClientConnection::create(asio::io_context& io, ClientEndpoint endpoint,
                                                                   Observer& observer) {
    return std::shared_ptr<AmqpClientConnection>(
        new AmqpClientConnection(std::make_unique<Impl>(io, std::move(endpoint), observer)));
}

AmqpClientConnection::AmqpClientConnection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AmqpClientConnection::~AmqpClientConnection() = default;

std::string& AmqpClientConnection::output() { return impl_->out; }

size_t AmqpClientConnection::pending_output() const { return impl_->out.size() + impl_->writing.size(); }

namespace {

// The free functions below take the connection (to keep it alive in handlers)
// and its Impl.
using Conn = std::shared_ptr<AmqpClientConnection>;

void fail(AmqpClientConnection::Impl& s, const std::string& reason) {
    if (s.state == AmqpClientConnection::Impl::State::closed) return;
    s.state = AmqpClientConnection::Impl::State::closed;
    error_code ignored;
    s.resolver.cancel();
    s.timer.cancel();
    s.heartbeat_timer.cancel();
    s.socket.close(ignored);
    if (auto* o = std::exchange(s.observer, nullptr)) o->closed(reason);
}

void flush(const Conn& self, AmqpClientConnection::Impl& s) {
    using State = AmqpClientConnection::Impl::State;
    if (s.write_in_flight || s.out.empty() || s.state == State::closed || s.state == State::connecting ||
        s.state == State::idle)
        return;
    std::swap(s.out, s.writing);
    s.write_in_flight = true;
    asio::async_write(s.socket, asio::buffer(s.writing), [self, &s](const error_code& ec, size_t) {
        s.write_in_flight = false;
        s.writing.clear();
        if (s.state == State::closed) return;
        if (ec) return fail(s, "write: " + ec.message());
        flush(self, s);
    });
}

void send_start_ok(AmqpClientConnection::Impl& s) {
    amqp::FieldTable caps;
    caps.set("publisher_confirms", true);
    caps.set("basic.nack", true);
    caps.set("consumer_cancel_notify", true);
    caps.set("connection.blocked", true);
    caps.set("authentication_failure_close", true);
    m::ConnectionStartOk ok;
    ok.client_properties.set("product", std::string("Sluice shovel"));
    ok.client_properties.set("connection_name", s.endpoint.connection_name);
    ok.client_properties.set("capabilities", std::move(caps));
    std::string response;
    response.push_back('\0');
    response += s.endpoint.user;
    response.push_back('\0');
    response += s.endpoint.password;
    ok.mechanism = "PLAIN";
    ok.response = response;
    ok.locale = "en_US";
    amqp::write_method(s.out, 0, ok);
}

void arm_heartbeat(const Conn& self, AmqpClientConnection::Impl& s) {
    if (s.heartbeat_s == 0) return;
    s.heartbeat_timer.expires_after(std::chrono::milliseconds(s.heartbeat_s * 500));
    s.heartbeat_timer.async_wait([self, &s](const error_code& ec) {
        if (ec || s.state == AmqpClientConnection::Impl::State::closed) return;
        if (std::chrono::steady_clock::now() - s.last_read > std::chrono::seconds(2 * s.heartbeat_s))
            return fail(s, "missed heartbeats from the broker");
        amqp::write_heartbeat(s.out);
        flush(self, s);
        arm_heartbeat(self, s);
    });
}

std::string close_reason(std::string_view who, uint16_t code, std::string_view text) {
    return std::string(who) + " closed the connection: " + std::to_string(code) + " " + std::string(text);
}

void connection_method(const Conn& self, AmqpClientConnection::Impl& s, std::string_view payload) {
    using State = AmqpClientConnection::Impl::State;
    const std::string_view args = payload.substr(4);
    switch (amqp::peek_method_key(payload)) {
    case m::ConnectionStart::key: {
        m::ConnectionStart start;
        if (amqp::decode_arguments(args, start) != amqp::DecodeError::none) return fail(s, "malformed connection.start");
        if (start.mechanisms.find("PLAIN") == std::string_view::npos)
            return fail(s, "the broker does not offer PLAIN authentication");
        send_start_ok(s);
        break;
    }
    case m::ConnectionTune::key: {
        m::ConnectionTune tune;
        if (amqp::decode_arguments(args, tune) != amqp::DecodeError::none) return fail(s, "malformed connection.tune");
        s.frame_max = tune.frame_max == 0 ? kFrameMaxWanted : std::min(tune.frame_max, kFrameMaxWanted);
        // The lower of the two non-zero intervals (0 on one side: the other's).
        uint16_t hb = s.endpoint.heartbeat_s;
        if (tune.heartbeat != 0 && (hb == 0 || tune.heartbeat < hb)) hb = tune.heartbeat;
        s.heartbeat_s = hb;
        amqp::write_method(s.out, 0, m::ConnectionTuneOk{tune.channel_max, s.frame_max, hb});
        m::ConnectionOpen open;
        open.virtual_host = s.endpoint.vhost;
        amqp::write_method(s.out, 0, open);
        arm_heartbeat(self, s);
        break;
    }
    case m::ConnectionOpenOk::key:
        s.state = State::open;
        s.timer.cancel();  // the connect deadline
        amqp::write_method(s.out, 1, m::ChannelOpen{});
        break;
    case m::ConnectionClose::key: {
        m::ConnectionClose c;
        amqp::decode_arguments(args, c);
        amqp::write_method(s.out, 0, m::ConnectionCloseOk{});
        flush(self, s);
        return fail(s, close_reason("the broker", c.reply_code, c.reply_text));
    }
    case m::ConnectionCloseOk::key:
        return fail(s, "closed");
    case m::ConnectionSecure::key:
        return fail(s, "the broker asked for connection.secure (only PLAIN is supported)");
    case m::ConnectionBlocked::key: {
        // Publishing waits on the socket anyway; the observer says so.
        m::ConnectionBlocked b;
        amqp::decode_arguments(args, b);
        if (s.observer) s.observer->blocked(true, b.reason);
        break;
    }
    case m::ConnectionUnblocked::key:
        if (s.observer) s.observer->blocked(false, {});
        break;
    default:
        break;
    }
}

void deliver_pending(AmqpClientConnection::Impl& s) {
    s.in_content = false;
    if (s.skip_content) return;
    if (s.observer) s.observer->delivery(std::move(s.pending));
    s.pending = ClientDelivery{};
}

void handle_frame(const Conn& self, AmqpClientConnection::Impl& s, const amqp::Frame& f) {
    using State = AmqpClientConnection::Impl::State;
    if (f.type == amqp::kFrameHeartbeat) return;
    if (f.channel == 0) {
        if (f.type == amqp::kFrameMethod) connection_method(self, s, f.payload);
        return;
    }
    if (s.state == State::closing || f.channel != 1) return;
    if (f.type == amqp::kFrameHeader) {
        amqp::ContentHeader h;
        if (!s.in_content || s.header_seen || !amqp::decode_content_header(f.payload, h))
            return fail(s, "unexpected or malformed content header");
        if (h.body_size > kMaxBodySize) return fail(s, "a message of " + std::to_string(h.body_size) + " bytes");
        s.header_seen = true;
        s.body_left = h.body_size;
        s.pending.properties.assign(h.properties);
        s.pending.body.reserve(std::min<uint64_t>(h.body_size, 1u << 20));
        if (s.body_left == 0) deliver_pending(s);
        return;
    }
    if (f.type == amqp::kFrameBody) {
        if (!s.in_content || !s.header_seen || f.payload.size() > s.body_left)
            return fail(s, "unexpected body frame");
        s.body_left -= f.payload.size();
        if (!s.skip_content) s.pending.body.append(f.payload);
        if (s.body_left == 0) deliver_pending(s);
        return;
    }
    if (f.type != amqp::kFrameMethod) return;
    if (s.in_content) return fail(s, "a method inside a message's content");
    const uint32_t key = amqp::peek_method_key(f.payload);
    if (key == m::BasicDeliver::key || key == m::BasicReturn::key) {
        s.in_content = true;
        s.header_seen = false;
        s.skip_content = key == m::BasicReturn::key;
        if (key == m::BasicDeliver::key) {
            m::BasicDeliver d;
            if (amqp::decode_arguments(f.payload.substr(4), d) != amqp::DecodeError::none)
                return fail(s, "malformed basic.deliver");
            s.pending.delivery_tag = d.delivery_tag;
            s.pending.redelivered = d.redelivered;
            s.pending.exchange.assign(d.exchange);
            s.pending.routing_key.assign(d.routing_key);
        }
        return;
    }
    if (key == m::ChannelClose::key) amqp::write_method(s.out, 1, m::ChannelCloseOk{});
    if (s.observer) s.observer->channel_method(key, f.payload.substr(4));
}

void read_more(const Conn& self, AmqpClientConnection::Impl& s) {
    using State = AmqpClientConnection::Impl::State;
    const size_t used = s.in.size();
    s.in.resize(used + kReadChunk);
    s.socket.async_read_some(asio::buffer(s.in.data() + used, kReadChunk), [self, &s, used](const error_code& ec,
                                                                                            size_t n) {
        s.in.resize(used + n);
        if (s.state == State::closed) return;
        if (ec) return fail(s, ec == asio::error::eof ? "the broker closed the socket" : "read: " + ec.message());
        s.last_read = std::chrono::steady_clock::now();
        size_t pos = 0;
        while (s.state != State::closed) {
            auto p = amqp::parse_frame(std::string_view(s.in).substr(pos), s.frame_max);
            if (p.status == amqp::FrameStatus::need_more) break;
            if (p.status != amqp::FrameStatus::ok) return fail(s, "malformed frame from the broker");
            handle_frame(self, s, p.frame);
            pos += p.consumed;
        }
        if (s.state == State::closed) return;
        s.in.erase(0, pos);
        flush(self, s);
        read_more(self, s);
    });
}

}  // namespace

void AmqpClientConnection::start() {
    Impl& s = *impl_;
    if (s.state != Impl::State::idle) return;
    s.state = Impl::State::connecting;
    auto self = shared_from_this();
    s.timer.expires_after(kConnectTimeout);
    s.timer.async_wait([self, &s](const error_code& ec) {
        if (!ec && s.state != Impl::State::open && s.state != Impl::State::closed)
            fail(s, "no connection within " + std::to_string(kConnectTimeout.count()) + " s");
    });
    s.resolver.async_resolve(
        s.endpoint.host, std::to_string(s.endpoint.port),
        [self, &s](const error_code& ec, const tcp::resolver::results_type& results) {
            if (s.state == Impl::State::closed) return;
            if (ec) return fail(s, "resolve " + s.endpoint.host + ": " + ec.message());
            asio::async_connect(s.socket, results, [self, &s](const error_code& ec2, const tcp::endpoint&) {
                if (s.state == Impl::State::closed) return;
                if (ec2)
                    return fail(s, "connect to " + s.endpoint.host + ":" + std::to_string(s.endpoint.port) + ": " +
                                       ec2.message());
                error_code ignored;
                s.socket.set_option(tcp::no_delay(true), ignored);
                s.state = Impl::State::handshake;
                s.last_read = std::chrono::steady_clock::now();
                s.out.insert(0, amqp::kProtocolHeader);
                flush(self, s);
                read_more(self, s);
            });
        });
}

void AmqpClientConnection::close() {
    Impl& s = *impl_;
    s.observer = nullptr;
    if (s.state == Impl::State::closed || s.state == Impl::State::closing) return;
    if (s.state != Impl::State::open) {
        fail(s, "closed");
        return;
    }
    s.state = Impl::State::closing;
    amqp::write_method(s.out, 0, m::ConnectionClose{200, "shovel stopped", 0, 0});
    auto self = shared_from_this();
    flush(self, s);
    s.timer.expires_after(kCloseWait);
    s.timer.async_wait([self, &s](const error_code& ec) {
        if (!ec) fail(s, "closed");
    });
}

void AmqpClientConnection::open_channel() { send(m::ChannelOpen{}); }

void AmqpClientConnection::publish(std::string_view exchange, std::string_view routing_key,
                                   std::string_view properties, std::string_view body) {
    Impl& s = *impl_;
    m::BasicPublish p;
    p.exchange = exchange;
    p.routing_key = routing_key;
    amqp::write_method(s.out, 1, p);
    amqp::write_content(s.out, 1, m::BasicPublish::class_id, properties, body.size(), body,
                        s.frame_max - amqp::kFrameOverhead);
    schedule_flush();
}

void AmqpClientConnection::schedule_flush() {
    Impl& s = *impl_;
    if (s.flush_posted) return;
    s.flush_posted = true;
    asio::post(s.io, [self = shared_from_this(), &s] {
        s.flush_posted = false;
        flush(self, s);
    });
}

}  // namespace sluice::net
