// basic.*, confirm.* and channel.flow handlers: consume, publish, get,
// acknowledgements, publisher confirms, direct reply-to.
#include <algorithm>

#include "broker/broker.hpp"
#include "broker/channel_send.hpp"
#include "broker/sender_selected.hpp"
#include "broker/vhost.hpp"
#include "net/amqp/frame.hpp"
#include "net/amqp/properties.hpp"

namespace sluice::broker {

namespace m = amqp::method;

namespace {

constexpr std::string_view kReplyQueue = "amq.rabbitmq.reply-to";
constexpr std::string_view kReplyPrefix = "amq.rabbitmq.reply-to.";
constexpr uint16_t kReplyToFlag = 1u << 9;

uint16_t property_flags(std::string_view raw) {
    return raw.size() < 2 ? 0 : static_cast<uint16_t>((uint8_t(raw[0]) << 8) | uint8_t(raw[1]));
}

}  // namespace

Status Channel::basic_qos(const m::BasicQos& q) {
    if (q.prefetch_size != 0)
        return amqp_error(reply::not_implemented, "prefetch_size!=0 (" + std::to_string(q.prefetch_size) + ")");
    if (q.global) channel_prefetch_ = q.prefetch_count;
    else consumer_prefetch_ = q.prefetch_count;
    send(m::BasicQosOk{});
    resume_consumers();  // a larger window may allow more deliveries now
    return std::nullopt;
}

Status Channel::basic_consume(const m::BasicConsume& c) {
    if (Status st = check_consume(c.queue)) return st;
    std::string tag = c.consumer_tag.empty() ? session_.broker().unique_name("amq.ctag-") : std::string(c.consumer_tag);
    bool reused = std::any_of(consumers_.begin(), consumers_.end(),
                              [&](const ConsumerPtr& p) { return p->tag == tag; }) ||
                  (reply_consumer_ && reply_consumer_->tag == tag);
    if (reused) return amqp_error(reply::not_allowed, "attempt to reuse consumer tag '" + tag + "'");
    auto consumer = std::make_shared<Consumer>();
    consumer->tag = tag;
    consumer->channel = this;
    consumer->no_ack = c.no_ack;
    consumer->exclusive = c.exclusive;
    consumer->prefetch = consumer_prefetch_;
    consumer->arguments = c.arguments;
    if (const amqp::FieldValue* p = c.arguments.find("x-priority")) {
        auto v = p->as_int();
        if (!v) return amqp_error(reply::precondition_failed, "invalid arg 'x-priority': expected an integer");
        consumer->priority = *v;
    }

    if (c.queue == kReplyQueue) {
        if (!c.no_ack) return amqp_error(reply::precondition_failed, "reply consumer cannot acknowledge");
        if (reply_consumer_) return amqp_error(reply::precondition_failed, "reply consumer already set");
        reply_token_ = session_.broker().register_reply_channel(this);
        reply_consumer_ = std::move(consumer);
        if (!c.no_wait) {
            m::BasicConsumeOk ok;
            ok.consumer_tag = tag;
            send(ok);
        }
        return std::nullopt;
    }

    Status error;
    QueuePtr q = resolve_queue(c.queue, error);
    if (!q) return error;
    if (Status st = q->check_can_consume(c.exclusive)) return st;
    // RabbitMQ 3.10: a quorum queue refuses a consumer on a channel with a
    // global prefetch limit (a global basic.qos set after the consume is
    // accepted, and does not limit the quorum queue's deliveries).
    if (Stream* stream = q->stream()) {
        if (Status st = stream->check_consume(c.no_ack, consumer_prefetch_, channel_prefetch_, c.arguments)) return st;
    } else if (q->features().type == QueueType::quorum && channel_prefetch_ != 0)
        return amqp_error(reply::not_implemented,
                          "queue '" + q->name() + "' in vhost '" + vhost_.name() + "' does not support global qos");
    consumer->queue = q;
    consumers_.push_back(consumer);
    q->add_consumer(consumer);
    if (!c.no_wait) {
        m::BasicConsumeOk ok;
        ok.consumer_tag = tag;
        send(ok);
    }
    q->dispatch();
    return std::nullopt;
}

Status Channel::basic_cancel(const m::BasicCancel& c) {
    if (reply_consumer_ && reply_consumer_->tag == c.consumer_tag) {
        session_.broker().unregister_reply_channel(reply_token_);
        reply_token_.clear();
        reply_consumer_.reset();
    } else {
        auto it = std::find_if(consumers_.begin(), consumers_.end(),
                               [&](const ConsumerPtr& p) { return p->tag == c.consumer_tag; });
        if (it != consumers_.end()) {
            ConsumerPtr consumer = std::move(*it);
            consumers_.erase(it);
            cancel_consumer(consumer, false);
        }
    }
    if (!c.no_wait) {
        m::BasicCancelOk ok;
        ok.consumer_tag = c.consumer_tag;
        send(ok);
    }
    return std::nullopt;
}

Status Channel::basic_publish(const m::BasicPublish& p) {
    if (Status st = check_publish(p.exchange)) return st;
    if (p.immediate) return amqp_error(reply::not_implemented, "immediate=true");
    Exchange* ex = vhost_.find_exchange(p.exchange);
    if (!ex) return amqp_error(reply::not_found, vhost_.not_found_exchange(p.exchange));
    if (ex->internal())
        return amqp_error(reply::access_refused, "cannot publish to internal exchange '" + std::string(p.exchange) +
                                                     "' in vhost '" + vhost_.name() + "'");
    session_.note_publish();
    publish_.active = true;
    publish_.exchange.assign(p.exchange);
    publish_.routing_key.assign(p.routing_key);
    publish_.mandatory = p.mandatory;
    return std::nullopt;
}

Status Channel::publish_complete() {
    std::shared_ptr<Message> built = std::move(publish_.message);
    const bool mandatory = publish_.mandatory;
    publish_.active = false;
    if (confirm_mode_) ++publish_seq_;

    const Exchange* ex = vhost_.find_exchange(built->exchange());
    if (!ex)  // deleted while the content was arriving
        return AmqpError{reply::not_found, vhost_.not_found_exchange(built->exchange()), m::BasicPublish::key};

    const uint16_t flags = property_flags(built->properties());
    if (Status st = prepare_message(session_.user(), built)) {  // user_id, expiration, CC and BCC
        st->method = m::BasicPublish::key;
        return st;
    }
    MessagePtr msg = std::move(built);
    if (flags & kReplyToFlag) {
        amqp::BasicProperties props;
        if (amqp::decode_properties(msg->properties(), props) && props.reply_to == kReplyQueue) {
            if (reply_token_.empty())
                return AmqpError{reply::precondition_failed, "fast reply consumer does not exist",
                                 m::BasicPublish::key};
            props.reply_to = std::string(kReplyPrefix) + reply_token_;
            std::string raw;
            amqp::encode_properties(raw, props);
            // The token makes the header longer than the client sent it: it
            // must still fit one frame (class, weight, body size, properties).
            if (2 + 2 + 8 + raw.size() + amqp::kFrameOverhead > session_.frame_max())
                return AmqpError{reply::precondition_failed,
                                 "content header larger than frame_max once reply_to names the reply "
                                 "consumer",
                                 m::BasicPublish::key};
            auto rewritten = std::make_shared<Message>(msg->exchange(), msg->routing_key(), raw, msg->body_size());
            rewritten->append_body(msg->body());
            rewritten->set_extra_routing_keys(msg->extra_routing_keys());
            msg = std::move(rewritten);
        }
    }

    // A key that may be in the disk part of a durable deduplication window
    // is looked up on the store's read thread first; this connection's
    // frames wait meanwhile (as a basic.get's read), so what it publishes
    // next is routed, and confirmed, after this.
    std::shared_ptr<std::vector<DedupLookup>> lookups;
    if (vhost_.dedup_lookups(*ex, msg, lookups)) {
        waiting_dedup_ = true;
        session_.wait_for_read();
        session_.broker().durability().read_dedup_off_thread(
            lookups, [this, alive = std::weak_ptr<char>(alive_), lookups, msg, mandatory] {
                if (alive.expired()) return;  // the channel went (and resumed its session)
                waiting_dedup_ = false;
                vhost_.finish_dedup_lookups(*lookups);
                const uint16_t channel = id_;
                Session& session = session_;
                Status st = publish_built(msg, mandatory);
                // Its confirm (when it needs no sync) goes now: the session
                // flushes confirms at the end of its input, and there may
                // be no more input (a publisher waiting for this very ack).
                if (!st) flush_confirms();
                else session.report(channel, *st);  // may close this channel
                session.read_done();
            });
        return std::nullopt;
    }
    return publish_built(std::move(msg), mandatory, ex);
}

Status Channel::publish_built(MessagePtr msg, bool mandatory, const Exchange* ex) {
    if (!ex) ex = vhost_.find_exchange(msg->exchange());
    if (!ex)  // deleted while its keys were looked up
        return AmqpError{reply::not_found, vhost_.not_found_exchange(msg->exchange()), m::BasicPublish::key};
    if (tx_mode_) {  // held until tx.commit
        tx_publishes_.push_back(TxPublish{std::move(msg), mandatory});
        return std::nullopt;
    }
    PublishResult r = route_message(*ex, msg, mandatory);
    confirm_publish(r.stored, r.rejected);
    return std::nullopt;
}

PublishResult Channel::route_message(const Exchange& ex, const MessagePtr& msg, bool mandatory) {
    // Counted (published, routed) by publish_message, where a message enters
    // routing: not when it is refused before (user_id, expiration) or rolled
    // back with its transaction.
    PublishResult r = publish_message(vhost_, ex, msg);
    if (!r.routed && mandatory) send_return(*msg, reply::no_route, "NO_ROUTE");
    return r;
}

void Channel::send_return(const Message& message, uint16_t code, std::string_view text) {
    m::BasicReturn r;
    r.reply_code = code;
    r.reply_text = text;
    r.exchange = message.exchange();
    r.routing_key = message.routing_key();
    amqp::write_method(session_.output(), id_, r);
    write_content(m::BasicReturn::class_id, message);
    ++session_.broker().stats().messages_returned;
    session_.wrote_output();
}

void Channel::confirm_publish(bool needs_sync, bool nack) {
    if (!confirm_mode_) return;
    if (nack && unsynced_.empty()) {
        // Everything before it is confirmable: ack that, nack this one.
        confirmable_seq_ = publish_seq_ - 1;
        flush_confirms();
        m::BasicNack n;
        n.delivery_tag = publish_seq_;
        send(n);
        confirmed_seq_ = confirmable_seq_ = publish_seq_;
        return;
    }
    if (nack) nacks_.push_back(publish_seq_);  // answered in order, after those before it
    if (needs_sync || nack) {
        // Confirmed only once the batch holding it is synced. Publishes into
        // the same batch share one callback: the last one's seq moves up.
        unsynced_.push_back(publish_seq_);
        Durability& durability = session_.broker().durability();
        const uint64_t gen = durability.pending_generation();
        if (gen != 0 && !sync_groups_.empty() && sync_groups_.back().first == gen) {
            sync_groups_.back().second = publish_seq_;
            return;
        }
        sync_groups_.emplace_back(gen, publish_seq_);
        durability.after_sync([this, alive = std::weak_ptr<char>(alive_), gen](bool ok) {
            if (!alive.expired()) on_generation_synced(gen, ok);
        });
        return;
    }
    if (unsynced_.empty()) confirmable_seq_ = publish_seq_;  // else: when those before it sync
    if (confirm_queued_) return;
    confirm_queued_ = true;
    session_.mark_confirm_pending(this);
}

void Channel::on_generation_synced(uint64_t gen, bool ok) {
    uint64_t seq = 0;
    while (!sync_groups_.empty() && (sync_groups_.front().first <= gen || gen == 0)) {
        seq = sync_groups_.front().second;
        sync_groups_.pop_front();
        if (gen == 0) break;
    }
    if (seq != 0) on_synced(seq, ok);
}

void Channel::on_synced(uint64_t seq, bool ok) {
    while (!unsynced_.empty() && unsynced_.front() <= seq) {
        uint64_t s = unsynced_.front();
        unsynced_.pop_front();
        const bool refused = !nacks_.empty() && nacks_.front() == s;
        if (refused) nacks_.pop_front();
        if ((ok && !refused) || closing_) continue;
        // The write failed, or a queue refused it: ack what came before, nack this one.
        confirmable_seq_ = s - 1;
        flush_confirms();
        m::BasicNack nack;
        nack.delivery_tag = s;
        send(nack);
        confirmed_seq_ = s;
    }
    confirmable_seq_ = unsynced_.empty() ? publish_seq_ : unsynced_.front() - 1;
    flush_confirms();
}

void Channel::flush_confirms() {
    confirm_queued_ = false;
    if (confirmable_seq_ <= confirmed_seq_ || closing_) return;
    m::BasicAck ack;
    ack.delivery_tag = confirmable_seq_;
    ack.multiple = confirmable_seq_ - confirmed_seq_ > 1;
    session_.broker().stats().messages_confirmed += confirmable_seq_ - confirmed_seq_;
    confirmed_seq_ = confirmable_seq_;
    send(ack);
}

void Channel::reply_after_sync(std::function<void()> reply) {
    session_.broker().durability().after_sync(
        [this, alive = std::weak_ptr<char>(alive_), reply = std::move(reply)](bool ok) {
            if (alive.expired() || closing_) return;
            if (ok) reply();
            else session_.connection_error(amqp_error(reply::internal_error, "a durable write failed"));
        });
}

Status Channel::basic_get(const m::BasicGet& g) {
    if (Status st = check_queue_access(Permission::read, g.queue)) return st;
    Status error;
    QueuePtr q = resolve_queue(g.queue, error);
    if (!q) return error;
    if (q->stream())  // RabbitMQ: a stream is read by consumers only
        return amqp_error(reply::not_implemented, "basic.get not supported by stream queues queue '" + q->name() +
                                                      "' in vhost '" + vhost_.name() + "'");
    // The head is on disk: answer once it is read, without the broker
    // thread waiting; the session parses nothing of this connection meanwhile.
    const bool ready = q->head_ready_or_read(
        [this, alive = std::weak_ptr<char>(alive_), queue = std::string(g.queue), no_ack = g.no_ack] {
            if (alive.expired()) return;
            session_.broker().durability().post([this, alive, queue, no_ack] {
                if (alive.expired()) return;
                m::BasicGet again;
                again.queue = queue;
                again.no_ack = no_ack;
                const uint16_t channel = id_;
                Session& session = session_;
                waiting_get_again_ = false;  // basic_get sets it if it has to wait once more
                Status st = basic_get(again);
                const bool waits_again = !alive.expired() && waiting_get_again_;
                if (st) session.report(channel, *st);  // may close this channel
                if (!waits_again) session.read_done();
            });
        });
    waiting_get_again_ = !ready;
    if (!ready) {
        session_.wait_for_read();
        return std::nullopt;
    }
    auto qm = q->get(g.no_ack);
    auto& stats = session_.broker().stats();
    if (!qm) {
        ++stats.gets_empty;
        send(m::BasicGetEmpty{});
        return std::nullopt;
    }
    ++(g.no_ack ? stats.delivered_get_no_ack : stats.delivered_get_ack);
    const Message& msg = *qm->message;
    m::BasicGetOk ok;
    ok.delivery_tag = next_delivery_tag_++;
    ok.redelivered = qm->redelivered;
    ok.exchange = msg.exchange();
    ok.routing_key = msg.routing_key();
    ok.message_count = static_cast<uint32_t>(q->ready_count());
    amqp::write_method(session_.output(), id_, ok);
    write_content(m::BasicGetOk::class_id, msg);
    ++stats.messages_delivered;
    if (qm->redelivered) ++stats.messages_redelivered;
    if (!g.no_ack) unacked_.push_back(Unacked{ok.delivery_tag, q, nullptr, std::move(*qm), session_.broker().now_s()});
    else if (qm->stored) session_.broker().durability().remove_entry(*q, qm->seq);
    session_.wrote_output();
    return std::nullopt;
}

Status Channel::basic_ack(uint64_t tag, bool multiple) {
    if (tx_mode_) {
        if (Status st = check_tag(tag, multiple)) return st;
        tx_settles_.push_back(TxSettle{tag, multiple, false, TxSettle::ack});
        return std::nullopt;
    }
    return settle_tags(tag, multiple, Settlement::ack, session_.broker().stats().messages_acked);
}

Status Channel::basic_reject(uint64_t tag, bool multiple, bool requeue, bool nack) {
    if (tx_mode_) {
        if (Status st = check_tag(tag, multiple)) return st;
        tx_settles_.push_back(TxSettle{tag, multiple, requeue, nack ? TxSettle::nack : TxSettle::reject});
        return std::nullopt;
    }
    auto& stats = session_.broker().stats();
    return settle_tags(tag, multiple, requeue ? Settlement::requeue : Settlement::reject,
                       nack ? stats.messages_nacked : stats.messages_rejected);
}

Status Channel::settle_tags(uint64_t tag, bool multiple, Settlement how, uint64_t& counter) {
    auto unknown = [&] {
        return amqp_error(reply::precondition_failed, "unknown delivery tag " + std::to_string(tag));
    };
    touched_.clear();
    auto settle_one = [&](Unacked& u) {
        if (std::find(touched_.begin(), touched_.end(), u.queue) == touched_.end()) touched_.push_back(u.queue);
        if (how == Settlement::ack) ++u.queue->counters.acked;
        settle(u, how);
        ++counter;
    };
    if (multiple) {
        if (tag >= next_delivery_tag_) return unknown();
        // tag 0 with multiple: everything outstanding.
        while (!unacked_.empty() && (tag == 0 || unacked_.front().tag <= tag)) {
            settle_one(unacked_.front());
            unacked_.pop_front();
        }
    } else {
        // Consumers mostly ack in delivery order: the oldest first, no search.
        auto it = !unacked_.empty() && unacked_.front().tag == tag
                      ? unacked_.begin()
                      : std::lower_bound(unacked_.begin(), unacked_.end(), tag,
                                         [](const Unacked& u, uint64_t t) { return u.tag < t; });
        if (it == unacked_.end() || it->tag != tag) return unknown();
        settle_one(*it);
        if (it == unacked_.begin()) unacked_.pop_front();
        else unacked_.erase(it);
    }
    // Settling frees credit (and requeues add work): let the queues deliver.
    for (const QueuePtr& q : touched_) q->dispatch();
    touched_.clear();
    if (channel_prefetch_ != 0) resume_consumers();
    return std::nullopt;
}

Status Channel::basic_recover(bool requeue) {
    if (!requeue) return amqp_error(reply::not_implemented, "requeue=false");
    requeue_unacked();
    return std::nullopt;
}

Status Channel::check_tag(uint64_t tag, bool multiple) {
    // In a transaction a settled tag counts as gone at once, as in RabbitMQ:
    // settling it again is an unknown tag.
    bool settled_in_tx = !multiple && (tag <= tx_settled_upto_ || tx_settled_tags_.count(tag) > 0);
    bool known = multiple ? tag < next_delivery_tag_
                          : std::binary_search(unacked_.begin(), unacked_.end(), tag, [](const auto& a, const auto& b) {
                                return tag_of(a) < tag_of(b);
                            });
    if (!known || settled_in_tx) return amqp_error(reply::precondition_failed, "unknown delivery tag " + std::to_string(tag));
    if (multiple) tx_settled_upto_ = std::max(tx_settled_upto_, tag == 0 ? next_delivery_tag_ - 1 : tag);
    else tx_settled_tags_.insert(tag);
    return std::nullopt;
}

Status Channel::tx_method(uint32_t key) {
    if (key == m::TxSelect::key) {
        if (confirm_mode_)
            return amqp_error(reply::precondition_failed, "cannot switch from confirm to tx mode");
        tx_mode_ = true;
        send(m::TxSelectOk{});
        return std::nullopt;
    }
    if (!tx_mode_) return amqp_error(reply::precondition_failed, "channel is not transactional");
    std::vector<TxPublish> publishes;
    publishes.swap(tx_publishes_);
    std::vector<TxSettle> settles;
    settles.swap(tx_settles_);
    tx_settled_tags_.clear();
    tx_settled_upto_ = 0;
    if (key == m::TxRollback::key) {
        send(m::TxRollbackOk{});
        return std::nullopt;
    }
    for (const TxPublish& p : publishes) {
        const Exchange* ex = vhost_.find_exchange(p.message->exchange());
        if (!ex) return amqp_error(reply::not_found, vhost_.not_found_exchange(p.message->exchange()));
        (void)route_message(*ex, p.message, p.mandatory);  // a refused message is simply not enqueued
    }
    auto& stats = session_.broker().stats();
    for (const TxSettle& s : settles) {
        uint64_t& counter = s.kind == TxSettle::ack    ? stats.messages_acked
                            : s.kind == TxSettle::nack ? stats.messages_nacked
                                                       : stats.messages_rejected;
        const Settlement how = s.kind == TxSettle::ack ? Settlement::ack
                               : s.requeue             ? Settlement::requeue
                                                       : Settlement::reject;
        if (Status st = settle_tags(s.tag, s.multiple, how, counter)) return st;
    }
    // As RabbitMQ: commit-ok means the transaction's messages are on disk.
    reply_when_durable(true, [this] { send(m::TxCommitOk{}); });
    return std::nullopt;
}

Status Channel::confirm_select(const m::ConfirmSelect& c) {
    if (tx_mode_) return amqp_error(reply::precondition_failed, "cannot switch from tx to confirm mode");
    confirm_mode_ = true;
    if (!c.nowait) send(m::ConfirmSelectOk{});
    return std::nullopt;
}

Status Channel::channel_flow(const m::ChannelFlow& f) {
    flow_active_ = f.active;
    m::ChannelFlowOk ok;
    ok.active = f.active;
    send(ok);
    if (flow_active_) resume_consumers();
    return std::nullopt;
}

}  // namespace sluice::broker
