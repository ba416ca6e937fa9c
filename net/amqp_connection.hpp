// One AMQP socket: reads into a buffer, feeds the bytes to its broker Session,
// and writes what the session produced — all output of one turn of the event
// loop in one write. Private to net/.
//
// Plain TCP or TLS (AMQPS): with a TlsContext the connection first runs the
// TLS handshake (within the handshake timeout), then the same pump reads and
// writes through the TLS stream; the session learns the peer's certificate
// identity through ConnectionInfo.
//
// Back-pressure: while the bytes waiting for this socket exceed a limit, the
// connection stops reading (a publisher that does not read its own socket
// cannot make the broker buffer without bound), and the session's consumers
// pause (Session::output_full()).
//
// Thread-safety: lives on the server's io_context thread.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "broker/session.hpp"

namespace sluice::net {

class TlsContext;

class AmqpConnection : public std::enable_shared_from_this<AmqpConnection>, public broker::SessionHost {
public:
    // `on_closed` runs once, when the socket closes (the server counts open
    // connections with it). A connection not past connection.open after
    // handshake_timeout (TLS handshake included) is closed. With `tls`, the
    // connection speaks TLS (the context outlives it).
    AmqpConnection(boost::asio::ip::tcp::socket socket, broker::Broker& broker, std::function<void()> on_closed,
                   std::chrono::milliseconds handshake_timeout, TlsContext* tls = nullptr);
    ~AmqpConnection() override;

    void start();
    // Runs once when the session reaches connection.open (not when it closes
    // before that).
    void on_opened(std::function<void()> fn) { on_opened_ = std::move(fn); }
    // Broker shutdown: send connection.close 320 CONNECTION_FORCED and wait
    // up to `wait` for the peer's close-ok or its closing the socket.
    void close_for_shutdown(std::chrono::steady_clock::duration wait);
    // Close the socket now.
    void abort();

    // broker::SessionHost
    void request_flush() override;
    void close_transport() override;
    void start_heartbeat(uint16_t seconds) override;
    void resume_reading() override;

private:
    struct TlsStream;  // asio::ssl::stream over socket_ (amqp_connection.cpp)

    // Runs fn(stream) on the TLS stream or the plain socket.
    template <class Fn>
    void with_stream(Fn&& fn);
    void on_tls_handshake(const boost::system::error_code& ec);
    void begin_session();
    void do_read();
    void on_read(const boost::system::error_code& ec, size_t n);
    void do_flush();
    void on_write(const boost::system::error_code& ec);
    void linger();
    void on_heartbeat_timer();
    void fail();
    bool read_paused() const;

    using clock = std::chrono::steady_clock;

    std::shared_ptr<AmqpConnection> self_;  // set from start() until the socket closes
    boost::asio::ip::tcp::socket socket_;
    broker::Broker& broker_;
    TlsContext* tls_context_;
    std::unique_ptr<TlsStream> tls_;
    std::unique_ptr<broker::Session> session_;  // from the end of the TLS handshake on
    boost::asio::steady_timer timer_;
    std::function<void()> on_closed_;
    std::function<void()> on_opened_;
    void note_opened();
    std::chrono::steady_clock::duration linger_time_;
    boost::asio::steady_timer handshake_timer_;
    std::chrono::milliseconds handshake_timeout_;

    std::string in_;      // read buffer: [in_start_, in_end_) holds unparsed bytes
    size_t in_start_ = 0;
    size_t in_end_ = 0;
    std::string writing_;  // bytes handed to the in-flight async_write

    bool reading_ = false;
    bool writing_now_ = false;
    bool flush_posted_ = false;
    bool close_after_flush_ = false;
    bool lingering_ = false;
    bool peer_eof_ = false;  // the peer half-closed while our close was still going out
    bool closed_ = false;
    uint16_t heartbeat_ = 0;
    clock::time_point last_read_;
    clock::time_point last_write_;
};

}  // namespace sluice::net
