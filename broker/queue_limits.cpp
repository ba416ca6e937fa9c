// The optional queue arguments at work: TTLs, queue expiry, length limits and
// dead-lettering (see queue.hpp).
#include <algorithm>

#include "broker/broker.hpp"
#include "broker/queue.hpp"
#include "broker/vhost.hpp"

namespace sluice::broker {

void Queue::start() {
    if (const auto& expires = options_.features.expires_ms) {
        touch();
        wake_at(last_used_ms_ + *expires);
    }
    schedule_head_expiry();  // recovered messages may carry expiries
}

void Queue::touch() {
    if (options_.features.expires_ms) last_used_ms_ = vhost_.broker().now_ms();
}

uint64_t Queue::expiry_for(const Message& message, uint64_t now_ms) const {
    int64_t ttl = message.expiration_ms();
    const auto& queue_ttl = options_.features.message_ttl_ms;
    if (queue_ttl && (ttl < 0 || static_cast<uint64_t>(ttl) > *queue_ttl)) ttl = static_cast<int64_t>(*queue_ttl);
    if (ttl < 0) return 0;
    return now_ms + static_cast<uint64_t>(ttl);
}

bool Queue::refuses(const Message& message) const {
    const QueueArguments& f = options_.features;
    if (f.overflow == Overflow::drop_head || stream_) return false;
    // As RabbitMQ: refused when accepting it would take the queue past a limit.
    return (f.max_length && ready_count() + 1 > *f.max_length) ||
           (f.max_length_bytes && ready_bytes_ + message.body_size() > *f.max_length_bytes);
}

void Queue::discard(QueuedMessage qm, DeathReason reason) {
    BrokerStats& stats = vhost_.broker().stats();
    if (reason == DeathReason::expired) {
        ++counters.expired;
        ++stats.messages_expired;
    } else if (reason == DeathReason::maxlen) {
        ++counters.dropped;
        ++stats.messages_dropped_maxlen;
    }
    vhost_.dead_letter(*this, qm.message, reason);  // if the queue has a dead-letter exchange
    if (qm.stored) vhost_.broker().durability().remove_entry(*this, qm.seq);
}

void Queue::expire_head(uint64_t now_ms, bool inclusive) {
    for (;;) {
        if (ready_.empty()) {
            refill();
            if (ready_.empty()) return;
        }
        const uint64_t expires = ready_.front().expires_ms;
        if (expires == 0 || expires > now_ms || (expires == now_ms && !inclusive)) return;
        QueuedMessage qm = std::move(ready_.front());
        ready_.pop_front();
        take(qm);
        discard(std::move(qm), DeathReason::expired);
    }
}

void Queue::enforce_length_limit() {
    const QueueArguments& f = options_.features;
    if (f.overflow != Overflow::drop_head) return;
    while ((f.max_length && ready_count() > *f.max_length) ||
           (f.max_length_bytes && ready_bytes_ > *f.max_length_bytes)) {
        if (ready_.empty()) refill();
        if (ready_.empty()) return;  // the head is still being synced to the page store
        QueuedMessage qm = std::move(ready_.front());
        ready_.pop_front();
        take(qm);
        discard(std::move(qm), DeathReason::maxlen);
    }
}

void Queue::schedule_head_expiry() {
    if (!ready_.empty() && ready_.front().expires_ms != 0) wake_at(ready_.front().expires_ms);
}

void Queue::wake_at(uint64_t deadline_ms) {
    if (deleted_ || (wake_ms_ != 0 && wake_ms_ <= deadline_ms)) return;
    wake_ms_ = deadline_ms;
    vhost_.broker().timers().schedule(deadline_ms, [weak = weak_from_this(), deadline_ms] {
        auto self = weak.lock();
        if (!self || self->wake_ms_ != deadline_ms) return;  // gone, or superseded by an earlier wake
        self->wake_ms_ = 0;
        self->on_timer();
    });
}

void Queue::on_timer() {
    if (deleted_) return;
    const uint64_t now = vhost_.broker().now_ms();
    if (const auto& expires = options_.features.expires_ms; expires && consumers_.empty()) {
        if (now >= last_used_ms_ + *expires) {
            vhost_.delete_queue(shared_from_this());  // unused for x-expires: gone, as RabbitMQ
            return;
        }
        wake_at(last_used_ms_ + *expires);
    }
    expire_head(now, true);
    if (!consumers_.empty()) dispatch();
    schedule_head_expiry();
}

}  // namespace sluice::broker
