#include <algorithm>
#include <bit>

#include "cli/perf/message_stamp.hpp"
#include "cli/perf/roles.hpp"
#include "net/amqp/properties.hpp"

namespace sluice::perf {

namespace m = amqp::method;

namespace {
// Bytes of frames built before a write is started; while one write is in
// flight the next batch builds up to this size.
constexpr size_t kBatchBytes = 128 * 1024;
}  // namespace

void PublishTemplate::build(uint32_t frame_max, std::string_view exchange, std::string_view routing_key,
                            uint32_t body_size, bool persistent, std::string_view reply_to, bool dedup_header) {
    bytes.clear();
    m::BasicPublish pub;
    pub.exchange = exchange;
    pub.routing_key = routing_key;
    amqp::write_method(bytes, 1, pub);

    amqp::BasicProperties props;
    if (persistent) props.delivery_mode = 2;
    const std::string placeholder(kCorrelationIdSize, '#');
    if (!reply_to.empty()) {
        props.reply_to = std::string(reply_to);
        props.correlation_id = placeholder;
    }
    const std::string key_placeholder(kDedupKeySize, '%');
    if (dedup_header) {
        amqp::FieldTable h;
        h.set("x-deduplication-header", key_placeholder);
        props.headers = std::move(h);
    }
    std::string raw;
    amqp::encode_properties(raw, props);
    const size_t header = amqp::begin_frame(bytes, amqp::kFrameHeader, 1);
    amqp::encode_content_header(bytes, 60, body_size, raw);
    amqp::end_frame(bytes, header);
    correlation_offset = 0;
    if (!reply_to.empty()) correlation_offset = bytes.find(placeholder, header);
    dedup_offset = dedup_header ? bytes.find(key_placeholder, header) : 0;

    const size_t max_chunk = frame_max - amqp::kFrameOverhead;
    std::string chunk;
    for (uint32_t left = body_size; left > 0;) {
        const size_t n = std::min<size_t>(left, max_chunk);
        chunk.assign(n, '\0');
        if (left == body_size) stamp_offset = bytes.size() + amqp::kFrameHeaderSize;
        amqp::write_frame(bytes, amqp::kFrameBody, 1, chunk);
        left -= static_cast<uint32_t>(n);
    }
}

Producer::Producer(asio::io_context& ioc, const BrokerAddress& addr, asio::ip::tcp::endpoint ep, ThreadStats& stats,
                   RunControl& ctl, const PerfOptions& o, uint32_t id, std::string exchange, std::string routing_key,
                   uint64_t limit)
    : AmqpClient(ioc, addr, ep, "producer-" + std::to_string(id), stats, ctl),
      o_(o), id_(id), exchange_(std::move(exchange)), routing_key_(std::move(routing_key)), limit_(limit),
      rate_timer_(ioc) {
    if (o_.confirm) {
        settled_.assign(std::bit_ceil(uint64_t{o_.confirm}) * 2, 0);
        ring_mask_ = settled_.size() - 1;
    }
}

void Producer::on_channel_open() {
    if (o_.confirm) add_step(m::ConfirmSelect{});
}

void Producer::on_setup_done() {
    tmpl_.build(frame_max(), exchange_, routing_key_, o_.size, o_.persistent, {}, o_.dedup_keys > 0);
    out().reserve(kBatchBytes + tmpl_.bytes.size() * 2);
    mark_ready();
}

void Producer::start() {
    if (closing() || running_) return;
    running_ = true;
    start_ns_ = now_ns();
    pump();
}

void Producer::pump() {
    if (!running_ || closing()) return;
    fill();
    flush();
}

void Producer::fill() {
    std::string& buf = out();
    if (buf.size() >= kBatchBytes || finished_) return;
    if (ctl_.stop.load(std::memory_order_relaxed)) {
        running_ = false;
        return;
    }
    uint64_t allowed = UINT64_MAX;
    if (limit_) allowed = limit_ - published_;
    if (o_.confirm) allowed = std::min<uint64_t>(allowed, o_.confirm - (next_tag_ - confirmed_below_));
    if (o_.rate > 0) {
        // Send in steps of at least a millisecond's worth of messages: one
        // write per due message would cost a syscall (and a broker read) each
        // and make the tool, not the broker, the limit at high rates.
        const uint64_t now = now_ns();
        const double due = o_.rate * static_cast<double>(now - start_ns_) / 1e9 + 1.0;
        const uint64_t due_total = static_cast<uint64_t>(due);
        const uint64_t by_rate = due_total > published_ ? due_total - published_ : 0;
        const uint64_t step = std::max<uint64_t>(1, static_cast<uint64_t>(o_.rate / 1000.0));
        if (by_rate < std::min(step, allowed)) {
            // message number published_ + step is due at (published_ + step - 1) / rate s
            const double at = static_cast<double>(published_ + step - 1) * 1e9 / o_.rate;
            arm_rate_timer(start_ns_ + static_cast<uint64_t>(at));
            allowed = 0;
        } else {
            allowed = std::min(allowed, by_rate);
        }
    }
    // One clock read per batch: the whole batch goes to the socket in one write.
    const uint64_t stamp = now_ns();
    uint64_t n = 0;
    while (n < allowed && buf.size() < kBatchBytes) {
        const size_t at = buf.size();
        buf.append(tmpl_.bytes);
        write_stamp(buf.data() + at + tmpl_.stamp_offset, stamp, id_, static_cast<uint32_t>(published_ + n));
        if (tmpl_.dedup_offset) {
            // Producer id (8 hex digits) and sequence mod --dedup-keys (8).
            static constexpr char kHex[] = "0123456789abcdef";
            const uint64_t key = (uint64_t{id_} << 32) | ((published_ + n) % o_.dedup_keys);
            char* p = buf.data() + at + tmpl_.dedup_offset;
            for (int i = 15; i >= 0; --i) p[15 - i] = kHex[(key >> (4 * i)) & 0xf];
        }
        ++n;
    }
    if (n == 0) {
        check_finished();
        return;
    }
    published_ += n;
    if (o_.confirm) next_tag_ += n;
    stats_.sent.add(n);
    check_finished();
}

void Producer::arm_rate_timer(uint64_t due_ns) {
    if (rate_timer_armed_) return;
    rate_timer_armed_ = true;
    const uint64_t now = now_ns();
    rate_timer_.expires_after(std::chrono::nanoseconds(due_ns > now ? due_ns - now : 0));
    rate_timer_.async_wait([this](const boost::system::error_code& ec) {
        rate_timer_armed_ = false;
        if (!ec) pump();
    });
}

void Producer::check_finished() {
    if (finished_ || !limit_ || published_ < limit_) return;
    if (o_.confirm && confirmed_below_ < next_tag_) return;  // wait for the last confirms
    finished_ = true;
    running_ = false;
    const uint64_t now = now_ns();
    uint64_t prev = ctl_.last_publish_ns.load();
    while (prev < now && !ctl_.last_publish_ns.compare_exchange_weak(prev, now)) {
    }
    ctl_.finished.fetch_add(1);
}

void Producer::on_confirm(uint64_t tag, bool multiple, bool nack) {
    if (!o_.confirm || tag < confirmed_below_ || tag >= next_tag_) return;
    uint64_t newly = 0;
    if (multiple) {
        for (uint64_t t = confirmed_below_; t <= tag; ++t) {
            uint8_t& s = settled_[t & ring_mask_];
            if (s) s = 0;
            else ++newly;
        }
        confirmed_below_ = tag + 1;
    } else if (tag == confirmed_below_) {
        ++newly;
        ++confirmed_below_;
    } else {
        uint8_t& s = settled_[tag & ring_mask_];
        if (!s) {
            s = 1;
            ++newly;
        }
    }
    while (confirmed_below_ < next_tag_ && settled_[confirmed_below_ & ring_mask_]) {
        settled_[confirmed_below_ & ring_mask_] = 0;
        ++confirmed_below_;
    }
    if (nack) stats_.nacked.add(newly);
    else stats_.confirmed.add(newly);
    check_finished();
    pump();
}

}  // namespace sluice::perf
