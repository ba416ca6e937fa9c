// VHost::publish, the one way a message enters queues, and dead-lettering,
// which publishes through it.
#include <algorithm>

#include "broker/broker.hpp"
#include "broker/delayed_messages.hpp"
#include "broker/vhost.hpp"
#include "net/amqp/properties.hpp"

namespace sluice::broker {

namespace {

// A headers exchange (or a consistent-hash one on a header or property)
// needs the message's properties: decoded once, only then.
struct LazyProperties {
    const Message* message;
    amqp::BasicProperties props;
    bool decoded = false;

    static const amqp::BasicProperties* get(void* self) {
        auto* h = static_cast<LazyProperties*>(self);
        if (!h->decoded) {
            h->decoded = true;
            if (!amqp::decode_properties(h->message->properties(), h->props)) h->props = {};
        }
        return &h->props;
    }
};

}  // namespace

PublishResult VHost::publish(const Exchange& exchange, const MessagePtr& message) {
    return publish_routed(exchange, message, nullptr);
}

PublishResult VHost::publish_routed(const Exchange& exchange, const MessagePtr& msg, const PendingDeadLetter* dead) {
    PublishResult result;
    ++publish_depth_;
    std::vector<Queue*>& queues = publish_queues_;
    queues.clear();
    LazyProperties properties{msg.get(), {}, false};
    route(exchange, msg->routing_key(), &LazyProperties::get, &properties, queues, msg->extra_routing_keys());
    if (dead)
        std::erase_if(queues, [&](Queue* q) { return dead_letter_cycles(dead->letter.x_death, q->name(), dead->reason); });
    result.routed = !queues.empty();
    if (!route_holds_.empty()) {
        result.held = true;
        result.stored = hold_delayed(msg, *LazyProperties::get(&properties));
    }
    if (result.routed) {
        // Queues that refuse it (x-overflow reject-publish) are out first.
        std::erase_if(queues, [&](Queue* q) {
            if (!q->refuses(*msg)) return false;
            result.rejected = true;
            if (q->features().overflow == Overflow::reject_publish_dlx) dead_letter(*q, msg, DeathReason::maxlen);
            return true;
        });

        // Sequence numbers and expiries, then one write for the durable
        // queues, before any queue sees it (so an early ack finds it).
        Durability& durability = broker_.durability();
        const bool persist = msg->persistent() && durability.enabled();
        uint64_t now_ms = 0;
        publish_targets_.clear();
        publish_entries_.clear();
        for (Queue* q : queues) {
            StoredEntry e{q, q->allocate_seq(), 0};
            if (msg->expiration_ms() >= 0 || q->features().message_ttl_ms) {
                if (now_ms == 0) now_ms = broker_.now_ms();
                e.expires_ms = q->expiry_for(*msg, now_ms);
            }
            publish_targets_.push_back(e);
            if (q->stream()) result.stored = true;  // a stream stores every message itself
            else if (persist && q->durable()) publish_entries_.push_back(e);
        }
        durability.store_message(msg, publish_entries_);
        result.stored = result.stored || !publish_entries_.empty();
        size_t next_stored = 0;
        for (const StoredEntry& t : publish_targets_) {
            bool stored = next_stored < publish_entries_.size() && publish_entries_[next_stored].queue == t.queue;
            if (stored) ++next_stored;
            QueuedMessage qm{msg, t.seq, false, stored};
            qm.expires_ms = t.expires_ms;
            t.queue->publish(std::move(qm));
        }
    }
    --publish_depth_;
    drain_dead_letters();
    return result;
}

bool VHost::hold_delayed(const MessagePtr& msg, const amqp::BasicProperties& properties) {
    // As the plugin: the held copy's x-delay becomes -delay, so it is not
    // held again on its way (exchange-to-exchange bindings, dead-lettering)
    // and its consumers can tell it was delayed.
    std::vector<Hold> holds = route_holds_;  // hold() must not see a later route's
    const int64_t delay = holds.front().delay_ms;
    amqp::BasicProperties p = properties;
    if (!p.headers) p.headers.emplace();
    if (-delay >= INT32_MIN) p.headers->set("x-delay", amqp::FieldValue(static_cast<int32_t>(-delay)));
    else p.headers->set("x-delay", amqp::FieldValue(static_cast<int64_t>(-delay)));
    std::string raw;
    amqp::encode_properties(raw, p);
    auto held = std::make_shared<Message>(msg->exchange(), msg->routing_key(), raw, msg->body_size());
    held->append_body(msg->body());
    held->set_extra_routing_keys(msg->extra_routing_keys());
    MessagePtr copy = std::move(held);
    const uint64_t due = broker_.now_ms() + static_cast<uint64_t>(delay);
    bool needs_sync = false;
    for (const Hold& h : holds) {
        bool stored = h.exchange->delayed()->hold(copy, due);
        if (stored && msg->persistent() && h.exchange->durable()) needs_sync = true;
    }
    return needs_sync;
}

void VHost::dead_letter(Queue& from, const MessagePtr& message, DeathReason reason) {
    const QueueArguments& f = from.features();
    if (!f.dead_letter_exchange) return;
    ++from.counters.dead_lettered;
    ++broker_.stats().messages_dead_lettered;
    dead_letters_.push_back(PendingDeadLetter{
        make_dead_letter(*message, reason, from.name(), *f.dead_letter_exchange, f.dead_letter_routing_key,
                         broker_.now_s()),
        reason});
    drain_dead_letters();
}

void VHost::drain_dead_letters() {
    if (publish_depth_ > 0 || draining_dead_letters_) return;
    draining_dead_letters_ = true;
    while (!dead_letters_.empty()) {
        PendingDeadLetter dl = std::move(dead_letters_.front());
        dead_letters_.pop_front();
        // A missing dead-letter exchange drops the message, as RabbitMQ does.
        if (const Exchange* ex = find_exchange(dl.letter.message->exchange())) publish_routed(*ex, dl.letter.message, &dl);
    }
    draining_dead_letters_ = false;
}

}  // namespace sluice::broker
