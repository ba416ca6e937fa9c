// A queue: ready messages in order, the consumers attached to it, and the
// dispatcher that hands ready messages to consumers with spare credit.
//
// Order: every message gets a sequence number when it enters the queue; a
// requeued message goes back to its own place (RabbitMQ's classic-queue
// behaviour; a quorum queue's gets a new number and goes to the back, as in
// RabbitMQ 3.10), so ready messages are always sorted by sequence number — or,
// in a priority queue (x-max-priority), by priority, highest first, then by
// sequence number.
//
// The optional arguments (queue_arguments.hpp) act here: message TTLs and
// queue expiry (timers through Broker::timers()), length limits with their
// overflow behaviours, dead-lettering of what the queue gives up on (through
// VHost::dead_letter), single active consumer, and the delivery limit of
// quorum queues. Those parts live in queue_limits.cpp.
//
// Thread-safety: a queue lives on the broker thread; everything that touches
// it runs there.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "broker/amqp_error.hpp"
#include "broker/dead_letter.hpp"
#include "broker/message.hpp"
#include "broker/queue_arguments.hpp"
#include "broker/queue_counters.hpp"
#include "broker/queue_flow.hpp"
#include "broker/stream.hpp"
#include "net/amqp/field_table.hpp"
#include "storage/spill_file.hpp"

namespace sluice::broker {

struct PagedRead;  // broker/durability.hpp
using PagedReadPtr = std::shared_ptr<PagedRead>;

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
    QueueArguments features;  // `arguments` parsed (VHost::declare_queue does it)
};

class Queue : public std::enable_shared_from_this<Queue> {
public:
    // `owner` is the connection that owns an exclusive queue (0 = none);
    // `id` names the queue's key range in the durable store.
    Queue(VHost& vhost, std::string name, QueueOptions options, uint64_t owner, uint64_t id);
    ~Queue();  // head_ready_or_read() callers still waiting are told

    const std::string& name() const { return name_; }
    uint64_t id() const { return id_; }
    VHost& vhost() const { return vhost_; }
    bool durable() const { return options_.durable; }
    bool exclusive() const { return options_.exclusive; }
    bool auto_delete() const { return options_.auto_delete; }
    const amqp::FieldTable& arguments() const { return options_.arguments; }
    const QueueArguments& features() const { return options_.features; }
    // Its deduplication window, null when it has none (dedup.hpp).
    DedupCache* dedup() const { return dedup_.get(); }
    uint64_t owner() const { return owner_; }
    bool deleted() const { return deleted_; }

    // A stream's "ready" messages are all it keeps (on disk: paged).
    size_t ready_count() const { return stream_ ? stream_->count() : ready_.size() + paged_count_; }
    size_t paged_count() const { return stream_ ? stream_->count() : paged_count_; }
    // Body bytes of the ready messages, paged ones included (x-max-length-bytes);
    // a stream's stored bytes.
    uint64_t ready_bytes() const { return stream_ ? stream_->bytes() : ready_bytes_; }
    size_t memory_bytes() const { return stream_ ? stream_->buffered_bytes() : memory_bytes_; }
    // The stream (x-queue-type stream: broker/stream.hpp), else null.
    Stream* stream() const { return stream_.get(); }
    // Seconds the message at the head has waited (0 when empty). Paged
    // messages count from when they were read back into memory.
    uint32_t head_age_s(uint32_t now_s) const {
        return ready_.empty() || now_s < ready_.front().enqueued_s ? 0 : now_s - ready_.front().enqueued_s;
    }
    size_t unacked_count() const { return stream_ ? stream_->unacked() : unacked_; }
    size_t consumer_count() const { return consumers_.size(); }
    const std::vector<ConsumerPtr>& consumers() const { return consumers_; }

