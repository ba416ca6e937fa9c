// Durability's side of streams (broker/stream.hpp): each stream's
// storage::StreamLog, appended to by publishes, flushed with every batch
// (retention applied a segment at a time, dropped ranges reclaimed once the
// batch is written), and its records decoded with their offsets.
#include <algorithm>
#include <chrono>

#include "broker/durability.hpp"
#include "broker/queue.hpp"
#include "net/amqp/properties.hpp"
#include "storage/records.hpp"
#include "storage/stream_log.hpp"

namespace sluice::broker {

storage::StreamLog* Durability::open_stream(const Queue& queue, uint64_t segment_bytes, StreamRetention retention,
                                            std::function<void()> on_committed) {
    if (!store_) return nullptr;
    StreamState& st = streams_[queue.id()];
    if (!st.log) st.log = std::make_unique<storage::StreamLog>(queue.id(), segment_bytes);
    st.retention = retention;
    st.on_committed = std::move(on_committed);
    return st.log.get();
}

uint64_t Durability::stream_append(const Queue& queue, const Message& m, uint64_t now_ms) {
    auto it = streams_.find(queue.id());
    if (it == streams_.end()) return 0;
    storage::StreamLog& log = *it->second.log;
    if (!log.needs_flush()) dirty_streams_.push_back(queue.id());
    std::string& header = scratch_;
    header.clear();
    storage::records::append_message_header(header, m.exchange(), m.routing_key(), m.properties().size());
    const size_t before = log.open_bytes();
    const uint64_t offset = log.append(now_ms, {header, m.properties(), m.body()});
    stream_open_bytes_ += log.open_bytes() - std::min(before, log.open_bytes());
    schedule_commit();
    return offset;
}

void Durability::flush_streams(storage::Batch& batch) {
    if (dirty_streams_.empty()) return;
    const uint64_t now_ms = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
    for (uint64_t id : dirty_streams_) {
        auto it = streams_.find(id);
        if (it == streams_.end()) continue;
        storage::StreamLog& log = *it->second.log;
        const StreamRetention& r = it->second.retention;
        if (r.max_bytes || r.max_age_ms) log.apply_retention(r.max_bytes, r.max_age_ms, now_ms);
        log.flush(batch);
        auto [first, end] = log.take_dropped();
        if (first != end)
            stream_reclaims_.emplace_back(storage::StreamLog::chunk_key(id, first),
                                          storage::StreamLog::chunk_key(id, end));
        if (std::find(in_flight_streams_.begin(), in_flight_streams_.end(), id) == in_flight_streams_.end())
            in_flight_streams_.push_back(id);
    }
    dirty_streams_.clear();
    in_flight_stream_reclaims_.insert(in_flight_stream_reclaims_.end(), stream_reclaims_.begin(),
                                      stream_reclaims_.end());
    stream_reclaims_.clear();
}

MessagePtr Durability::decode_stream_record(std::string_view payload, uint64_t offset) {
    storage::records::MessageParts p;
    if (!storage::records::decode_message(payload, p)) return nullptr;
    // Every delivery from a stream carries its offset (RabbitMQ's
    // x-stream-offset header, a long).
    amqp::BasicProperties props;
    if (!amqp::decode_properties(p.properties, props)) props = amqp::BasicProperties{};
    if (!props.headers) props.headers.emplace();
    props.headers->set("x-stream-offset", static_cast<int64_t>(offset));
    std::string raw;
    amqp::encode_properties(raw, props);
    auto m = std::make_shared<Message>(p.exchange, p.routing_key, raw, p.body.size());
    m->append_body(p.body);
    return m;
}

}  // namespace sluice::broker
