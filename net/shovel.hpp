// One dynamic shovel at work: an AMQP 0-9-1 client link to its source and one
// to its destination (either may be this broker, over loopback), moving
// messages from the source queue to the destination as RabbitMQ's shovel
// does:
//
//   - the source queue is declared if missing (durable, or with
//     src-queue-args); with src-exchange, an exclusive server-named queue is
//     bound to it with src-exchange-key;
//   - the destination queue likewise; a dest-exchange must exist;
//   - consume with basic.qos(prefetch-count); publish each delivery with its
//     properties and headers (plus x-shovelled with add-forward-headers);
//   - ack-mode on-confirm (default): the destination is in confirm mode and
//     a source delivery is acked only once the destination confirmed it, so
//     a crash or restart of either side, or of sluiced, loses nothing (what
//     was published but not yet acked comes again: at least once);
//     on-publish acks once published; no-ack consumes without acks;
//   - src-delete-after: after the initial queue length (or N) messages the
//     shovel completes and its parameter is cleared, as RabbitMQ's does;
//   - a failure of either link ends both (the source requeues what was in
//     flight); the shovel is "terminated" with the reason and starts again
//     after reconnect-delay seconds (never, if 0);
//   - a destination that blocks publishers (connection.blocked: a resource
//     alarm there) shows as blocked_status "blocked" until it unblocks.
// Each change of state, and of blocked_status, is a line on stderr.
//
// Lifetime: shared_ptr (timers hold it); stop() before letting it go.
// Thread-safety: the io_context's thread (the broker thread).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "net/amqp_client_connection.hpp"
#include "net/shovel_definition.hpp"

namespace sluice::net {

// What GET /api/shovels shows of one shovel (RabbitMQ's status fields).
struct ShovelStatus {
    std::string vhost, name;
    std::string state = "starting";  // starting, running, terminated
    std::string reason;              // terminated: why
    std::string timestamp;           // of the last change of state, "YYYY-MM-DD HH:MM:SS" (local time)
    std::string blocked_status = "running";  // running; blocked: the destination sent connection.blocked
    std::string src_uri, dest_uri;   // the URIs in use (without passwords)
    const ShovelDefinition* definition = nullptr;  // null: the value did not parse
    uint64_t forwarded = 0;          // messages published to the destination since the shovel started
};

// How the shovel reaches "this broker" (a URI with no host).
struct LocalBroker {
    std::string host = "127.0.0.1";
    uint16_t port = 0;
    std::string default_user, default_password;
    std::string node;  // "sluice@host" (x-shovelled's shovelled-by)
};

class Shovel : public std::enable_shared_from_this<Shovel> {
public:
    // `on_complete` runs (posted, not inside a call of this class) when a
    // src-delete-after limit is reached and everything is acked.
    Shovel(boost::asio::io_context& io, const LocalBroker& local, std::string vhost, std::string name,
           ShovelDefinition definition, std::function<void()> on_complete);
    ~Shovel();

    void start();
    // Closes both links (gracefully); nothing happens after it.
    void stop();
    // Drops both links and starts again now (DELETE /api/shovels/…/restart).
    void restart();
    const ShovelStatus& status() const { return status_; }

    struct Link;  // one side's connection and setup steps

private:
    void set_state(std::string state, std::string reason = {});
    void log(std::string_view what) const;  // a line on stderr, naming the shovel
    void connect();
    void link_ready();
    void link_failed(const std::string& reason);
    void link_blocked(bool on, std::string_view reason);
    void forward(ClientDelivery&& d);
    void settle(uint64_t seq, bool multiple, bool nack);
    void ack_source(std::vector<uint64_t>& tags);
    void check_complete();
    std::string publish_properties(const std::string& raw) const;

    boost::asio::io_context& io_;
    LocalBroker local_;
    ShovelDefinition def_;
    ShovelStatus status_;
    std::function<void()> on_complete_;
    std::unique_ptr<Link> src_, dest_;
    struct Timer;
    std::unique_ptr<Timer> retry_;
    size_t attempt_ = 0;       // rotates over the URIs
    bool stopped_ = false, consuming_ = false, completing_ = false;
    uint64_t publish_seq_ = 0;  // destination confirm sequence
    std::map<uint64_t, uint64_t> in_flight_;  // destination seq → source delivery tag (on-confirm)
    bool limited_ = false;      // src-delete-after: at most `remaining_` more
    uint64_t remaining_ = 0;
    bool limit_known_ = false;  // queue-length: the initial length has been read
};

}  // namespace sluice::net
