#include "broker/queue.hpp"

#include <algorithm>

#include "broker/channel.hpp"

namespace sluice::broker {

Queue::Queue(VHost& vhost, std::string name, QueueOptions options, uint64_t owner)
    : vhost_(vhost), name_(std::move(name)), options_(std::move(options)), owner_(owner) {}

void Queue::publish(MessagePtr message) {
    ready_.push_back(QueuedMessage{std::move(message), next_seq_++, false});
    if (!consumers_.empty()) dispatch();
}

std::optional<QueuedMessage> Queue::get(bool no_ack) {
    if (ready_.empty()) return std::nullopt;
    QueuedMessage qm = std::move(ready_.front());
    ready_.pop_front();
    if (!no_ack) ++unacked_;
    return qm;
}

void Queue::requeue(QueuedMessage qm) {
    if (unacked_ > 0) --unacked_;
    if (deleted_) return;
    qm.redelivered = true;
    auto pos = std::upper_bound(ready_.begin(), ready_.end(), qm.seq,
                                [](uint64_t seq, const QueuedMessage& m) { return seq < m.seq; });
    ready_.insert(pos, std::move(qm));
}

void Queue::settle(const QueuedMessage&) {
    if (unacked_ > 0) --unacked_;
}

size_t Queue::purge() {
    size_t n = ready_.size();
    ready_.clear();
    return n;
}

Status Queue::check_can_consume(bool exclusive) const {
    if (exclusive && !consumers_.empty())
        return amqp_error(reply::access_refused,
                          "queue '" + name_ + "' in vhost '" + "/" + "' in exclusive use");
    for (const auto& c : consumers_)
        if (c->exclusive)
            return amqp_error(reply::access_refused, "queue '" + name_ + "' in exclusive use");
    return std::nullopt;
}

void Queue::add_consumer(ConsumerPtr consumer) {
    consumers_.push_back(std::move(consumer));
    had_consumer_ = true;
}

ConsumerPtr Queue::remove_consumer(const Consumer* consumer) {
    auto it = std::find_if(consumers_.begin(), consumers_.end(),
                           [&](const ConsumerPtr& c) { return c.get() == consumer; });
    if (it == consumers_.end()) return nullptr;
    ConsumerPtr removed = std::move(*it);
    size_t index = static_cast<size_t>(it - consumers_.begin());
    consumers_.erase(it);
    if (next_consumer_ > index) --next_consumer_;
    if (next_consumer_ >= consumers_.size()) next_consumer_ = 0;
    return removed;
}

void Queue::dispatch() {
    if (dispatching_ || deleted_) return;
    dispatching_ = true;
    while (!ready_.empty() && !consumers_.empty()) {
        // Next consumer (round-robin) with credit; stop when none has any.
        const ConsumerPtr* chosen = nullptr;
        size_t n = consumers_.size();
        for (size_t i = 0; i < n; ++i) {
            size_t idx = (next_consumer_ + i) % n;
            const ConsumerPtr& c = consumers_[idx];
            if (c->channel->can_deliver(*c)) {
                chosen = &c;
                next_consumer_ = (idx + 1) % n;
                break;
            }
        }
        if (!chosen) break;
        QueuedMessage qm = std::move(ready_.front());
        ready_.pop_front();
        if (!(*chosen)->no_ack) ++unacked_;
        const ConsumerPtr& consumer = *chosen;  // deliver() does not touch consumers_
        consumer->channel->deliver(consumer, std::move(qm));
    }
    dispatching_ = false;
}

std::vector<ConsumerPtr> Queue::mark_deleted() {
    deleted_ = true;
    ready_.clear();
    std::vector<ConsumerPtr> out;
    out.swap(consumers_);
    return out;
}

}  // namespace sluice::broker
