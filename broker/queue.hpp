// A queue: ready messages in order, the consumers attached to it, and the
// dispatcher that hands ready messages to consumers with spare credit.
//
// Order: every message gets a sequence number when it enters the queue; a
// requeued message goes back to its own place (RabbitMQ's classic-queue
// behaviour), so ready messages are always sorted by sequence number.
//
// Thread-safety: a queue lives on the broker thread; everything that touches
// it runs there. It holds messages in memory only (durable storage plugs in
// through broker/message_store.hpp).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "broker/amqp_error.hpp"
#include "broker/message.hpp"
#include "broker/queue_counters.hpp"
#include "net/amqp/field_table.hpp"

namespace sluice::broker {

class Channel;
class Queue;
class VHost;

struct Consumer {
    std::string tag;
    Channel* channel = nullptr;
    std::shared_ptr<Queue> queue;
    bool no_ack = false;
    bool exclusive = false;
    uint32_t prefetch = 0;  // per-consumer basic.qos limit; 0 = none
    uint32_t unacked = 0;
    int64_t priority = 0;   // x-priority consume argument: higher is served first
    amqp::FieldTable arguments;
};
using ConsumerPtr = std::shared_ptr<Consumer>;

struct QueueOptions {
    bool durable = false;
    bool exclusive = false;
    bool auto_delete = false;
    amqp::FieldTable arguments;
};

class Queue : public std::enable_shared_from_this<Queue> {
public:
    // `owner` is the connection that owns an exclusive queue (0 = none);
    // `id` names the queue's key range in the durable store.
    Queue(VHost& vhost, std::string name, QueueOptions options, uint64_t owner, uint64_t id);

    const std::string& name() const { return name_; }
    uint64_t id() const { return id_; }
    VHost& vhost() const { return vhost_; }
    bool durable() const { return options_.durable; }
    bool exclusive() const { return options_.exclusive; }
    bool auto_delete() const { return options_.auto_delete; }
    const amqp::FieldTable& arguments() const { return options_.arguments; }
    uint64_t owner() const { return owner_; }
    bool deleted() const { return deleted_; }

    size_t ready_count() const { return ready_.size() + paged_count_; }
    size_t paged_count() const { return paged_count_; }
    size_t memory_bytes() const { return memory_bytes_; }
    // Seconds the message at the head has waited (0 when empty). Paged
    // messages count from when they were read back into memory.
    uint32_t head_age_s(uint32_t now_s) const {
        return ready_.empty() || now_s < ready_.front().enqueued_s ? 0 : now_s - ready_.front().enqueued_s;
    }
    size_t unacked_count() const { return unacked_; }
    size_t consumer_count() const { return consumers_.size(); }
    const std::vector<ConsumerPtr>& consumers() const { return consumers_; }

    // The sequence number the next published message will get.
    uint64_t allocate_seq() { return next_seq_++; }
    // Appends a message (seq from allocate_seq) and delivers what can be delivered.
    void publish(QueuedMessage qm);
    // A message recovered from the durable store at start: in memory, or
    // (restore_paged) left in the store until consumers get to it.
    void restore_message(MessagePtr message, uint64_t seq);
    void restore_paged(uint64_t seq);
    // Whether a message of this size would stay in memory now.
    bool has_memory_room() const;
    // basic.get: the head of the queue, counted as unacked unless no_ack.
    std::optional<QueuedMessage> get(bool no_ack);
    // An unacked message comes back to its place, marked redelivered.
    void requeue(QueuedMessage qm);
    // An unacked message was acked or dropped.
    void settle(const QueuedMessage& qm);
    // Removes the ready messages; returns how many.
    size_t purge();

    // 403 if exclusivity forbids it.
    Status check_can_consume(bool exclusive) const;
    void add_consumer(ConsumerPtr consumer);
    // Returns the consumer (if it was attached).
    ConsumerPtr remove_consumer(const Consumer* consumer);
    // True once a consumer has come and all have gone (auto-delete's trigger).
    bool unused_after_consumers() const { return had_consumer_ && consumers_.empty(); }

    // Delivers ready messages to consumers with credit, round-robin.
    void dispatch();

    // Called by VHost::delete_queue: detaches everything.
    std::vector<ConsumerPtr> mark_deleted();

    // Routing scratch: the vhost's routing pass de-duplicates with it.
    uint64_t route_mark = 0;
    // Totals for metrics (bumped on the hot path, read at scrape time).
    QueueCounters counters;

private:
    VHost& vhost_;
    std::string name_;
    uint64_t id_;
    QueueOptions options_;
    uint64_t owner_;
    bool deleted_ = false;
    bool had_consumer_ = false;
    bool dispatching_ = false;

    // Reads paged messages back into memory when the in-memory head runs low.
    void refill();
    void take(const QueuedMessage& qm) { sub_memory(qm.message->body_size()); }
    void add_memory(size_t n);  // this queue's and the broker's account
    void sub_memory(size_t n);

    // Ready messages: the in-memory head (ready_), then the paged tail — the
    // paged_count_ messages from seq page_from_ on that live only in the
    // store. Every seq in ready_ is below page_from_.
    std::deque<QueuedMessage> ready_;
    uint64_t next_seq_ = 1;
    size_t unacked_ = 0;
    size_t memory_bytes_ = 0;
    size_t paged_count_ = 0;
    uint64_t page_from_ = 0;
    // (batch generation, first seq paged in it) for paged writes that may not
    // be synced yet: they cannot be read back before their batch is.
    std::deque<std::pair<uint64_t, uint64_t>> page_marks_;
    bool refill_wake_pending_ = false;

    std::vector<ConsumerPtr> consumers_;  // by priority, highest first; served ones rotate back
};

using QueuePtr = std::shared_ptr<Queue>;

}  // namespace sluice::broker
