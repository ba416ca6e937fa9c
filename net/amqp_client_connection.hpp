// An AMQP 0-9-1 client connection made by sluiced itself (a shovel's link to
// its source or destination broker, which may be this broker), with one
// channel (number 1).
//
// It connects, authenticates (PLAIN), negotiates frame size and heartbeats
// (sent every half interval; the link fails after two intervals of silence),
// opens channel 1, and from then on hands every channel method to its
// Observer, and each delivery assembled from basic.deliver, the content
// header and the body frames. A channel.close from the peer is answered with
// close-ok and reported like any channel method (the observer may open the
// channel again: open_channel()). A connection.close from the peer, a socket
// error or missed heartbeats end the connection: closed() is reported once.
//
// Lifetime: shared_ptr (Asio's handlers hold it). After close() — or after
// closed() was reported — the observer is not called again.
//
// Thread-safety: the io_context's thread only (the broker thread in sluiced).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "net/amqp/frame.hpp"
#include "net/amqp/methods.hpp"

namespace boost::asio {
class io_context;
}

namespace sluice::net {

struct ClientEndpoint {
    std::string host;  // name or address
    uint16_t port = 5672;
    std::string user, password, vhost;
    uint16_t heartbeat_s = 60;
    std::string connection_name;  // client_properties.connection_name
};

struct ClientDelivery {
    uint64_t delivery_tag = 0;
    bool redelivered = false;
    std::string exchange, routing_key;
    std::string properties;  // flags + property list, as received
    std::string body;
};

class AmqpClientConnection : public std::enable_shared_from_this<AmqpClientConnection> {
public:
    class Observer {
    public:
        virtual ~Observer() = default;
        // A method on channel 1 (channel.open-ok included); `args` follow
        // class-id and method-id and live only during the call.
        virtual void channel_method(uint32_t key, std::string_view args) = 0;
        virtual void delivery(ClientDelivery&& d) = 0;
        virtual void closed(const std::string& reason) = 0;
        // connection.blocked (a resource alarm at the broker: it stops
        // reading from publishers) and connection.unblocked.
        virtual void blocked(bool /*on*/, std::string_view /*reason*/) {}
    };

    static std::shared_ptr<AmqpClientConnection> create(boost::asio::io_context& io, ClientEndpoint endpoint,
                                                        Observer& observer);
    ~AmqpClientConnection();

    void start();
    // connection.close, then the socket closes (at close-ok, or 2 s later).
    // Quiet: nothing is reported after this.
    void close();
    void open_channel();

    // Appends a method on channel 1 (sent at the end of the current turn).
    template <typename M>
    void send(const M& m) {
        amqp::write_method(output(), 1, m);
        schedule_flush();
    }
    // basic.publish with its content (split into body frames of the
    // negotiated size).
    void publish(std::string_view exchange, std::string_view routing_key, std::string_view properties,
                 std::string_view body);
    // Bytes queued but not yet written to the socket.
    size_t pending_output() const;

    struct Impl;

private:
    explicit AmqpClientConnection(std::unique_ptr<Impl> impl);
    std::string& output();
    void schedule_flush();
    std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::net
