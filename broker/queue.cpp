#include "broker/queue.hpp"

#include <algorithm>

#include "broker/broker.hpp"
#include "broker/channel.hpp"
#include "broker/vhost.hpp"

namespace sluice::broker {

Queue::Queue(VHost& vhost, std::string name, QueueOptions options, uint64_t owner, uint64_t id)
    : vhost_(vhost), name_(std::move(name)), id_(id), options_(std::move(options)), owner_(owner) {}

void Queue::publish(QueuedMessage qm) {
    ready_.push_back(std::move(qm));
    if (!consumers_.empty()) dispatch();
}

void Queue::restore_message(MessagePtr message, uint64_t seq) {
    // Whether it had been delivered is not recorded: every recovered message
    // is flagged redelivered, which the flag's meaning ("may have been
    // delivered before") allows.
    ready_.push_back(QueuedMessage{std::move(message), seq, true, true});
    next_seq_ = std::max(next_seq_, seq + 1);
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
    std::vector<uint64_t> stored;
    for (const auto& qm : ready_)
        if (qm.stored) stored.push_back(qm.seq);
    ready_.clear();
    vhost_.broker().durability().remove_entries(*this, stored);
    return n;
}

Status Queue::check_can_consume(bool exclusive) const {
    if (exclusive && !consumers_.empty())
        return amqp_error(reply::access_refused,
                          "queue '" + name_ + "' in vhost '" + vhost_.name() + "' in exclusive use");
    for (const auto& c : consumers_)
        if (c->exclusive)
            return amqp_error(reply::access_refused, "queue '" + name_ + "' in exclusive use");
    return std::nullopt;
}

void Queue::add_consumer(ConsumerPtr consumer) {
    // Sorted by priority, highest first; a new consumer goes behind its equals.
    auto pos = std::find_if(consumers_.begin(), consumers_.end(),
                            [&](const ConsumerPtr& c) { return c->priority < consumer->priority; });
    consumers_.insert(pos, std::move(consumer));
    had_consumer_ = true;
}

ConsumerPtr Queue::remove_consumer(const Consumer* consumer) {
    auto it = std::find_if(consumers_.begin(), consumers_.end(),
                           [&](const ConsumerPtr& c) { return c.get() == consumer; });
    if (it == consumers_.end()) return nullptr;
    ConsumerPtr removed = std::move(*it);
    consumers_.erase(it);
    return removed;
}

void Queue::dispatch() {
    if (dispatching_ || deleted_) return;
    dispatching_ = true;
    while (!ready_.empty() && !consumers_.empty()) {
        // The first consumer with credit in priority order; the one served
        // moves behind the others of its priority (round-robin within a
        // priority, RabbitMQ's consumer priorities across them).
        size_t n = consumers_.size();
        size_t idx = 0;
        while (idx < n && !consumers_[idx]->channel->can_deliver(*consumers_[idx])) ++idx;
        if (idx == n) break;
        QueuedMessage qm = std::move(ready_.front());
        ready_.pop_front();
        size_t band_end = idx + 1;
        while (band_end < n && consumers_[band_end]->priority == consumers_[idx]->priority) ++band_end;
        std::rotate(consumers_.begin() + static_cast<ptrdiff_t>(idx), consumers_.begin() + static_cast<ptrdiff_t>(idx) + 1,
                    consumers_.begin() + static_cast<ptrdiff_t>(band_end));
        const ConsumerPtr& consumer = consumers_[band_end - 1];  // deliver() does not touch consumers_
        if (!consumer->no_ack) ++unacked_;
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
