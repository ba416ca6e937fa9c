// What the management API shows of the AMQP connections, their channels and
// their consumers: plain values copied out of Session, Channel and Consumer
// on the broker thread, so that net/ reads these instead of the classes'
// internals (STYLE.md: Dragonfly's facade). Safe to keep; they do not change
// when the connection does.
//
// Thread-safety: fill them on the broker thread only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "net/amqp/field_table.hpp"

namespace sluice::broker {

class Broker;

// One AMQP connection. Its name is the peer's "host:port" (RabbitMQ's
// connection names start with it; the API looks connections up by it).
struct ConnectionSummary {
    uint64_t id = 0;
    std::string name;
    std::string vhost;               // "" before connection.open
    std::string user;                // "" before the login
    std::string_view state;          // "starting", "running", "blocked" (not read: an alarm or flow control), "closed"
    size_t channels = 0;             // open ones
    bool tls = false;
    std::string tls_protocol;        // "TLSv1.3" when tls
    uint32_t frame_max = 0;
    uint16_t channel_max = 0;
    uint16_t heartbeat = 0;          // seconds; 0 = off
    amqp::FieldTable client_properties;
};

struct ChannelSummary {
    std::string connection;          // its connection's name
    uint16_t number = 0;
    std::string vhost;
    std::string user;
    size_t consumers = 0;
    size_t unacked = 0;
    uint32_t prefetch_count = 0;         // per consumer (basic.qos global=false)
    uint32_t global_prefetch_count = 0;  // per channel (global=true)
    bool confirm = false;
    bool transactional = false;
    bool closing = false;                // channel.close sent, close-ok awaited
};

struct ConsumerSummary {
    std::string tag;
    std::string vhost;               // its channel's
    bool on_channel = false;         // the three below are set
    std::string connection;
    uint16_t channel = 0;
    std::string user;
    bool on_queue = false;           // the two below are set
    std::string queue;
    std::string queue_vhost;
    bool ack_required = true;
    bool exclusive = false;
    uint32_t prefetch = 0;
    int64_t priority = 0;
    amqp::FieldTable arguments;
    // false for a consumer waiting behind a single active consumer.
    bool active = true;
};

// RabbitMQ's channel name: "<connection name> (<number>)".
std::string channel_name(std::string_view connection, uint16_t number);

// Every connection, in the order they were accepted.
std::vector<ConnectionSummary> list_connections(const Broker& broker);
// The connection named `name`; false if there is none.
bool find_connection(const Broker& broker, std::string_view name, ConnectionSummary& out);
// Connection id → name, for showing who owns an exclusive queue.
std::unordered_map<uint64_t, std::string> connection_names(const Broker& broker);
// The open channels of every connection, or of the one named `connection`.
std::vector<ChannelSummary> list_channels(const Broker& broker, std::string_view connection = {});
// Every consumer of every channel.
std::vector<ConsumerSummary> list_consumers(const Broker& broker);

}  // namespace sluice::broker
