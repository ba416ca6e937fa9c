// One AMQP 0-9-1 client connection of sluice-perf (with channel 1): connect,
// handshake (PLAIN, heartbeats off), a list of synchronous setup methods sent
// one after another, then the hot path for a role (producer, consumer, RPC).
//
// I/O: reads land in one buffer (64 KiB, grown up to 1 MiB while reads fill
// it, or to hold a larger frame) and every complete frame in it is handled
// before the next read; writes are double-buffered — roles append
// frames to out() and flush() starts one async_write of everything appended
// so far, while the next batch builds up in the other buffer. Neither buffer
// is reallocated once warm, so the hot path does no allocation.
//
// Thread-safety: an AmqpClient lives on one io_context, run by one thread;
// every method must be called on that thread (post to it from elsewhere).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "cli/perf/options.hpp"
#include "cli/perf/stats.hpp"
#include "net/amqp/methods.hpp"

namespace sluice::perf {

namespace asio = boost::asio;

// State shared by every connection of a run and the main thread.
struct RunControl {
    std::atomic<int> ready{0};            // clients whose setup finished
    std::atomic<int> finished{0};         // producers that sent (and had confirmed) all they will
    std::atomic<int> closed{0};           // clients whose socket is closed
    std::atomic<bool> failed{false};
    std::atomic<bool> stop{false};        // producers stop publishing (end of the measured phase)
    std::atomic<uint64_t> last_publish_ns{0};  // steady ns when the last producer finished

    void report_error(const std::string& what) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!failed.load()) first_error_ = what;
        failed.store(true);
    }
    std::string first_error() {
        std::lock_guard<std::mutex> lock(mu_);
        return first_error_;
    }

private:
    std::mutex mu_;
    std::string first_error_;
};

class AmqpClient {
public:
    AmqpClient(asio::io_context& ioc, const BrokerAddress& addr, asio::ip::tcp::endpoint endpoint,
               std::string name, ThreadStats& stats, RunControl& ctl);
    virtual ~AmqpClient();
    AmqpClient(const AmqpClient&) = delete;
    AmqpClient& operator=(const AmqpClient&) = delete;

    void connect();        // starts the connection and setup; ends with RunControl::ready++
    virtual void start() {}  // the measured phase begins (producers publish, consumers consume)
    void shutdown();       // connection.close, then close the socket (2 s deadline)
    const std::string& name() const { return name_; }
    asio::io_context::executor_type ioc_executor() { return ioc_.get_executor(); }

protected:
    // Called once channel 1 is open: add_step() the role's setup methods.
    virtual void on_channel_open() = 0;
    // All steps answered. Default: count this client ready.
    virtual void on_setup_done() { mark_ready(); }

    // Hot-path hooks.
    virtual void on_deliver(uint64_t /*delivery_tag*/) {}
    virtual void on_content_header(uint64_t /*body_size*/, std::string_view /*raw_properties*/) {}
    virtual void on_content_body(std::string_view /*chunk*/, bool /*complete*/) {}
    virtual void on_confirm(uint64_t /*tag*/, bool /*multiple*/, bool /*nack*/) {}
    virtual void on_written() {}          // a write finished: the out buffer has room again
    virtual void on_reads_handled() {}    // every frame of one read has been handled
    // A rate-limited consumer: while running, do not read before this steady ns (0 = read
    // now). Unread bytes back up into the broker, as a slow consumer's do.
    virtual uint64_t read_hold_until_ns() const { return 0; }

    using ReplyHandler = std::function<void(std::string_view payload)>;
    // Queues a synchronous method; it is sent once every earlier step has its
    // reply. `tolerate_error`: a channel.close in reply is not fatal (the
    // channel is reopened and setup goes on) — for deleting what may not exist.
    template <typename M>
    void add_step(const M& m, ReplyHandler on_reply = {}, bool tolerate_error = false) {
        Step s;
        amqp::write_method(s.frame, 1, m);
        s.on_reply = std::move(on_reply);
        s.tolerate_error = tolerate_error;
        steps_.push_back(std::move(s));
    }
    void run_steps();  // sends the next step, or calls on_setup_done()
    void mark_ready();

    std::string& out() { return out_; }
    void flush();
    bool write_in_flight() const { return writing_; }
    bool closing() const { return state_ >= State::closing; }
    void fail(const std::string& what);

    // steady ns taken when the current read completed (one clock read per read).
    uint64_t read_time_ns() const { return read_time_ns_; }
    uint32_t frame_max() const { return frame_max_; }

    asio::io_context& ioc_;
    ThreadStats& stats_;
    RunControl& ctl_;

private:
    enum class State { connecting, handshake, opening_channel, setup, running, closing, closed };
    struct Step {
        std::string frame;
        ReplyHandler on_reply;
        bool tolerate_error = false;
    };

    void read_more();
    void hold_reads(uint64_t until_ns);
    void handle_reads();
    void handle_frame(const amqp::Frame& f);
    void handle_connection_method(std::string_view payload);
    void handle_channel_method(std::string_view payload);
    void send_start_ok(const amqp::method::ConnectionStart& m);
    void finish();

    BrokerAddress addr_;
    asio::ip::tcp::endpoint endpoint_;
    std::string name_;
    asio::ip::tcp::socket sock_;
    asio::steady_timer close_timer_;
    asio::steady_timer read_timer_;  // a held read (read_hold_until_ns)
    bool read_held_ = false;
    State state_ = State::connecting;

    void grow_read_buffer(size_t at_least);

    std::unique_ptr<char[]> rbuf_;  // uninitialised: untouched pages cost no memory
    size_t rbuf_size_ = 0;
    size_t rbeg_ = 0, rend_ = 0;
    uint64_t read_time_ns_ = 0;
    bool reading_ = false;

    std::string out_, wbuf_;
    bool writing_ = false;

    uint32_t frame_max_ = 131072;
    std::deque<Step> steps_;
    bool step_in_flight_ = false;
    bool reopening_channel_ = false;
    bool counted_ready_ = false;

    // content after basic.deliver (hooks) or basic.return (skipped)
    enum class Content { none, deliver, skip };
    Content content_ = Content::none;
    uint64_t body_left_ = 0;
    bool expect_header_ = false;
};

}  // namespace sluice::perf
