#include "net/amqp_connection.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <utility>

#include "broker/broker.hpp"
#include "net/tls_context.hpp"

namespace sluice::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kInitialReadBuffer = 4096;
constexpr size_t kMaxReadChunk = 256 * 1024;
constexpr auto kLingerTime = std::chrono::seconds(2);

broker::ConnectionInfo describe(const tcp::socket& s) {
    broker::ConnectionInfo info;
    boost::system::error_code ec;
    auto ep = s.remote_endpoint(ec);
    if (ec) return info;
    auto addr = ep.address();
    if (addr.is_v6() && addr.to_v6().is_v4_mapped())
        addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
    info.loopback = addr.is_loopback();
    info.peer = (addr.is_v6() ? "[" + addr.to_string() + "]" : addr.to_string()) + ":" + std::to_string(ep.port());
    return info;
}

}  // namespace

struct AmqpConnection::TlsStream {
    TlsStream(tcp::socket& socket, asio::ssl::context& context) : stream(socket, context) {}
    asio::ssl::stream<tcp::socket&> stream;
};

AmqpConnection::AmqpConnection(tcp::socket socket, broker::Broker& broker, std::function<void()> on_closed,
                               std::chrono::milliseconds handshake_timeout, TlsContext* tls)
    : socket_(std::move(socket)),
      broker_(broker),
      tls_context_(tls),
      timer_(socket_.get_executor()),
      on_closed_(std::move(on_closed)),
      linger_time_(kLingerTime),
      handshake_timer_(socket_.get_executor()),
      handshake_timeout_(handshake_timeout) {
    boost::system::error_code ec;
    socket_.set_option(tcp::no_delay(true), ec);
    if (tls_context_) tls_ = std::make_unique<TlsStream>(socket_, tls_context_->context());
}

AmqpConnection::~AmqpConnection() = default;

template <class Fn>
void AmqpConnection::with_stream(Fn&& fn) {
    if (tls_) fn(tls_->stream);
    else fn(socket_);
}

void AmqpConnection::start() {
    // Alive until the socket closes, even while nothing is pending on it (a
    // publisher paused by an alarm, with heartbeats off, has no read, write
    // or timer outstanding to keep it).
    self_ = shared_from_this();
    // A client that connects and then stalls anywhere before connection.open
    // (or never sends a byte) must not hold its socket for ever.
    handshake_timer_.expires_after(handshake_timeout_);
    handshake_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (!e && !self->closed_ && !(self->session_ && self->session_->running()) && !self->lingering_)
            self->fail();
    });
    if (!tls_) {
        begin_session();
        return;
    }
    tls_->stream.async_handshake(asio::ssl::stream_base::server,
                                 [self = shared_from_this()](const boost::system::error_code& ec) {
                                     self->on_tls_handshake(ec);
                                 });
}

void AmqpConnection::on_tls_handshake(const boost::system::error_code& ec) {
    if (closed_) return;
    if (ec) {  // no certificate, a bad one, an old protocol version, not TLS at all
        fail();
        return;
    }
    begin_session();
}

void AmqpConnection::begin_session() {
    broker::ConnectionInfo info = describe(socket_);
    if (tls_) {
        info.tls = true;
        info.tls_protocol = TlsContext::protocol(tls_->stream.native_handle());
        info.cert_user = tls_context_->peer_user(tls_->stream.native_handle());
    }
    session_ = std::make_unique<broker::Session>(broker_, *this, std::move(info));
    last_read_ = last_write_ = clock::now();
    do_read();
}

bool AmqpConnection::read_paused() const {
    // Stop reading while this socket's own output is far behind, or while an
    // alarm blocks this publisher. The limit is the session's own
    // (Session::output_over_limit): when the session stops parsing, the
    // socket must stop being read too, or unparsed input piles up in in_
    // instead (mandatory publishes that come back as basic.return do that).
    return session_->reading_paused() ||
           session_->output().size() + writing_.size() >= 4 * broker_.config().output_high_watermark;
}

void AmqpConnection::resume_reading() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
        if (self->closed_ || self->lingering_ || self->session_->reading_paused()) return;
        // Frames that arrived while paused are still buffered: handle them first.
        if (self->in_end_ > self->in_start_) {
            size_t used = self->session_->on_bytes(
                std::string_view(self->in_.data() + self->in_start_, self->in_end_ - self->in_start_));
            self->in_start_ += used;
            if (self->on_opened_) self->note_opened();
            self->do_flush();
        }
        self->do_read();
    });
}

void AmqpConnection::do_read() {
    // While lingering, read whatever arrives (and drop it) even if the session
    // had paused reading: closing a socket with unread input sends RST, and
    // the peer's kernel then drops our close / close-ok before it is read.
    if (reading_ || closed_ || peer_eof_ || (!lingering_ && read_paused())) return;
    // Compact, then make room: the buffer grows for big frames and bursts.
    if (in_start_ == in_end_) {
        in_start_ = in_end_ = 0;
    } else if (in_start_ > 0 && in_start_ >= in_.size() / 2) {
        in_.erase(0, in_start_);
        in_end_ -= in_start_;
        in_start_ = 0;
    }
    if (in_.size() < kInitialReadBuffer) in_.resize(kInitialReadBuffer);
    if (in_end_ == in_.size()) in_.resize(std::min(in_.size() * 2, in_.size() + kMaxReadChunk));
    reading_ = true;
    with_stream([&](auto& stream) {
        stream.async_read_some(asio::buffer(in_.data() + in_end_, in_.size() - in_end_),
                               [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
                                   self->on_read(ec, n);
                               });
    });
}

