// sluice-perf's settings: what to run (producers, consumers, queues, message
// shape, mode) and where (the broker's address). Parsed from the command line
// with long option names modelled on RabbitMQ's PerfTest.
//
// Thread-safety: plain value type, filled once before any thread starts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sluice::perf {

enum class ExchangeType { direct, fanout, topic };

struct BrokerAddress {
    std::string host = "127.0.0.1";
    uint16_t port = 5672;
    std::string user = "guest";
    std::string password = "guest";
    std::string vhost = "/";
};

struct PerfOptions {
    BrokerAddress broker;

    int producers = 1;
    int consumers = 1;
    int queues = 1;
    std::string queue_pattern = "perf-%d";
    uint32_t size = 16;           // message body bytes (>= kBodyStampSize)
    double time_s = 0;            // 0 = not time-bound
    uint64_t pmessages = 0;       // per producer; 0 = unlimited
    double rate = 0;              // msg/s per producer; 0 = unlimited
    double consumer_rate = 0;     // msg/s per consumer; 0 = unlimited
    uint32_t confirm = 0;         // outstanding-confirm window; 0 = no confirms
    bool persistent = false;
    uint16_t prefetch = 0;
    bool autoack = false;
    uint32_t multi_ack_every = 0; // 0/1: ack each delivery; N: multiple=true every N
    std::string exchange = "sluice-perf";
    ExchangeType exchange_type = ExchangeType::direct;
    std::optional<std::string> routing_key;
    bool rpc = false;
    bool rpc_direct = false;
    bool rpc_queue_per_call = false;
    uint64_t backlog = 0;         // 0 = off
    // Streams (x-queue-type stream, durable): every consumer reads every
    // queue from stream_offset ("first", "last", "next" or a number).
    bool stream = false;
    std::string stream_offset = "first";
    double consumer_delay_s = 0;  // consumers start this long after the producers (the queue grows meanwhile)
    int threads = 1;
    bool json = false;
    bool quiet = false;
    int broker_pid = 0;
    bool cleanup = true;          // delete the queues and exchange at the end
    uint64_t dedup_keys = 0;      // >0: each message carries x-deduplication-header, sequence mod this (per producer)
    uint64_t dedup_cache = 0;     // >0: the exchange is declared with x-message-deduplication, x-cache-size this

    // Derived: queue names (pattern applied to 1..queues).
    std::vector<std::string> queue_names() const;
    // How many queues one published message lands in.
    int deliveries_per_message() const;
    const char* exchange_type_name() const;
};

// Parses argv. Returns the options, or nullopt after printing help (exit 0)
// or an error (exit 2) — `exit_code` says which.
std::optional<PerfOptions> parse_options(int argc, char** argv, int& exit_code);

// amqp://user:pass@host:port/vhost (vhost percent-decoded; "" or "/" = "/").
// Returns false on a malformed URI.
bool parse_amqp_uri(const std::string& uri, BrokerAddress& out, std::string& error);

}  // namespace sluice::perf
