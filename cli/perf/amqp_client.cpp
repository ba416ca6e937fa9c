#include "cli/perf/amqp_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <iostream>

#include "cli/perf/message_stamp.hpp"
#include "net/amqp/properties.hpp"

namespace sluice::perf {

namespace m = amqp::method;
using boost::system::error_code;

namespace {
// Reads start at 64 KiB per connection (thousands of idle connections stay
// cheap) and double while a read fills the buffer, up to 1 MiB.
constexpr size_t kReadBufferInitial = 64 * 1024;
constexpr size_t kReadBufferMax = 1024 * 1024;
constexpr uint32_t kFrameMaxCap = 1024 * 1024;
constexpr auto kCloseDeadline = std::chrono::seconds(2);
}  // namespace

AmqpClient::AmqpClient(asio::io_context& ioc, const BrokerAddress& addr, asio::ip::tcp::endpoint endpoint,
                       std::string name, ThreadStats& stats, RunControl& ctl)
    : ioc_(ioc), stats_(stats), ctl_(ctl), addr_(addr), endpoint_(endpoint), name_(std::move(name)),
      sock_(ioc), close_timer_(ioc), read_timer_(ioc) {
    grow_read_buffer(kReadBufferInitial);
}

AmqpClient::~AmqpClient() = default;

void AmqpClient::connect() {
    sock_.async_connect(endpoint_, [this](const error_code& ec) {
        if (state_ != State::connecting) return;
        if (ec) {
            fail("connect to " + endpoint_.address().to_string() + ":" + std::to_string(endpoint_.port()) +
                 ": " + ec.message());
            return;
        }
        error_code ignored;
        sock_.set_option(asio::ip::tcp::no_delay(true), ignored);
        sock_.non_blocking(true, ignored);
        state_ = State::handshake;
        out_.append(amqp::kProtocolHeader);
        flush();
        read_more();
    });
}

void AmqpClient::shutdown() {
    if (state_ >= State::closing) return;
    if (state_ == State::connecting) {
        finish();
        return;
    }
    state_ = State::closing;
    if (read_held_) read_timer_.cancel();  // read again: the close-ok must come through
    // Anything already queued (counted as sent) still goes out, then the close.
    amqp::write_method(out_, 0, m::ConnectionClose{200, "sluice-perf done", 0, 0});
    flush();
    close_timer_.expires_after(kCloseDeadline);
    close_timer_.async_wait([this](const error_code& ec) {
        if (!ec) finish();
    });
}

void AmqpClient::fail(const std::string& what) {
    if (state_ >= State::closing) return;
    ctl_.report_error(name_ + ": " + what);
    finish();
}

void AmqpClient::finish() {
    if (state_ == State::closed) return;
    state_ = State::closed;
    close_timer_.cancel();
    read_timer_.cancel();
    error_code ignored;
    sock_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    sock_.close(ignored);
    ctl_.closed.fetch_add(1);
}

void AmqpClient::grow_read_buffer(size_t at_least) {
    if (at_least <= rbuf_size_) return;
    std::unique_ptr<char[]> bigger(new char[at_least]);
    if (rend_ > rbeg_) std::memcpy(bigger.get(), rbuf_.get() + rbeg_, rend_ - rbeg_);
    rend_ -= rbeg_;
    rbeg_ = 0;
    rbuf_ = std::move(bigger);
    rbuf_size_ = at_least;
}

void AmqpClient::mark_ready() {
    if (counted_ready_) return;
    counted_ready_ = true;
    ctl_.ready.fetch_add(1);
}

// ---------------------------------------------------------------------------
// writing

void AmqpClient::flush() {
    if (writing_ || out_.empty() || state_ == State::closed || state_ == State::connecting) return;
    std::swap(out_, wbuf_);
    writing_ = true;
    asio::async_write(sock_, asio::buffer(wbuf_), [this](const error_code& ec, size_t) {
        writing_ = false;
        wbuf_.clear();
        if (state_ == State::closed) return;
        if (ec) {
            if (state_ == State::closing) finish();
            else fail("write: " + ec.message());
            return;
        }
        if (state_ != State::closing) on_written();
        flush();
    });
}

// ---------------------------------------------------------------------------
// reading

// Waits for readability, then reads without blocking until a read comes back
// short (the socket is drained for now). Unlike async_read_some, this spends no
// extra recv() that fails with EAGAIN after each batch: with request/reply
// traffic that was one syscall in four.
void AmqpClient::read_more() {
    if (state_ == State::closed || reading_ || read_held_) return;
    if (state_ == State::running) {
        if (const uint64_t until = read_hold_until_ns(); until && until > now_ns()) {
            hold_reads(until);
            return;
        }
    }
    reading_ = true;
    sock_.async_wait(asio::ip::tcp::socket::wait_read, [this](const error_code& wait_ec) {
        reading_ = false;
        if (state_ == State::closed) return;
        if (wait_ec) {
            if (state_ == State::closing) finish();
            else fail("read: " + wait_ec.message());
            return;
        }
        for (;;) {
            const size_t space = rbuf_size_ - rend_;
            error_code ec;
            const size_t n = sock_.read_some(asio::buffer(rbuf_.get() + rend_, space), ec);
            if (ec == asio::error::would_block || ec == asio::error::try_again) break;
            if (ec) {
                if (state_ == State::closing) finish();
                else if (ec == asio::error::eof)
                    fail(state_ == State::handshake
                             ? "the broker closed the connection during the handshake (user, password, vhost?)"
                             : "the broker closed the connection");
                else fail("read: " + ec.message());
                return;
            }
            rend_ += n;
            read_time_ns_ = now_ns();
            handle_reads();
            if (state_ == State::closed) return;
            if (n < space) break;
            if (state_ == State::running && read_hold_until_ns() > read_time_ns_) break;  // over its rate
            if (rbuf_size_ < kReadBufferMax) grow_read_buffer(rbuf_size_ * 2);  // a busy connection
        }
        on_reads_handled();
        flush();
        read_more();
    });
}

void AmqpClient::hold_reads(uint64_t until_ns) {
    read_held_ = true;
    const uint64_t now = now_ns();
    read_timer_.expires_after(std::chrono::nanoseconds(until_ns > now ? until_ns - now : 0));
    read_timer_.async_wait([this](const error_code&) {  // expired, or cancelled by shutdown()
        read_held_ = false;
        if (state_ == State::closed) return;
        read_more();
    });
}

void AmqpClient::handle_reads() {
    while (state_ != State::closed) {
        auto p = amqp::parse_frame(std::string_view(rbuf_.get() + rbeg_, rend_ - rbeg_), frame_max_);
        if (p.status == amqp::FrameStatus::need_more) break;
        if (p.status != amqp::FrameStatus::ok) {
            fail("malformed frame from the broker");
            return;
        }
        handle_frame(p.frame);
        rbeg_ += p.consumed;
    }
    if (rbeg_ == rend_) {
        rbeg_ = rend_ = 0;
    } else if (rbeg_ > 0) {  // keep the partial frame at the front
        std::memmove(rbuf_.get(), rbuf_.get() + rbeg_, rend_ - rbeg_);
        rend_ -= rbeg_;
        rbeg_ = 0;
    }
    // a partial frame larger than the buffer: make room for all of it
    if (rend_ >= amqp::kFrameHeaderSize) {
        const size_t total = size_t{load_be32(rbuf_.get() + 3)} + amqp::kFrameOverhead;
        if (total > rbuf_size_) grow_read_buffer(total + kReadBufferInitial);
    }
}

void AmqpClient::handle_frame(const amqp::Frame& f) {
    switch (f.type) {
    case amqp::kFrameMethod:
        if (f.channel == 0) handle_connection_method(f.payload);
        else if (state_ != State::closing) handle_channel_method(f.payload);
        return;
    case amqp::kFrameHeader: {
        if (!expect_header_ || state_ == State::closing) return;
        expect_header_ = false;
        // class-id (2) | weight (2) | body size (8) | property flags (2) ...: read
        // in place (the codec's decode_content_header does the same, checked
        // field by field, at four times the instructions on this hot path)
        if (f.payload.size() < 14) {
            fail("malformed content header from the broker");
            return;
        }
        body_left_ = load_be64(f.payload.data() + 4);
        if (content_ == Content::deliver) {
            on_content_header(body_left_, f.payload.substr(12));
            if (body_left_ == 0) on_content_body({}, true);
        }
        if (body_left_ == 0) content_ = Content::none;
        return;
    }
    case amqp::kFrameBody: {
        if (content_ == Content::none || state_ == State::closing) return;
        const uint64_t n = f.payload.size();
        body_left_ = n >= body_left_ ? 0 : body_left_ - n;
        if (content_ == Content::deliver) on_content_body(f.payload, body_left_ == 0);
        if (body_left_ == 0) content_ = Content::none;
        return;
    }
    default:  // heartbeats: we asked for none; ignore any
        return;
    }
}

void AmqpClient::send_start_ok(const m::ConnectionStart& start) {
    if (start.mechanisms.find("PLAIN") == std::string_view::npos) {
        fail("the broker does not offer PLAIN authentication");
        return;
    }
    amqp::FieldTable caps;
    caps.set("publisher_confirms", true);
    caps.set("basic.nack", true);
    caps.set("consumer_cancel_notify", true);
    caps.set("connection.blocked", true);
    caps.set("authentication_failure_close", true);  // a 403 close instead of a bare EOF
    m::ConnectionStartOk ok;
    ok.client_properties.set("product", "sluice-perf");
    ok.client_properties.set("connection_name", name_);
    ok.client_properties.set("capabilities", std::move(caps));
    std::string response;
    response.push_back('\0');
    response += addr_.user;
    response.push_back('\0');
    response += addr_.password;
    ok.mechanism = "PLAIN";
    ok.response = response;
    ok.locale = "en_US";
    amqp::write_method(out_, 0, ok);
}

void AmqpClient::handle_connection_method(std::string_view payload) {
    switch (amqp::peek_method_key(payload)) {
    case m::ConnectionStart::key: {
        m::ConnectionStart start;
        if (amqp::decode_arguments(payload.substr(4), start) != amqp::DecodeError::none) {
            fail("malformed connection.start");
            return;
        }
        send_start_ok(start);
        return;
    }
    case m::ConnectionTune::key: {
        m::ConnectionTune tune;
        if (amqp::decode_arguments(payload.substr(4), tune) != amqp::DecodeError::none) {
            fail("malformed connection.tune");
            return;
        }
        frame_max_ = tune.frame_max == 0 ? 131072 : std::min(tune.frame_max, kFrameMaxCap);
        amqp::write_method(out_, 0, m::ConnectionTuneOk{tune.channel_max, frame_max_, 0});
        m::ConnectionOpen open;
        open.virtual_host = addr_.vhost;
        amqp::write_method(out_, 0, open);
        return;
    }
    case m::ConnectionOpenOk::key:
        state_ = State::opening_channel;
        amqp::write_method(out_, 1, m::ChannelOpen{});
        return;
    case m::ConnectionClose::key: {
        m::ConnectionClose c;
        amqp::decode_arguments(payload.substr(4), c);
        amqp::write_method(out_, 0, m::ConnectionCloseOk{});
        if (state_ != State::closing) {
            ctl_.report_error(name_ + ": connection closed by the broker: " + std::to_string(c.reply_code) + " " +
                              std::string(c.reply_text));
            state_ = State::closing;
            close_timer_.expires_after(kCloseDeadline);
            close_timer_.async_wait([this](const error_code& ec) {
                if (!ec) finish();
            });
        }
        flush();  // the close-ok; the broker then closes the socket (EOF ends us)
        return;
    }
    case m::ConnectionCloseOk::key:
        finish();
        return;
    case m::ConnectionBlocked::key:
        std::cerr << "sluice-perf: " << name_ << ": the broker blocked publishing (connection.blocked)\n";
        return;
    case m::ConnectionUnblocked::key:
        return;
    case m::ConnectionSecure::key:
        fail("the broker asked for connection.secure (only PLAIN is supported)");
        return;
    default:
        return;
    }
}

void AmqpClient::handle_channel_method(std::string_view payload) {
    const uint32_t key = amqp::peek_method_key(payload);
    const std::string_view args = payload.substr(4);
    switch (key) {
    case m::BasicDeliver::key: {
        // Hot path: only the delivery tag is needed, which follows the
        // consumer tag (shortstr); no full decode.
        const size_t tag_len = args.empty() ? 0 : static_cast<uint8_t>(args[0]);
        if (args.size() < 1 + tag_len + 8 + 1) {
            fail("malformed basic.deliver");
            return;
        }
        content_ = Content::deliver;
        expect_header_ = true;
        on_deliver(load_be64(args.data() + 1 + tag_len));
        return;
    }
    case m::BasicAck::key: {
        m::BasicAck a;
        if (amqp::decode_arguments(args, a) == amqp::DecodeError::none) on_confirm(a.delivery_tag, a.multiple, false);
        return;
    }
    case m::BasicNack::key: {
        m::BasicNack a;
        if (amqp::decode_arguments(args, a) == amqp::DecodeError::none) on_confirm(a.delivery_tag, a.multiple, true);
        return;
    }
    case m::BasicReturn::key:
        stats_.returned.add();
        content_ = Content::skip;
        expect_header_ = true;
        return;
    case m::ChannelClose::key: {
        m::ChannelClose c;
        amqp::decode_arguments(args, c);
        amqp::write_method(out_, 1, m::ChannelCloseOk{});
        if (step_in_flight_ && !steps_.empty() && steps_.front().tolerate_error) {
            // e.g. deleting what does not exist on a strict broker: reopen, go on
            reopening_channel_ = true;
            amqp::write_method(out_, 1, m::ChannelOpen{});
            return;
        }
        fail("channel closed by the broker: " + std::to_string(c.reply_code) + " " + std::string(c.reply_text) +
             " (" + std::string(amqp::method_name(amqp::method_key(c.failing_class_id, c.failing_method_id))) +
             ")");
        return;
    }
    case m::ChannelOpenOk::key:
        if (reopening_channel_) {
            reopening_channel_ = false;
            step_in_flight_ = false;
            steps_.pop_front();
            run_steps();
        } else if (state_ == State::opening_channel) {
            state_ = State::setup;
            on_channel_open();
            run_steps();
        }
        return;
    case m::BasicCancel::key:
        fail("the broker cancelled a consumer (queue deleted?)");
        return;
    case m::ChannelFlow::key: {
        m::ChannelFlow f;
        amqp::decode_arguments(args, f);
        amqp::write_method(out_, 1, m::ChannelFlowOk{f.active});
        return;
    }
    case m::ChannelCloseOk::key:
        return;
    default:
        if (step_in_flight_ && !steps_.empty()) {
            Step step = std::move(steps_.front());
            steps_.pop_front();
            step_in_flight_ = false;
            if (step.on_reply) step.on_reply(payload);
            run_steps();
        }
        // otherwise a late synchronous reply (consume-ok, qos-ok): nothing to do
        return;
    }
}

void AmqpClient::run_steps() {
    if (step_in_flight_ || state_ >= State::closing) return;
    if (steps_.empty()) {
        if (state_ == State::setup) {
            state_ = State::running;
            on_setup_done();
        }
        return;
    }
    out_.append(steps_.front().frame);
    step_in_flight_ = true;
    flush();
}

}  // namespace sluice::perf
