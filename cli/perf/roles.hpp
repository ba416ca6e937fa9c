// The roles a sluice-perf connection plays:
//   Producer      publishes stamped messages as fast as allowed (rate limit,
//                 confirm window, message count), in batches of frames;
//   Consumer      consumes one or more queues, records end-to-end latency, acks;
//   RpcServer     consumes requests and publishes each reply to its reply_to
//                 with the request's correlation_id (body echoed);
//   RpcClient     sends a request, waits for its reply, records the round trip;
//   TopologySetup declares (or deletes) the exchange, queues and bindings.
//
// Thread-safety: as AmqpClient — each object is used only on its io_context's thread.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <string>
#include <vector>

#include "cli/perf/amqp_client.hpp"

namespace sluice::perf {

// One pre-encoded basic.publish + content header + body frames, with the
// offsets a sender patches per message.
struct PublishTemplate {
    std::string bytes;
    size_t stamp_offset = 0;           // first body byte (kBodyStampSize bytes)
    size_t correlation_offset = 0;     // RPC: the correlation-id's bytes; 0 = none
    size_t dedup_offset = 0;           // the x-deduplication-header value's bytes; 0 = none
    static constexpr size_t kCorrelationIdSize = 16;
    static constexpr size_t kDedupKeySize = 16;

    void build(uint32_t frame_max, std::string_view exchange, std::string_view routing_key, uint32_t body_size,
               bool persistent, std::string_view reply_to = {}, bool dedup_header = false);
};

class Producer : public AmqpClient {
public:
    // `limit`: messages to publish, 0 = until RunControl::stop.
    Producer(asio::io_context& ioc, const BrokerAddress& addr, asio::ip::tcp::endpoint ep, ThreadStats& stats,
             RunControl& ctl, const PerfOptions& o, uint32_t id, std::string exchange, std::string routing_key,
             uint64_t limit);
    void start() override;

protected:
    void on_channel_open() override;
    void on_setup_done() override;
    void on_confirm(uint64_t tag, bool multiple, bool nack) override;
    void on_written() override { pump(); }

private:
    void pump();
    void fill();
    void check_finished();
    void arm_rate_timer(uint64_t due_ns);

    const PerfOptions& o_;
    uint32_t id_;
    std::string exchange_, routing_key_;
    uint64_t limit_;
    PublishTemplate tmpl_;
    bool running_ = false;
    bool finished_ = false;
    uint64_t start_ns_ = 0;
    uint64_t published_ = 0;

    // confirms: tags are 1-based in publish order; all tags < confirmed_below_ are settled
    uint64_t next_tag_ = 1;
    uint64_t confirmed_below_ = 1;
    std::vector<uint8_t> settled_;  // ring of out-of-order settled tags
    uint64_t ring_mask_ = 0;

    asio::steady_timer rate_timer_;
    bool rate_timer_armed_ = false;
};

class Consumer : public AmqpClient {
public:
    Consumer(asio::io_context& ioc, const BrokerAddress& addr, asio::ip::tcp::endpoint ep, ThreadStats& stats,
             RunControl& ctl, const PerfOptions& o, std::string name, std::vector<std::string> queues);
    void start() override;  // basic.consume on every queue

protected:
    void on_channel_open() override;
    void on_deliver(uint64_t delivery_tag) override;
    void on_content_body(std::string_view chunk, bool complete) override;
    void on_reads_handled() override;
    uint64_t read_hold_until_ns() const override;  // --consumer-rate
    void ack_delivered();

    const PerfOptions& o_;
    std::vector<std::string> queues_;
    uint64_t start_ns_ = 0;   // when start() ran
    uint64_t consumed_ = 0;   // deliveries so far (for --consumer-rate)
    uint64_t tag_ = 0;
    uint32_t unacked_ = 0;
    bool first_chunk_ = false;
    uint64_t stamp_ns_ = 0;
    bool received_any_ = false;
};

class RpcServer : public Consumer {
public:
    using Consumer::Consumer;

protected:
    void on_content_header(uint64_t body_size, std::string_view raw_properties) override;
    void on_content_body(std::string_view chunk, bool complete) override;

private:
    bool replying_ = false;
    std::string props_;  // reused: the reply's encoded properties
};

class RpcClient : public AmqpClient {
public:
    RpcClient(asio::io_context& ioc, const BrokerAddress& addr, asio::ip::tcp::endpoint ep, ThreadStats& stats,
              RunControl& ctl, const PerfOptions& o, uint32_t id, std::string request_queue, uint64_t limit);
    void start() override;

protected:
    void on_channel_open() override;
    void on_setup_done() override;
    void on_content_header(uint64_t body_size, std::string_view raw_properties) override;
    void on_content_body(std::string_view chunk, bool complete) override;

private:
    void send_request();
    void publish_request();
    void open_call_queue();

    const PerfOptions& o_;
    uint32_t id_;
    std::string request_queue_, reply_queue_, consumer_tag_;
    uint64_t limit_;
    PublishTemplate tmpl_;
    uint64_t calls_ = 0;
    char expected_[PublishTemplate::kCorrelationIdSize] = {};
    bool running_ = false;
    bool matches_ = false;
    bool first_chunk_ = false;
    uint64_t stamp_ns_ = 0;
};

class TopologySetup : public AmqpClient {
public:
    // declare: (re)create the exchange, queues and bindings; remove: delete them;
    // inspect: passive queue.declare of every queue, summing their message counts.
    enum class Mode { declare, remove, inspect };
    TopologySetup(asio::io_context& ioc, const BrokerAddress& addr, asio::ip::tcp::endpoint ep, ThreadStats& stats,
                  RunControl& ctl, const PerfOptions& o, Mode mode);
    bool done() const { return done_; }
    // Mode::inspect: messages ready in the queues, as the broker counts them.
    uint64_t queue_depth() const { return depth_; }

protected:
    void on_channel_open() override;
    void on_setup_done() override;

private:
    const PerfOptions& o_;
    Mode mode_;
    std::vector<std::string> queues_;
    bool done_ = false;
    uint64_t depth_ = 0;
};

}  // namespace sluice::perf