    // The sequence number the next published message will get.
    uint64_t allocate_seq() { return next_seq_++; }
    // Appends a message (seq from allocate_seq, expires_ms from expiry_for)
    // and delivers what can be delivered.
    void publish(QueuedMessage qm);
    // When a message entering now expires here (Unix ms), 0 = never: the
    // sooner of its own expiration and the queue's x-message-ttl.
    uint64_t expiry_for(const Message& message, uint64_t now_ms) const;
    // x-overflow reject-publish(-dlx): true when this message does not fit.
    bool refuses(const Message& message) const;
    // A message recovered from the durable store at start: in memory, or
    // (restore_paged) left in the store until consumers get to it.
    void restore_message(MessagePtr message, uint64_t seq, uint64_t expires_ms);
    void restore_paged(uint64_t seq, uint64_t body_bytes);
    // The end of a turn: spill runs that no longer grow (all of them if
    // `all`) are written to the spill file. Returns the bytes written.
    size_t seal_runs(storage::SpillFile& spill, bool all);
    bool spill_registered() const { return spill_registered_; }
    // Starts the queue's timers (x-expires); once, right after construction.
    void start();
    // Whether a message of this size would stay in memory now.
    bool has_memory_room() const;
    // basic.get: the head of the queue, counted as unacked unless no_ack.
    std::optional<QueuedMessage> get(bool no_ack);
    // An unacked message comes back to its place, marked redelivered (or,
    // past a quorum queue's delivery limit, is dead-lettered).
    void requeue(QueuedMessage qm);
    // An unacked message was acked or dropped.
    void settle(const QueuedMessage& qm);
    // An unacked message was rejected (requeue=false): dead-lettered if the
    // queue has a dead-letter exchange, and gone.
    void reject(QueuedMessage qm);
    // The queue was used (declared again, basic.get): x-expires restarts.
    void touch();
    // Removes the ready messages; returns how many.
    size_t purge();

    // 403 if exclusivity forbids it.
    Status check_can_consume(bool exclusive) const;
    void add_consumer(ConsumerPtr consumer);
    // Returns the consumer (if it was attached).
    ConsumerPtr remove_consumer(const Consumer* consumer);
    // True once a consumer has come and all have gone (auto-delete's trigger).
    bool unused_after_consumers() const { return had_consumer_ && consumers_.empty(); }

    // Delivers ready messages to consumers with credit, round-robin (or to
    // the single active consumer).
    void dispatch();
    // x-single-active-consumer: the consumer that gets the messages (null if none).
    const Consumer* active_consumer() const {
        return options_.features.single_active_consumer && !consumers_.empty() ? consumers_.front().get() : nullptr;
    }

    // Called by VHost::delete_queue: detaches everything.
    std::vector<ConsumerPtr> mark_deleted();

    // Routing scratch: the vhost's routing pass de-duplicates with it.
    uint64_t route_mark = 0;
    // Totals for metrics (bumped on the hot path, read at scrape time).
    QueueCounters counters;
    // Samples for the capacity figures (queue_flow.hpp), taken by whoever
    // reads them: observation state, not the queue's, hence mutable.
    mutable QueueFlow flow;
    QueueCapacity capacity(int64_t now_ms, int64_t min_gap_ms) const {
        return flow.observe(now_ms, min_gap_ms, counters.published, ready_count() + unacked_count(),
                            consumer_count() > 0);
    }

    // basic.get without waiting on the disk: true if get() can answer at
    // once (the head is in memory, or nothing is paged); else the head's
    // read is started and `ready` runs when it is back, or when the queue
    // is deleted or destroyed first — possibly from inside another
    // operation, so `ready` must only schedule work, not do it.
    bool head_ready_or_read(std::function<void()> ready);

private:
    std::unique_ptr<DedupCache> dedup_;
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
    // A message leaves the ready list (delivered, dropped).
    void take(const QueuedMessage& qm) {
        sub_memory(qm.message->body_size());
        ready_bytes_ -= std::min<uint64_t>(ready_bytes_, qm.message->body_size());
    }
    // A quorum queue's deliveries carry x-delivery-count (how many times the
    // message came back), as RabbitMQ's do.
    void stamp_delivery(QueuedMessage& qm) const {
        if (options_.features.type == QueueType::quorum) qm.message = with_delivery_count(*qm.message, qm.returns);
    }
    // A quorum queue's requeue: the message goes behind every ready one.
    void requeue_at_back(QueuedMessage qm);
    // Puts a message in the ready list at its place (seq, or priority then seq).
    void insert_ready(QueuedMessage qm);
    uint8_t priority_of(const Message& m) const {
        return std::min(m.priority(), options_.features.max_priority);
    }
    // --- queue_limits.cpp ---------------------------------------------------
    // Gives up on a message that left the ready or unacked list: dead-letters
    // it when the queue has a dead-letter exchange; its stored entry goes.
    void discard(QueuedMessage qm, DeathReason reason);
    // Drops expired messages from the head; `inclusive` counts a message
    // expiring this very millisecond (TTL 0) as expired.
    void expire_head(uint64_t now_ms, bool inclusive);
    // x-max-length / x-max-length-bytes with drop-head: drops from the head.
    void enforce_length_limit();
    // Asks Broker::timers() for on_timer() at deadline_ms (keeps the earliest).
    void wake_at(uint64_t deadline_ms);
    void on_timer();
    // Arms the timer for the head's expiry, if it has one.
    void schedule_head_expiry();
    void add_memory(size_t n);  // this queue's and the broker's account
    void sub_memory(size_t n);

