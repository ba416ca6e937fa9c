// A stream (`x-queue-type: stream`, RabbitMQ 3.9+ semantics over AMQP
// 0-9-1): an append-only log that any number of consumers read, each from
// its own offset. Publishing appends (every message is stored, persistent
// or not, and confirmed once synced); consuming removes nothing; an ack
// only gives the consumer credit back, and a nack or reject (requeue or
// not) does the same — the message stays in the stream, as in RabbitMQ.
//
// Consumers must set a prefetch (basic.qos, not global) and acknowledge;
// `x-stream-offset` picks where a consumer starts: "first", "last" (the
// first message of the last chunk, RabbitMQ's rule), "next" (the default),
// a numeric offset, a timestamp (AMQP 'T', seconds) or an interval ("1h":
// that long ago). Every delivery carries the `x-stream-offset` header.
// basic.get is refused (540), as RabbitMQ refuses it.
//
// Memory: a reader holds at most a small read-ahead (kReadAhead bytes plus
// one chunk, storage/stream_log.hpp) of decoded messages; reads run on the
// store's read thread and come back through the executor — the broker
// thread never reads the store. The log itself keeps only its segments'
// bounds in memory, so a stream costs the same however long it grows.
//
// Thread-safety: owned by its Queue on the broker thread; the read thread
// sees only copies of what it needs.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "broker/amqp_error.hpp"
#include "broker/message.hpp"
#include "net/amqp/field_table.hpp"

namespace sluice::storage {
class StreamLog;
}

namespace sluice::broker {

class Durability;
class Queue;
struct Consumer;
using ConsumerPtr = std::shared_ptr<Consumer>;

class Stream {
public:
    // Bytes a reader reads ahead (once under half of it is left).
    static constexpr size_t kReadAhead = 128u << 10;

    Stream(Queue& queue, Durability& durability);
    ~Stream();

    // False when there is no store to keep it in (the queue is refused).
    bool usable() const { return log_ != nullptr; }
    // Messages kept, and their stored bytes.
    uint64_t count() const;
    uint64_t bytes() const;
    size_t unacked() const { return unacked_; }
    // Messages read ahead and not yet delivered, over all readers.
    size_t buffered_bytes() const;

    void publish(const QueuedMessage& qm);
    // basic.consume's rules for a stream: 406 without a prefetch, 540 with
    // no-ack or a global prefetch, 406 for an x-stream-offset it cannot read.
    Status check_consume(bool no_ack, uint32_t prefetch, uint32_t global_prefetch,
                         const amqp::FieldTable& arguments) const;
    void add_consumer(const ConsumerPtr& consumer);
    void remove_consumer(const Consumer* consumer);
    // Any settlement of a delivery (ack, nack, reject, requeue): credit back.
    void settle() {
        if (unacked_ > 0) --unacked_;
    }
    // Delivers what readers have read ahead to consumers with credit, and
    // starts the reads that are due.
    void dispatch();
    // The queue is deleted: readers stop (reads in flight are ignored).
    void mark_deleted();

private:
    struct Reader {
        ConsumerPtr consumer;
        uint64_t next_read = 0;  // the next offset to read from the store
        uint64_t min_ms = 0;     // timestamp offsets: skip chunks older than this
        std::deque<std::pair<uint64_t, MessagePtr>> buffer;  // read, not yet delivered
        size_t buffered = 0;     // bytes in buffer
        bool reading = false;
        bool gone = false;
    };
    using ReaderPtr = std::shared_ptr<Reader>;
    // The offset a consumer starts at, from its arguments.
    uint64_t start_offset(const amqp::FieldTable& arguments, uint64_t& min_ms) const;
    void start_read(const ReaderPtr& reader);

    Queue& queue_;
    Durability& durability_;
    storage::StreamLog* log_ = nullptr;  // Durability's; null once deleted
    std::vector<ReaderPtr> readers_;
    size_t unacked_ = 0;
    bool dispatching_ = false;
};

}  // namespace sluice::broker
