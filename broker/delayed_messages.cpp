#include "broker/delayed_messages.hpp"

#include <algorithm>

#include "broker/broker.hpp"
#include "broker/vhost.hpp"

namespace sluice::broker {

namespace {
// Due messages routed per turn before the rest wait for the next one (the
// event loop serves its connections in between).
constexpr size_t kRoutePerTurn = 4096;
}  // namespace

DelayedMessages::DelayedMessages(VHost& vhost, Exchange& exchange) : vhost_(vhost), exchange_(&exchange) {}

bool DelayedMessages::stored() const { return log_id_ != 0 && vhost_.broker().durability().enabled(); }

void DelayedMessages::recover(uint64_t id, uint64_t messages, uint64_t next_seq) {
    log_id_ = id;
    count_ = messages;
    next_seq_ = std::max<uint64_t>(next_seq, 1);
    window_.clear();
    bytes_ = 0;
    boundary_ = Key{0, 0};  // nothing is in memory
    if (count_ == 0) boundary_ = kEverything;
    maybe_refill();
}

void DelayedMessages::detach() {
    exchange_ = nullptr;
    window_.clear();
    bytes_ = 0;
}

bool DelayedMessages::hold(const MessagePtr& message, uint64_t due_ms) {
    const Key key{due_ms, next_seq_++};
    ++count_;
    const bool store = stored();
    if (store) {
        Durability& d = vhost_.broker().durability();
        d.hold_delayed(log_id_, key.due, key.seq, *message);
        count_changed();
    }
    if (key < boundary_) {
        insert(key, message);
        trim();
        if (!window_.empty() && window_.begin()->first == key) arm();
    } else if (reading_) {
        unseen_ = std::min(unseen_, key);  // the read out may not see it
    }
    return store;
}

void DelayedMessages::insert(Key key, MessagePtr message) {
    const size_t size = message->memory_size();
    if (window_.emplace(key, std::move(message)).second) bytes_ += size;
}

void DelayedMessages::trim() {
    if (!stored()) return;  // without a store, memory is the only copy
    const BrokerConfig& c = vhost_.broker().config();
    const size_t max_messages = std::max<size_t>(c.queue_memory_messages, 2);
    while (window_.size() > 1 && (window_.size() > max_messages || bytes_ > c.queue_memory_bytes)) {
        auto last = std::prev(window_.end());
        boundary_ = last->first;
        if (reading_) unseen_ = std::min(unseen_, last->first);
        bytes_ -= std::min(bytes_, last->second->memory_size());
        window_.erase(last);
    }
}

void DelayedMessages::count_changed() {
    vhost_.broker().durability().delay_log_changed(log_id_, count_, next_seq_);
}

void DelayedMessages::arm() {
    if (window_.empty() || !exchange_) return;
    const uint64_t due = window_.begin()->first.due;
    if (armed_ms_ != 0 && armed_ms_ <= due) return;
    armed_ms_ = due;
    vhost_.broker().timers().schedule(due, [weak = weak_from_this(), due] {
        auto self = weak.lock();
        if (!self || self->armed_ms_ != due) return;  // gone, or superseded by an earlier due time
        self->armed_ms_ = 0;
        self->on_due();
    });
}

void DelayedMessages::on_due() {
    if (!exchange_) return;
    auto self = shared_from_this();  // routing may delete the exchange
    Broker& broker = vhost_.broker();
    Durability& durability = broker.durability();
    const bool store = stored();
    const uint64_t now = broker.now_ms();
    size_t routed = 0;
    while (!window_.empty() && exchange_) {
        auto it = window_.begin();
        if (it->first.due > now) break;
        if (store && routed == kRoutePerTurn) {
            durability.post([weak = weak_from_this()] {
                if (auto s = weak.lock()) s->on_due();
            });
            break;
        }
        const Key key = it->first;
        MessagePtr message = std::move(it->second);
        bytes_ -= std::min(bytes_, message->memory_size());
        window_.erase(it);
        --count_;
        ++routed;
        // Out of the log in the batch that puts it in its queues.
        if (store) durability.release_delayed(log_id_, key.due, key.seq);
        vhost_.publish(*exchange_, message);
    }
    if (!exchange_) return;
    if (routed > 0 && store) count_changed();
    maybe_refill();
    arm();
}

void DelayedMessages::maybe_refill() {
    if (reading_ || boundary_ == kEverything || !exchange_ || !stored()) return;
    const BrokerConfig& c = vhost_.broker().config();
    const size_t max_messages = std::max<size_t>(c.queue_memory_messages, 2);
    if (window_.size() > max_messages / 2 || bytes_ > c.queue_memory_bytes / 2) return;
    reading_ = true;
    unseen_ = kEverything;
    const size_t want_bytes = std::max<size_t>(c.queue_memory_bytes - std::min(bytes_, c.queue_memory_bytes), 64u << 10);
    vhost_.broker().durability().read_delayed_off_thread(
        log_id_, boundary_.due, boundary_.seq, max_messages - window_.size(), want_bytes,
        [weak = weak_from_this()](DelayedRead& read) {
            if (auto self = weak.lock()) self->refilled(read);
        });
}

void DelayedMessages::refilled(DelayedRead& read) {
    reading_ = false;
    if (!exchange_) return;
    // What the read covers: up to its last key (everything, if it reached
    // the end), but not past a key that left memory while it was out.
    Key end = kEverything;
    if (!read.exhausted && !read.entries.empty()) end = Key{read.entries.back().due_ms, read.entries.back().seq + 1};
    end = std::min(end, unseen_);
    for (DelayedRead::Entry& e : read.entries) {
        const Key key{e.due_ms, e.seq};
        if (key >= end) break;
        if (key >= boundary_) insert(key, std::move(e.message));
    }
    boundary_ = std::max(boundary_, end);
    if (boundary_ == kEverything && count_ > window_.size()) {
        // The count says more than the log had (a record from before a
        // failed batch): believe the log.
        count_ = window_.size();
        if (stored()) count_changed();
    }
    trim();
    arm();
    maybe_refill();
}

}  // namespace sluice::broker