void AmqpConnection::on_read(const boost::system::error_code& ec, size_t n) {
    reading_ = false;
    if (closed_) return;
    if (ec) {
        if (ec == asio::error::eof && close_after_flush_ && !lingering_) {
            // The peer sent connection.close (or more) and half-closed: our
            // close-ok is still to go out. Close once it has (linger).
            peer_eof_ = true;
            do_flush();
            return;
        }
        fail();
        return;
    }
    last_read_ = clock::now();
    if (lingering_) {  // closing: discard until the peer closes too
        in_start_ = in_end_ = 0;
        do_read();
        return;
    }
    in_end_ += n;
    size_t used = session_->on_bytes(std::string_view(in_.data() + in_start_, in_end_ - in_start_));
    in_start_ += used;
    if (on_opened_) note_opened();
    do_flush();
    do_read();
}

void AmqpConnection::note_opened() {
    if (session_ && session_->running()) std::exchange(on_opened_, nullptr)();
}

void AmqpConnection::request_flush() {
    if (flush_posted_ || closed_) return;
    flush_posted_ = true;
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
        self->flush_posted_ = false;
        self->do_flush();
    });
}

void AmqpConnection::do_flush() {
    if (writing_now_ || closed_) return;
    std::string& out = session_->output();
    if (out.empty()) {
        // Nothing more to write: big buffers go back now. While the
        // connection keeps writing, the two buffers keep their capacity and
        // trade places at each write; freeing one after every write made
        // the next turn's output grow again from nothing, copying
        // everything it had appended at each doubling (8 % of the
        // instructions of a fanout whose consumers lag).
        if (writing_.capacity() > kMaxReadChunk) std::string().swap(writing_);
        if (out.capacity() > kMaxReadChunk) std::string().swap(out);
        if (close_after_flush_ && !lingering_) linger();
        return;
    }
    writing_.swap(out);
    out.clear();
    writing_now_ = true;
    with_stream([&](auto& stream) {
        asio::async_write(stream, asio::buffer(writing_),
                          [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                              self->on_write(ec);
                          });
    });
}

void AmqpConnection::on_write(const boost::system::error_code& ec) {
    writing_now_ = false;
    if (closed_) return;
    if (ec) {
        fail();
        return;
    }
    last_write_ = clock::now();
    broker_.stats().bytes_out += writing_.size();
    writing_.clear();  // its capacity stays for the next write (do_flush frees it once idle)
    session_->on_writable();  // consumers paused on a full buffer may go on
    // The session may have stopped parsing when its output was over the
    // limit: what it left in the buffer is handled now, not when the next
    // bytes happen to arrive.
    if (in_end_ > in_start_ && !lingering_ && !session_->reading_paused() && !session_->output_over_limit()) {
        in_start_ += session_->on_bytes(std::string_view(in_.data() + in_start_, in_end_ - in_start_));
        if (on_opened_) note_opened();
    }
    do_flush();
    do_read();  // reads may have paused on back-pressure
}

void AmqpConnection::close_transport() {
    close_after_flush_ = true;
    request_flush();
}

void AmqpConnection::linger() {
    // Our last frame (connection.close or close-ok) is written: half-close,
    // and read until the peer closes or the linger time runs out, so the peer
    // reads that frame instead of a reset. (Over TLS a TCP half-close would
    // look like a truncation attack to the peer: only read.)
    lingering_ = true;
    boost::system::error_code ec;
    if (!tls_) socket_.shutdown(tcp::socket::shutdown_send, ec);
    if (peer_eof_) {  // nothing more to read: every byte we wrote goes before the FIN
        fail();
        return;
    }
    heartbeat_ = 0;
    timer_.expires_after(linger_time_);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (!e) self->fail();
    });
    in_start_ = in_end_ = 0;
    do_read();
}

void AmqpConnection::start_heartbeat(uint16_t seconds) {
    heartbeat_ = seconds;
    if (seconds == 0 || lingering_) return;
    // Check twice per interval, as RabbitMQ does, so a heartbeat goes out
    // well before the peer's deadline.
    timer_.expires_after(std::chrono::milliseconds(500) * seconds);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (!e) self->on_heartbeat_timer();
    });
}

void AmqpConnection::on_heartbeat_timer() {
    if (closed_ || lingering_ || heartbeat_ == 0) return;
    auto now = clock::now();
    auto interval = std::chrono::seconds(heartbeat_);
    if (read_paused()) last_read_ = now;  // we are not reading: silence is ours, not the peer's
    if (now - last_read_ > 2 * interval) {  // missed heartbeats: the peer is gone
        fail();
        return;
    }
    if (now - last_write_ >= interval) session_->on_heartbeat_due();
    start_heartbeat(heartbeat_);
}

void AmqpConnection::fail() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ec;
    timer_.cancel();
    handshake_timer_.cancel();
    socket_.close(ec);
    if (session_) session_->on_transport_closed();
    if (on_closed_) std::exchange(on_closed_, nullptr)();
    // Released last: pending handlers still hold their own references.
    asio::post(socket_.get_executor(), [self = std::move(self_)] {});
}

void AmqpConnection::close_for_shutdown(std::chrono::steady_clock::duration wait) {
    if (closed_) return;
    if (!session_) {  // still in the TLS handshake: nothing to say yet
        fail();
        return;
    }
    linger_time_ = wait;
    if (lingering_) {  // already closing: give it the shutdown's time too
        timer_.expires_after(wait);
        timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
            if (!e) self->fail();
        });
        return;
    }
    // Nothing more from the peer is handled (it may still send close-ok).
    session_->connection_error(broker::amqp_error(broker::reply::connection_forced, "broker shutdown"));
    close_transport();  // also when the session was already closing
}

void AmqpConnection::abort() { fail(); }

}  // namespace sluice::net
