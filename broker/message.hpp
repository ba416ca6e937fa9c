// A published message: immutable once built, shared by every queue it is
// routed to (a fanout to N queues holds one Message and N references).
//
// One allocation holds exchange, routing key, encoded properties and body, so
// a message costs two heap blocks (this object + its bytes) however many
// queues hold it. Properties stay encoded exactly as the publisher sent them
// and are re-sent untouched.
//
// Thread-safety: immutable after construction; the reference count is atomic,
// so a message may be handed to another thread's queue.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::broker {

class Message {
public:
    // The body arrives later through append_body(). Memory grows with the
    // body frames that actually arrive (never more than body_size in all), so
    // a header announcing a large body costs nothing until its bytes come.
    Message(std::string_view exchange, std::string_view routing_key, std::string_view properties,
            uint64_t body_size);

    std::string_view exchange() const { return {data_.data(), exchange_len_}; }
    std::string_view routing_key() const { return {data_.data() + exchange_len_, routing_key_len_}; }
    std::string_view properties() const {
        return {data_.data() + exchange_len_ + routing_key_len_, properties_len_};
    }
    std::string_view body() const { return std::string_view(data_).substr(body_offset()); }
    uint64_t body_size() const { return body_size_; }
    bool body_complete() const { return data_.size() - body_offset() == body_size_; }
    // delivery_mode 2 (as peeked from the properties at construction).
    bool persistent() const { return persistent_; }
    uint8_t priority() const { return priority_; }
    // The expiration property as a per-message TTL in milliseconds: -1 when
    // absent, kInvalidExpiration when it is not a non-negative integer.
    int64_t expiration_ms() const { return expiration_ms_; }
    static constexpr int64_t kInvalidExpiration = -2;
    static int64_t parse_expiration(std::string_view text);
    // Bytes this message holds in memory (for accounting).
    size_t memory_size() const { return sizeof(*this) + data_.capacity(); }

    // Only while the message is being assembled (before it is shared).
    void append_body(std::string_view chunk);

    // Sender-selected distribution (sender_selected.hpp): the routing keys
    // its CC and BCC headers named when it was published, routed with
    // besides routing_key(). Empty for nearly every message, and then free.
    const std::vector<std::string>& extra_routing_keys() const;
    // Only while the message is being built (before it is shared).
    void set_extra_routing_keys(std::vector<std::string> keys);

    // Durable bookkeeping (broker thread only): the id of its shared stored
    // body (0 = each stored entry holds the message inline).
    mutable uint64_t body_id = 0;
    // Paging (broker thread only): routed to more than one queue, a message
    // goes to the spill file once, the first time a queue pages it out;
    // other queues that page it out refer to those bytes (Queue::page_out).
    mutable bool spill_shared = false;
    mutable uint32_t spill_segment = 0, spill_length = 0;  // length 0: not spilled
    mutable uint64_t spill_offset = 0;

private:
    size_t body_offset() const { return size_t{exchange_len_} + routing_key_len_ + properties_len_; }

    std::string data_;
    std::unique_ptr<const std::vector<std::string>> extra_routing_keys_;  // null = none
    uint64_t body_size_;
    uint32_t properties_len_;
    uint8_t exchange_len_;
    uint8_t routing_key_len_;
    bool persistent_ = false;
    uint8_t priority_ = 0;
    int64_t expiration_ms_ = -1;
};

using MessagePtr = std::shared_ptr<const Message>;

// A message's place in one queue.
struct QueuedMessage {
    MessagePtr message;
    uint64_t seq = 0;          // position in the queue; requeued messages keep it
    bool redelivered = false;
    bool stored = false;       // also in the durable store (persistent, durable queue)
    uint32_t enqueued_s = 0;   // Broker::now_s() when it entered (or came back to) memory
    uint32_t returns = 0;      // times it came back unacked (quorum queues' delivery count)
    uint64_t expires_ms = 0;   // Unix ms when it expires (message or queue TTL); 0 = never
};

class Queue;

// One queue's entry for a message being stored (Durability::store_message).
struct StoredEntry {
    Queue* queue = nullptr;
    uint64_t seq = 0;
    uint64_t expires_ms = 0;  // 0 = never
};

}  // namespace sluice::broker
