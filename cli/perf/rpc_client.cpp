#include <cstring>

#include "cli/perf/message_stamp.hpp"
#include "cli/perf/roles.hpp"

namespace sluice::perf {

namespace m = amqp::method;

namespace {
constexpr std::string_view kDirectReplyTo = "amq.rabbitmq.reply-to";

void hex16(char* out, uint64_t v) {
    static constexpr char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; --i) {
        out[i] = digits[v & 15];
        v >>= 4;
    }
}
}  // namespace

RpcClient::RpcClient(asio::io_context& ioc, const BrokerAddress& addr, asio::ip::tcp::endpoint ep, ThreadStats& stats,
                     RunControl& ctl, const PerfOptions& o, uint32_t id, std::string request_queue, uint64_t limit)
    : AmqpClient(ioc, addr, ep, "rpc-client-" + std::to_string(id), stats, ctl),
      o_(o), id_(id), request_queue_(std::move(request_queue)), limit_(limit) {}

void RpcClient::on_channel_open() {
    auto consume_replies = [this] {
        m::BasicConsume c;
        c.queue = reply_queue_;
        c.no_ack = true;  // replies are consumed with no_ack (direct reply-to requires it)
        add_step(c);
    };
    if (o_.rpc_queue_per_call) return;  // each call declares its own (open_call_queue)
    if (o_.rpc_direct) {
        reply_queue_ = std::string(kDirectReplyTo);
        consume_replies();
        return;
    }
    m::QueueDeclare d;  // a server-named, exclusive reply queue
    d.exclusive = true;
    d.auto_delete = true;
    add_step(d, [this, consume_replies](std::string_view payload) {
        m::QueueDeclareOk ok;
        if (amqp::decode_arguments(payload.substr(4), ok) != amqp::DecodeError::none || ok.queue.empty()) {
            fail("queue.declare for the reply queue did not return a name");
            return;
        }
        reply_queue_ = std::string(ok.queue);
        consume_replies();
    });
}

void RpcClient::on_setup_done() {
    tmpl_.build(frame_max(), "", request_queue_, o_.size, o_.persistent, reply_queue_);
    mark_ready();
}

void RpcClient::open_call_queue() {
    // --rpc-queue-per-call: a reply queue of its own for this call, then the
    // request (the reply queue is deleted by the cancel after the reply).
    m::QueueDeclare d;
    d.exclusive = true;
    d.auto_delete = true;
    add_step(d, [this](std::string_view payload) {
        m::QueueDeclareOk ok;
        if (amqp::decode_arguments(payload.substr(4), ok) != amqp::DecodeError::none || ok.queue.empty()) {
            fail("queue.declare for a call's reply queue did not return a name");
            return;
        }
        reply_queue_ = std::string(ok.queue);
        m::BasicConsume c;
        c.queue = reply_queue_;
        c.no_ack = true;
        add_step(c, [this](std::string_view payload) {
            m::BasicConsumeOk cok;
            if (amqp::decode_arguments(payload.substr(4), cok) != amqp::DecodeError::none) {
                fail("basic.consume on a call's reply queue did not return a tag");
                return;
            }
            consumer_tag_ = std::string(cok.consumer_tag);
            tmpl_.build(frame_max(), "", request_queue_, o_.size, o_.persistent, reply_queue_);
            publish_request();
        });
    });
    run_steps();
}

void RpcClient::start() {
    if (closing() || running_) return;
    running_ = true;
    send_request();
}

void RpcClient::send_request() {
    if (!running_ || closing()) return;
    if (ctl_.stop.load(std::memory_order_relaxed) || (limit_ && calls_ >= limit_)) {
        running_ = false;
        if (limit_ && calls_ >= limit_) {
            const uint64_t now = now_ns();
            uint64_t prev = ctl_.last_publish_ns.load();
            while (prev < now && !ctl_.last_publish_ns.compare_exchange_weak(prev, now)) {
            }
            ctl_.finished.fetch_add(1);
        }
        return;
    }
    if (o_.rpc_queue_per_call) {
        open_call_queue();
        return;
    }
    publish_request();
}

void RpcClient::publish_request() {
    std::string& buf = out();
    const size_t at = buf.size();
    buf.append(tmpl_.bytes);
    hex16(expected_, calls_);
    std::memcpy(buf.data() + at + tmpl_.correlation_offset, expected_, sizeof expected_);
    write_stamp(buf.data() + at + tmpl_.stamp_offset, now_ns(), id_, static_cast<uint32_t>(calls_));
    stats_.sent.add();
    flush();
}

void RpcClient::on_content_header(uint64_t, std::string_view raw_properties) {
    std::string_view correlation_id, reply_to;
    matches_ = peek_rpc_properties(raw_properties, correlation_id, reply_to) &&
               correlation_id == std::string_view(expected_, sizeof expected_);
    first_chunk_ = true;
    stamp_ns_ = 0;
}

void RpcClient::on_content_body(std::string_view chunk, bool complete) {
    if (first_chunk_) {
        first_chunk_ = false;
        Stamp s;
        if (read_stamp(chunk, s)) stamp_ns_ = s.send_ns;
    }
    if (!complete || !matches_) return;  // a stale or foreign reply: keep waiting
    matches_ = false;
    const uint64_t now = read_time_ns();
    if (stamp_ns_) stats_.latency.record(now > stamp_ns_ ? now - stamp_ns_ : 0);
    stats_.received.add();
    stats_.rpc_calls.add();
    stats_.last_receive_ns.raise_to(now);
    ++calls_;
    if (o_.rpc_queue_per_call) {
        m::BasicCancel cancel;
        cancel.consumer_tag = consumer_tag_;
        add_step(cancel, [this](std::string_view) { send_request(); });
        run_steps();
        return;
    }
    send_request();
}

}  // namespace sluice::perf
