#include "broker/stream.hpp"

#include <algorithm>

#include "broker/broker.hpp"
#include "broker/channel.hpp"
#include "broker/durability.hpp"
#include "broker/queue.hpp"
#include "broker/vhost.hpp"

namespace sluice::broker {

namespace {

// The x-stream-offset argument, or why it is not one.
struct OffsetSpec {
    enum Kind { first, last, next, offset, timestamp_ms, bad } kind = next;
    uint64_t value = 0;  // offset, or Unix ms
};

OffsetSpec parse_offset(const amqp::FieldTable& args, uint64_t now_ms) {
    const amqp::FieldValue* v = args.find("x-stream-offset");
    if (!v) return {};
    if (const auto* t = std::get_if<amqp::Timestamp>(&v->v)) return {OffsetSpec::timestamp_ms, t->seconds * 1000};
    if (auto i = v->as_int()) {
        if (*i < 0) return {OffsetSpec::bad};
        return {OffsetSpec::offset, static_cast<uint64_t>(*i)};
    }
    if (v->type_code() != 'S') return {OffsetSpec::bad};
    auto s = v->as_string();
    if (*s == "first") return {OffsetSpec::first};
    if (*s == "last") return {OffsetSpec::last};
    if (*s == "next") return {OffsetSpec::next};
    if (auto ago = parse_stream_duration_ms(*s)) return {OffsetSpec::timestamp_ms, now_ms - std::min(now_ms, *ago)};
    return {OffsetSpec::bad};
}

std::string resource(const Queue& q) { return "queue '" + q.name() + "' in vhost '" + q.vhost().name() + "'"; }

}  // namespace

Stream::Stream(Queue& queue, Durability& durability) : queue_(queue), durability_(durability) {
    const QueueArguments& f = queue.features();
    log_ = durability.open_stream(queue, f.segment_bytes, {f.max_length_bytes, f.max_age_ms},
                                  [this] { dispatch(); });
}

Stream::~Stream() {
    mark_deleted();
    durability_.close_stream(queue_.id());
}

uint64_t Stream::count() const { return log_ ? log_->end() - log_->first() : 0; }

uint64_t Stream::bytes() const { return log_ ? log_->bytes() : 0; }

size_t Stream::buffered_bytes() const {
    size_t n = 0;
    for (const ReaderPtr& r : readers_) n += r->buffered;
    return n;
}

void Stream::publish(const QueuedMessage& qm) {
    if (!log_) return;
    durability_.stream_append(queue_, *qm.message, queue_.vhost().broker().now_ms());
}

Status Stream::check_consume(bool no_ack, uint32_t prefetch, uint32_t global_prefetch,
                             const amqp::FieldTable& arguments) const {
    // RabbitMQ's checks and texts (rabbit_stream_queue:consume).
    if (global_prefetch != 0)
        return amqp_error(reply::not_implemented, resource(queue_) + " does not support global qos");
    if (prefetch == 0)
        return amqp_error(reply::precondition_failed,
                          "consumer prefetch count is not set for '" + resource(queue_) + "'");
    if (no_ack)
        return amqp_error(reply::not_implemented,
                          "automatic acknowledgement not supported by stream queues " + resource(queue_));
    if (parse_offset(arguments, 0).kind == OffsetSpec::bad)
        return amqp_error(reply::precondition_failed,
                          "invalid arg 'x-stream-offset' for " + resource(queue_) +
                              ": expected first, last, next, an offset, a timestamp or an interval such as 1h");
    return std::nullopt;
}

uint64_t Stream::start_offset(const amqp::FieldTable& arguments, uint64_t& min_ms) const {
    min_ms = 0;
    const OffsetSpec spec = parse_offset(arguments, queue_.vhost().broker().now_ms());
    const uint64_t first = log_->first(), end = log_->end();
    switch (spec.kind) {
        case OffsetSpec::first: return first;
        case OffsetSpec::last: return log_->committed_end() > first ? std::max(first, log_->last_chunk()) : end;
        case OffsetSpec::offset: return std::clamp(spec.value, first, end);
        case OffsetSpec::timestamp_ms: {
            // The first segment with a chunk at or after the time; the
            // reads skip that segment's older chunks.
            for (const storage::StreamSegment& s : log_->segments())
                if (s.last_ms >= spec.value) {
                    min_ms = spec.value;
                    return std::max(first, s.first);
                }
            return end;
        }
        default: return end;  // next
    }
}

void Stream::add_consumer(const ConsumerPtr& consumer) {
    if (!log_) return;
    auto r = std::make_shared<Reader>();
    r->consumer = consumer;
    r->next_read = start_offset(consumer->arguments, r->min_ms);
    readers_.push_back(std::move(r));
}

void Stream::remove_consumer(const Consumer* consumer) {
    auto it = std::find_if(readers_.begin(), readers_.end(),
                           [&](const ReaderPtr& r) { return r->consumer.get() == consumer; });
    if (it == readers_.end()) return;
    (*it)->gone = true;
    readers_.erase(it);
}

void Stream::mark_deleted() {
    for (const ReaderPtr& r : readers_) r->gone = true;
    readers_.clear();
    log_ = nullptr;
}

void Stream::start_read(const ReaderPtr& reader) {
    if (reader->reading || !log_ || reader->buffered >= kReadAhead / 2) return;
    // Retention may have dropped what this reader had not read: it goes on
    // from the oldest offset kept, as in RabbitMQ.
    reader->next_read = std::max(reader->next_read, log_->first());
    const uint64_t end = log_->committed_end();
    if (reader->next_read >= end) return;  // at the tail: the next commit wakes it
    storage::Store* store = durability_.store();
    Executor* executor = durability_.executor();
    if (!store || !executor) return;
    reader->reading = true;
    struct Result {
        std::vector<std::pair<uint64_t, MessagePtr>> messages;
        size_t bytes = 0;
        uint64_t next = 0;
        uint64_t min_ms = 0;
    };
    auto weak_queue = std::weak_ptr<Queue>(queue_.shared_from_this());
    // What the reader holds stays under kReadAhead plus one chunk.
    const size_t budget = kReadAhead - reader->buffered;
    store->read_off_thread([store, executor, weak_queue, reader, id = queue_.id(), from = reader->next_read, end,
                            budget, min_ms = reader->min_ms] {
        auto result = std::make_shared<Result>();
        result->min_ms = min_ms;
        result->next = storage::StreamLog::read(*store, id, from, end, budget, [&](const storage::StreamRecord& rec) {
            if (rec.timestamp_ms < result->min_ms) return true;  // before the timestamp asked for
            result->min_ms = 0;
            if (MessagePtr m = Durability::decode_stream_record(rec.payload, rec.offset)) {
                result->bytes += m->body_size();
                result->messages.emplace_back(rec.offset, std::move(m));
            }
            return true;
        });
        executor->post([weak_queue, reader, result] {
            auto q = weak_queue.lock();
            reader->reading = false;
            if (!q || reader->gone) return;
            if (result->next > reader->next_read) reader->next_read = result->next;
            reader->min_ms = result->min_ms;
            reader->buffered += result->bytes;
            for (auto& m : result->messages) reader->buffer.push_back(std::move(m));
            if (Stream* s = q->stream()) s->dispatch();
        });
    });
}

void Stream::dispatch() {
    if (dispatching_ || !log_) return;
    dispatching_ = true;
    // Each reader goes as far as its consumer's credit; a reader's turn
    // never waits for another's read.
    for (size_t i = 0; i < readers_.size(); ++i) {
        ReaderPtr r = readers_[i];
        Consumer& c = *r->consumer;
        while (!r->buffer.empty() && !r->gone && c.channel->can_deliver(c)) {
            auto [offset, message] = std::move(r->buffer.front());
            r->buffer.pop_front();
            r->buffered -= std::min(r->buffered, static_cast<size_t>(message->body_size()));
            QueuedMessage qm{std::move(message), offset};
            ++unacked_;
            queue_.counters.note_delivery(false);
            c.channel->deliver(r->consumer, std::move(qm));
        }
        if (!r->gone) start_read(r);
    }
    dispatching_ = false;
}

}  // namespace sluice::broker
