// VHost::publish, the one way a message enters queues, and dead-lettering,
// which publishes through it.
#include <algorithm>

#include "broker/broker.hpp"
#include "broker/delayed_messages.hpp"
#include "broker/vhost.hpp"
#include "net/amqp/properties.hpp"
#include "storage/records.hpp"

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
    uint64_t now_ms = 0;
    DedupAdmit exchange_admit;
    bool durable_copy = false, transient_copy = false;
    // An exchange's deduplication window drops a duplicate before routing
    // (so it reaches no alternate exchange either); a key it has not seen
    // enters it, routed or not, as the plugin.
    if (DedupCache* window = exchange.dedup()) {
        const amqp::BasicProperties& props = *LazyProperties::get(&properties);
        if (window->key_of(props, dedup_key_)) {
            now_ms = broker_.now_ms();
            if (window->contains(dedup_key_, now_ms)) {
                ++broker_.stats().messages_deduplicated;
                result.duplicate = true;
                --publish_depth_;
                drain_dead_letters();
                return result;
            }
            // Its write waits until we know where the message goes.
            exchange_admit = admit_dedup(*window, props, now_ms);
            exchange_key_ = dedup_key_;
        }
    }
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
        // A queue whose window has the key does not take it (not a
        // "rejected": the publisher's confirm is an ack).
        std::erase_if(queues, [&](Queue* q) {
            DedupCache* window = q->dedup();
            if (!window) return false;
            const amqp::BasicProperties& props = *LazyProperties::get(&properties);
            if (!window->key_of(props, dedup_key_)) return false;
            if (now_ms == 0) now_ms = broker_.now_ms();
            if (window->contains(dedup_key_, now_ms)) {
                ++broker_.stats().messages_deduplicated;
                return true;
            }
            // A durable queue's window is durable: the key goes with the
            // message's entry in that queue (same batch).
            DedupAdmit admit = admit_dedup(*window, props, now_ms);
            if (msg->persistent()) write_dedup(*window, admit, dedup_key_, result);
            return false;
        });

        // Sequence numbers and expiries, then one write for the durable
        // queues, before any queue sees it (so an early ack finds it).
        Durability& durability = broker_.durability();
        const bool persist = msg->persistent() && durability.enabled();
        publish_targets_.clear();
        size_t stream_copies = 0;
        publish_entries_.clear();
        for (Queue* q : queues) {
            StoredEntry e{q, q->allocate_seq(), 0};
            if (msg->expiration_ms() >= 0 || q->features().message_ttl_ms) {
                if (now_ms == 0) now_ms = broker_.now_ms();
                e.expires_ms = q->expiry_for(*msg, now_ms);
            }
            publish_targets_.push_back(e);
            if (q->stream()) {
                result.stored = true;  // a stream stores every message itself
                ++stream_copies;
            } else if (persist && q->durable()) {
                publish_entries_.push_back(e);
            }
        }
        msg->spill_shared = publish_targets_.size() > 1;
        durability.store_message(msg, publish_entries_);
        result.stored = result.stored || !publish_entries_.empty();
        durable_copy = !publish_entries_.empty() || stream_copies > 0;
        transient_copy = publish_targets_.size() > publish_entries_.size() + stream_copies;
        size_t next_stored = 0;
        for (const StoredEntry& t : publish_targets_) {
            bool stored = next_stored < publish_entries_.size() && publish_entries_[next_stored].queue == t.queue;
            if (stored) ++next_stored;
            QueuedMessage qm{msg, t.seq, false, stored};
            qm.expires_ms = t.expires_ms;
            t.queue->publish(std::move(qm));
        }
    }
    // The exchange's key is as durable as the message: not when its only
    // copies are in transient queues (they are gone after a restart, and a
    // retry must then get in).
    if (exchange_admit.seq && msg->persistent() && (durable_copy || !transient_copy))
        write_dedup(*exchange.dedup(), exchange_admit, exchange_key_, result);
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

bool VHost::dedup_lookups(const Exchange& exchange, const MessagePtr& msg,
                          std::shared_ptr<std::vector<DedupLookup>>& out) {
    DedupCache* ex_window = exchange.dedup();
    if (!(ex_window && ex_window->spills()) && spilling_queue_windows_ == 0) return false;
    LazyProperties properties{msg.get(), {}, false};
    const uint64_t now_ms = broker_.now_ms();
    auto consult = [&](DedupCache& window) {
        // false: the key is a duplicate in memory (nothing to look up, and
        // an exchange's duplicate goes no further)
        const amqp::BasicProperties& props = *LazyProperties::get(&properties);
        if (!window.key_of(props, dedup_key_)) return true;
        if (window.contains(dedup_key_, now_ms)) return false;
        DedupLookup l;
        l.hash = DedupCache::hash_key(dedup_key_);
        window.disk_candidates(l.hash, l.generations);
        if (l.generations.empty()) return true;
        l.window = &window;
        l.alive = window.alive();
        l.index_prefix = storage::records::dedup_index_prefix(window.disk_prefix());
        l.key = dedup_key_;
        if (!out) out = std::make_shared<std::vector<DedupLookup>>();
        out->push_back(std::move(l));
        return true;
    };
    if (ex_window && ex_window->spills() && !consult(*ex_window)) return false;
    if (spilling_queue_windows_ > 0) {
        std::vector<Queue*> queues;
        route(exchange, msg->routing_key(), &LazyProperties::get, &properties, queues, msg->extra_routing_keys());
        for (Queue* q : queues)
            if (DedupCache* w = q->dedup(); w && w->spills()) consult(*w);
    }
    return out && !out->empty();
}

void VHost::finish_dedup_lookups(const std::vector<DedupLookup>& lookups) {
    const uint64_t now_ms = broker_.now_ms();
    for (const DedupLookup& l : lookups)
        if (l.found && !l.alive.expired()) l.window->promote(l.key, l.seq, l.expires_ms, now_ms);
}

DedupAdmit VHost::admit_dedup(DedupCache& window, const amqp::BasicProperties& properties, uint64_t now_ms) {
    DedupAdmit a;
    a.expires_ms = window.expiry_of(properties, now_ms);
    a.seq = window.insert(dedup_key_, a.expires_ms, now_ms);
    broker_.durability().trim_dedup(window);
    return a;
}

void VHost::write_dedup(DedupCache& window, const DedupAdmit& admit, std::string_view key, PublishResult& result) {
    if (window.disk_prefix().empty()) return;
    broker_.durability().put_dedup(window, admit.seq, admit.expires_ms, key);
    result.stored = true;  // the confirm waits for the key's batch
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