    // A run of the paged tail: consecutive (in this queue's order) messages
    // that left memory together. Stored runs are records in the queue's
    // log (storage/queue_log.hpp: readable at once, from memory until their
    // batch is synced); spilled runs are one extent of the spill file, or —
    // until the run is sealed (Queue::seal_runs) — the bytes in `pending`.
    //
    // A shared run (spilled and shared) refers to messages that several
    // queues paged out: one copy of each in the spill file, written by the
    // first queue that paged it out. Its messages are consecutive both in
    // this queue (seqs next_seq…last_seq, no expiry) and in the spill file
    // (`extent` covers their records back to back), so it costs no memory
    // per message and is read back in one read; `written` closes it (no
    // more messages join it once its read starts).
    struct PagedRun {
        uint64_t next_seq = 0;    // stored: the first seq not read back yet
        uint64_t last_seq = 0;
        size_t count = 0;         // messages not read back yet
        bool spilled = false;
        bool shared = false;
        bool written = false;     // spilled: `extent` holds the bytes
        storage::SpillExtent extent;
        std::string pending;
    };
    // Pages out a message that other queues hold too (PagedRun::shared);
    // false if it cannot be (it has an expiry).
    bool page_out_shared(const QueuedMessage& qm);
    // Whether this message can leave memory: a stored one always can (it
    // is in the queue's log), a transient one needs the spill file.
    bool can_page_out(const QueuedMessage& qm) const;
    // Moves a message from the ready list's tail to the paged tail.
    void page_out(QueuedMessage qm);
    // Counts a stored message (seq above every other paged one) in the
    // stored run at the back of the paged tail.
    void append_stored_run(uint64_t seq);
    // Reads the front run (or part of a stored one) back into ready_: at
    // once if its bytes are in memory, else off the broker thread (read_).
    // False if nothing could be started.
    bool start_read(size_t max_count);
    // The front run leaves the paged tail (read back, or found empty).
    void pop_front_run();
    // The read (read_) is back: its messages join ready_.
    void finish_read(PagedRead& read);
    // Then: read further, and serve what came in.
    void after_read();
    // Gives up the paged tail's spill extents (purge, delete).
    void drop_runs();

    // Ready messages: the in-memory head (ready_), then the paged tail
    // (runs_, paged_count_ messages). Every seq in ready_ is below every seq
    // in runs_.
    std::deque<QueuedMessage> ready_;
    uint64_t next_seq_ = 1;
    size_t unacked_ = 0;
    size_t memory_bytes_ = 0;
    size_t paged_count_ = 0;
    uint64_t ready_bytes_ = 0;
    std::deque<PagedRun> runs_;
    PagedReadPtr read_;  // the read of the front run in flight, if any
    std::vector<std::function<void()>> head_waiters_;  // head_ready_or_read() callers waiting for read_
    void run_head_waiters();
    bool spill_registered_ = false;  // on Durability's list of queues with an open spill run
    uint64_t wake_ms_ = 0;       // the deadline asked of the broker's timers (0 = none)
    uint64_t arriving_seq_ = 0;  // the message Queue::publish is dispatching (its expiry not checked)
    uint64_t last_used_ms_ = 0;  // x-expires: last declare, get or consumer
    uint64_t recovered_below_ = 0;  // seqs below this were recovered at start: redelivered when read back

    // By priority, highest first; served ones rotate back. With a single
    // active consumer: in the order they came, the first one active.
    std::vector<ConsumerPtr> consumers_;
    std::unique_ptr<Stream> stream_;  // a stream queue's log and readers
};

using QueuePtr = std::shared_ptr<Queue>;

}  // namespace sluice::broker
