// The messages an x-delayed-message exchange holds until they are due
// (RabbitMQ's rabbitmq_delayed_message_exchange; docs/delayed-messages.md).
//
// Semantics, as the plugin: a message whose `x-delay` header is a delay in
// (0, 2^32-1] ms (exchange.hpp, x_delay) is held, its header replaced by
// -delay (so that it is not held again on its way, and its consumers can
// tell), and at its due time it is routed through the exchange's bindings
// *as they are then* (and the exchange's alternate exchange when none
// matches). Due messages go in due-time order, ties in publish order.
//
// Where they are: with a store, every held message is written to the
// exchange's delay log in the batch of the turn that held it (`msgs`, key
// log id | due ms | seq: storage/records.hpp), so the log is in due-time
// order on disk. A persistent message to a durable exchange is confirmed
// once that batch is synced; others are held at once (they are in the batch
// all the same, so they survive a restart if it synced, as the plugin keeps
// every delayed message in a disc table). Memory holds only the earliest
// window: every held message with a key below `boundary_` is in `window_`,
// and at most BrokerConfig::queue_memory_messages / _bytes of them. When the
// window runs below half, the next keys are read back from the log on the
// store's read thread, after the batches written so far are synced (so the
// read sees every message held so far); the broker thread never reads the
// store. A due message is removed from the log in the same batch that
// enqueues it into its queues: a crash loses or duplicates nothing.
// Without a store everything is in memory.
//
// The log id comes from the queue ids' space; a durable exchange's id, count
// and next seq are in its 'd' record (Durability), written with every batch
// that changes them, so recovery knows the count without reading the log,
// and reads only the window.
//
// Thread-safety: broker thread only.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <memory>

#include "broker/message.hpp"

namespace sluice::broker {

class Exchange;
class VHost;
struct DelayedRead;

class DelayedMessages : public std::enable_shared_from_this<DelayedMessages> {
public:
    DelayedMessages(VHost& vhost, Exchange& exchange);

    // The exchange's delay log in the store (0: none, no store).
    uint64_t log_id() const { return log_id_; }
    uint64_t next_seq() const { return next_seq_; }
    // A new exchange's (empty) log.
    void set_log(uint64_t id) { log_id_ = id; }
    // Recovery: the log holds `messages`, none of them in memory yet; the
    // window is read back (off the broker thread) and due ones routed.
    void recover(uint64_t id, uint64_t messages, uint64_t next_seq);
    // Holds `message` (its x-delay already replaced) until due_ms. Returns
    // whether it was written to the store in this turn's batch.
    bool hold(const MessagePtr& message, uint64_t due_ms);
    // The exchange is gone: nothing more is routed.
    void detach();

    // Held messages (RabbitMQ's messages_delayed), those in memory and
    // their bytes.
    uint64_t count() const { return count_; }
    size_t in_memory() const { return window_.size(); }
    size_t memory_bytes() const { return bytes_; }

private:
    struct Key {
        uint64_t due = 0, seq = 0;
        auto operator<=>(const Key&) const = default;
    };
    static constexpr Key kEverything{UINT64_MAX, UINT64_MAX};

    bool stored() const;
    void insert(Key key, MessagePtr message);
    // Over the memory budget: the latest keys leave memory (they are in the
    // log) and the boundary comes down to them.
    void trim();
    void arm();
    void on_due();
    void maybe_refill();
    void refilled(DelayedRead& read);
    void count_changed();

    VHost& vhost_;
    Exchange* exchange_;  // null once detached
    uint64_t log_id_ = 0;
    uint64_t next_seq_ = 1;
    uint64_t count_ = 0;
    std::map<Key, MessagePtr> window_;
    size_t bytes_ = 0;
    Key boundary_ = kEverything;  // every held message with a smaller key is in window_
    bool reading_ = false;
    Key unseen_ = kEverything;    // the least key that left memory while a read was out
    uint64_t armed_ms_ = 0;
};

}  // namespace sluice::broker
