#include "cli/perf/message_stamp.hpp"
#include "cli/perf/roles.hpp"
#include "net/amqp/properties.hpp"
#include "net/amqp/wire.hpp"

namespace sluice::perf {

namespace m = amqp::method;

Consumer::Consumer(asio::io_context& ioc, const BrokerAddress& addr, asio::ip::tcp::endpoint ep, ThreadStats& stats,
                   RunControl& ctl, const PerfOptions& o, std::string name, std::vector<std::string> queues)
    : AmqpClient(ioc, addr, ep, std::move(name), stats, ctl), o_(o), queues_(std::move(queues)) {}

void Consumer::on_channel_open() {
    if (o_.prefetch) add_step(m::BasicQos{0, o_.prefetch, false});
}

void Consumer::start() {
    if (closing()) return;
    start_ns_ = now_ns();
    for (const auto& q : queues_) {
        m::BasicConsume c;
        c.queue = q;
        c.no_ack = o_.autoack;
        if (o_.stream) {
            const std::string& off = o_.stream_offset;
            const bool number = !off.empty() && off.find_first_not_of("0123456789") == std::string::npos;
            if (number) c.arguments.set("x-stream-offset", static_cast<int64_t>(std::stoll(off)));
            else c.arguments.set("x-stream-offset", off);
        }
        amqp::write_method(out(), 1, c);
    }
    flush();
}

void Consumer::on_deliver(uint64_t delivery_tag) {
    tag_ = delivery_tag;
    first_chunk_ = true;
    stamp_ns_ = 0;
}

void Consumer::on_content_body(std::string_view chunk, bool complete) {
    if (first_chunk_) {
        first_chunk_ = false;
        Stamp s;
        if (read_stamp(chunk, s)) stamp_ns_ = s.send_ns;
    }
    if (!complete) return;
    if (stamp_ns_) stats_.latency.record(read_time_ns() > stamp_ns_ ? read_time_ns() - stamp_ns_ : 0);
    stats_.received.add();
    ++consumed_;
    received_any_ = true;
    ack_delivered();
}

void Consumer::ack_delivered() {
    if (o_.autoack) return;
    if (o_.multi_ack_every > 1) {
        if (++unacked_ < o_.multi_ack_every) return;
        unacked_ = 0;
        amqp::write_method(out(), 1, m::BasicAck{tag_, true});
    } else {
        amqp::write_method(out(), 1, m::BasicAck{tag_, false});
    }
}

// With --consumer-rate R: the n-th delivery is due n/R seconds after the start; reading
// waits until what has been consumed so far is due.
uint64_t Consumer::read_hold_until_ns() const {
    if (o_.consumer_rate <= 0 || start_ns_ == 0) return 0;
    return start_ns_ + static_cast<uint64_t>(static_cast<double>(consumed_) * 1e9 / o_.consumer_rate);
}

void Consumer::on_reads_handled() {
    if (received_any_) {
        received_any_ = false;
        stats_.last_receive_ns.raise_to(read_time_ns());
    }
}

// ---------------------------------------------------------------------------

void RpcServer::on_content_header(uint64_t body_size, std::string_view raw_properties) {
    std::string_view correlation_id, reply_to;
    replying_ = peek_rpc_properties(raw_properties, correlation_id, reply_to) && !reply_to.empty();
    if (!replying_) return;
    m::BasicPublish pub;
    pub.routing_key = reply_to;  // default exchange: straight to the reply queue
    amqp::write_method(out(), 1, pub);
    props_.clear();
    if (correlation_id.empty()) {
        amqp::put_u16(props_, 0);
    } else {
        amqp::put_u16(props_, 0x0400);  // correlation-id only
        amqp::put_shortstr(props_, correlation_id);
    }
    const size_t h = amqp::begin_frame(out(), amqp::kFrameHeader, 1);
    amqp::encode_content_header(out(), 60, body_size, props_);
    amqp::end_frame(out(), h);
}

void RpcServer::on_content_body(std::string_view chunk, bool complete) {
    if (replying_ && !chunk.empty()) amqp::write_frame(out(), amqp::kFrameBody, 1, chunk);
    if (!complete) return;
    if (replying_) stats_.rpc_served.add();
    replying_ = false;
    ack_delivered();
}

}  // namespace sluice::perf
