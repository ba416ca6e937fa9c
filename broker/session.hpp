// One AMQP connection's protocol state, sans-IO: bytes in (on_bytes), bytes
// out (output()), and a small host interface through which it asks net/ to
// flush, to close the socket and to run the heartbeat timer. A unit test
// drives a whole conversation with no socket and no thread.
//
// The session owns its channels; it parses frames (net/amqp codec), performs
// the connection handshake (start/tune/open), routes channel frames to
// Channel, and turns protocol errors into channel.close / connection.close
// with the spec's reply codes.
//
// Thread-safety: one session, one thread (the broker thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "broker/access_control.hpp"
#include "broker/amqp_error.hpp"
#include "net/amqp/field_table.hpp"

namespace sluice::broker {

class Broker;
class Channel;
class Queue;
class VHost;

// Implemented by net/ (one per socket), or by a test.
class SessionHost {
public:
    virtual ~SessionHost() = default;
    // output() has bytes: write them at the end of the current turn.
    virtual void request_flush() = 0;
    // Write what output() holds, then close the socket (lingering: input is
    // read and discarded for a short while so the peer sees our last frame).
    virtual void close_transport() = 0;
    // Negotiated heartbeat interval (0 = off): send a heartbeat when nothing
    // was written for `seconds`, and close when nothing was read for 2×.
    virtual void start_heartbeat(uint16_t seconds) = 0;
    // Session::reading_paused() turned false: parse what is buffered, read on.
    virtual void resume_reading() = 0;
};

struct ConnectionInfo {
    std::string peer;        // "127.0.0.1:54321"
    bool loopback = false;   // peer address is loopback (guest's rule)
    bool tls = false;        // over TLS (AMQPS)
    std::string tls_protocol;  // "TLSv1.3"
    // The user a verified client certificate names (net/ derives it from the
    // subject), or "". When set, EXTERNAL is offered and logs in as this user.
    std::string cert_user;
};

class Session {
public:
    Session(Broker& broker, SessionHost& host, ConnectionInfo info);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Handles every complete frame in `data`; returns the bytes consumed (the
    // caller keeps the rest for the next read).
    size_t on_bytes(std::string_view data);
    // Bytes waiting for the socket; net/ takes them (swap) when it writes.
    std::string& output() { return out_; }
    // Called by net/ when nothing was written for the heartbeat interval.
    void on_heartbeat_due();
    // The socket is gone (peer closed, error, missed heartbeats): channels
    // close, unacked messages are requeued, exclusive queues deleted.
    void on_transport_closed();
    // net/ drained the output below the watermark: consumers may resume.
    void on_writable();

    // Consumers on this connection pause while its output is this full.
    bool output_full() const;
    // Past this (4 × output_high_watermark) the session stops parsing what
    // the client sent until the socket takes the output: whatever the client
    // pipelines (basic.get + reject loops, mandatory publishes that come
    // back as basic.return, channel opens), its own output, not broker
    // memory, is what it fills. Deliveries from elsewhere (direct reply-to)
    // are refused past it.
    bool output_over_limit() const;
    // A resource alarm blocks publishers: net/ stops reading from a session
    // that published while the alarm is on (consumers go on draining). So
    // does a store that is behind (flow control), until it catches up.
    bool reading_paused() const { return flow_paused() || read_wait_; }
    // Paused by a resource alarm or a store that fell behind ("blocked").
    bool flow_paused() const { return (blocked_ && published_) || store_paused_; }
    // A channel's basic.get waits for its queue's head to be read from disk:
    // nothing after it is parsed until read_done() (frames stay in order,
    // and the broker thread does not wait).
    void wait_for_read() { read_wait_ = true; }
    void read_done();
    // What a channel's method handler returned: a hard error closes the
    // connection, another the channel.
    void report(uint16_t channel, const AmqpError& error);
    // The store caught up with its backlog: read on (Broker).
    void on_store_caught_up();
    // The broker's alarm state changed (connection.blocked / unblocked).
    void on_alarm(bool active, const std::string& reason);
    bool closed() const { return state_ == State::closed; }
    // Past connection.open (the handshake is done).
    bool running() const { return state_ == State::running; }
    // Once a second (Broker::tick): a channel whose oldest unacked delivery
    // is older than timeout_ms is closed with 406 (delivery_timeout.cpp).
    void check_delivery_timeouts(uint32_t now_s, uint32_t timeout_ms);

    // --- used by Channel -------------------------------------------------
    Broker& broker() { return broker_; }
    uint64_t id() const { return id_; }
    uint32_t frame_max() const { return frame_max_; }
    const std::string& user() const { return user_; }
    // The vhost of connection.open (null before it, and once it is deleted).
    VHost* vhost() const { return vhost_; }
    // This user's permissions in that vhost (null: none).
    PermissionView& permissions() { return permissions_; }
    // The vhost is being deleted: connection.close 320, and forget it.
    void close_for_deleted_vhost(const std::string& reason);
    const ConnectionInfo& info() const { return info_; }
    // --- introspection (management API) -----------------------------------
    const amqp::FieldTable& client_properties() const { return client_properties_; }
    uint16_t channel_max() const { return channel_max_; }
    uint16_t heartbeat() const { return heartbeat_; }
    // Indexed by channel id; null where no channel is open.
    const std::vector<std::unique_ptr<Channel>>& channels() const { return channels_; }
    bool client_has_capability(std::string_view name) const;
    void wrote_output();  // a channel appended to output(): make sure it gets flushed
    // An exclusive queue this connection declared (deleted when it closes).
    void own_exclusive_queue(const std::shared_ptr<Queue>& queue);
    // Raise a connection-level error (hard reply code): connection.close.
    void connection_error(const AmqpError& error);
    // A channel with confirms to send at the end of this batch.
    void mark_confirm_pending(Channel* channel);
    // A basic.publish arrived: under an alarm, or with the store behind,
    // stop reading after this frame.
    void note_publish();

private:
    enum class State { protocol_header, start_ok, secure_ok, tune_ok, open, running, closing, closed };

    void send_start();
    void handle_frame(uint8_t type, uint16_t channel, std::string_view payload);
    void handle_connection_method(std::string_view payload);
    Status handle_start_ok(std::string_view payload);
    Status handle_tune_ok(std::string_view payload);
    Status handle_open(std::string_view payload);
    Channel* find_channel(uint16_t id) const;
    void open_channel(uint16_t id);
    void remove_channel(uint16_t id);
    void flush_confirms();
    void teardown();
    // This connection stops counting against max_connections.
    void release_connection_slot();

    Broker& broker_;
    SessionHost& host_;
    ConnectionInfo info_;
    uint64_t id_;
    State state_ = State::protocol_header;
    std::string out_;
    bool flush_requested_ = false;
    bool in_batch_ = false;

    bool blocked_ = false;     // an alarm is on
    bool published_ = false;   // this connection has published
    bool blocked_sent_ = false;
    bool holds_connection_slot_ = false;
    bool read_wait_ = false;     // a basic.get waits for a read (wait_for_read)
    bool tearing_down_ = false;  // teardown() has begun
    bool store_paused_ = false;  // waiting for the store to catch up  // counted in Broker::open_connection_count()

    uint16_t channel_max_;
    uint32_t frame_max_;
    uint16_t heartbeat_ = 0;
    std::string user_;
    VHost* vhost_ = nullptr;
    PermissionView permissions_;
    amqp::FieldTable client_properties_;

    std::vector<std::unique_ptr<Channel>> channels_;  // indexed by channel id
    std::vector<Channel*> confirm_pending_;
    std::vector<std::weak_ptr<Queue>> exclusive_queues_;
    size_t exclusive_prune_at_ = 16;  // exclusive_queues_ drops expired entries at this size
};

}  // namespace sluice::broker
