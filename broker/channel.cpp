// Channel core: method dispatch, content assembly, delivery, settlement and
// close. The per-class handlers are in channel_exchange_queue.cpp and
// channel_basic.cpp.
#include "broker/channel.hpp"

#include <algorithm>

#include "broker/broker.hpp"
#include "broker/channel_send.hpp"
#include "broker/session.hpp"
#include "broker/vhost.hpp"
#include "net/amqp/delivery.hpp"
#include "net/amqp/frame.hpp"
#include "net/amqp/methods.hpp"
#include "net/amqp/properties.hpp"

namespace sluice::broker {

namespace m = amqp::method;

namespace {

// RabbitMQ strips CR and LF from the queue and exchange names of declare,
// delete, bind and unbind (rabbit_channel's strip_cr_lf); so does Sluice,
// pointing the name at a cleaned copy in `store` only when it has any.
void strip_cr_lf(std::string_view& name, std::string& store) {
    if (name.find_first_of("\r\n") == std::string_view::npos) return;
    store.clear();
    for (char c : name)
        if (c != '\r' && c != '\n') store.push_back(c);
    name = store;
}

void strip_names(amqp::Method& method, std::string (&store)[2]) {
    std::visit(
        [&](auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, m::ExchangeDeclare> || std::is_same_v<T, m::ExchangeDelete>) {
                strip_cr_lf(x.exchange, store[0]);
            } else if constexpr (std::is_same_v<T, m::ExchangeBind> || std::is_same_v<T, m::ExchangeUnbind>) {
                strip_cr_lf(x.destination, store[0]);
                strip_cr_lf(x.source, store[1]);
            } else if constexpr (std::is_same_v<T, m::QueueDeclare> || std::is_same_v<T, m::QueueDelete>) {
                strip_cr_lf(x.queue, store[0]);
            } else if constexpr (std::is_same_v<T, m::QueueBind> || std::is_same_v<T, m::QueueUnbind>) {
                strip_cr_lf(x.queue, store[0]);
                strip_cr_lf(x.exchange, store[1]);
            }
        },
        method);
}

}  // namespace

Channel::Channel(Session& session, VHost& vhost, uint16_t id) : session_(session), vhost_(vhost), id_(id) {}

Channel::~Channel() {
    release();
    // A basic.get waiting for a read paused the session's parsing: a channel
    // that goes first must not leave it paused.
    if (waiting_get_again_ || waiting_dedup_) session_.read_done();
}

Status Channel::on_method(std::string_view payload) {
    if (payload.size() < 4) return amqp_error(reply::frame_error, "method frame shorter than its class and method ids");
    // The most frequent methods, straight to their handlers: no variant of
    // every method to build and tear down. A malformed one takes the
    // general path below, which reports it.
    if (!publish_.active) {
        const uint32_t key = amqp::peek_method_key(payload);
        const std::string_view args = payload.substr(4);
        bool decoded = false;
        Status st;
        if (key == m::BasicAck::key) {
            m::BasicAck a;
            if ((decoded = amqp::decode_arguments(args, a) == amqp::DecodeError::none))
                st = basic_ack(a.delivery_tag, a.multiple);
        } else if (key == m::BasicPublish::key) {
            m::BasicPublish p;
            if ((decoded = amqp::decode_arguments(args, p) == amqp::DecodeError::none)) st = basic_publish(p);
        }
        if (decoded) {
            if (st && st->method == 0) st->method = key;
            return st;
        }
    }
    amqp::Method method;
    auto err = amqp::decode_method(payload, method);
    uint32_t key = amqp::peek_method_key(payload);
    if (err == amqp::DecodeError::unknown_method)
        return AmqpError{reply::not_implemented,
                         "unknown method " + std::to_string(key >> 16) + "/" + std::to_string(key & 0xffff),
                         key};
    if (err == amqp::DecodeError::truncated || err == amqp::DecodeError::trailing_bytes) return cannot_decode(payload);
    if (err != amqp::DecodeError::none)
        return AmqpError{reply::syntax_error, "malformed '" + std::string(amqp::method_name(key)) + "'", key};
    if (publish_.active)
        return AmqpError{reply::unexpected_frame,
                         "expected a content header for basic.publish, got '" +
                             std::string(amqp::method_name(key)) + "'",
                         key};
    std::string stripped[2];
    strip_names(method, stripped);
    Status st;
    switch (key) {
        case m::BasicPublish::key: st = basic_publish(std::get<m::BasicPublish>(method)); break;
        case m::BasicAck::key: {
            auto& a = std::get<m::BasicAck>(method);
            st = basic_ack(a.delivery_tag, a.multiple);
            break;
        }
        case m::BasicNack::key: {
            auto& n = std::get<m::BasicNack>(method);
            st = basic_reject(n.delivery_tag, n.multiple, n.requeue, true);
            break;
        }
        case m::BasicReject::key: {
            auto& r = std::get<m::BasicReject>(method);
            st = basic_reject(r.delivery_tag, false, r.requeue, false);
            break;
        }
        case m::BasicConsume::key: st = basic_consume(std::get<m::BasicConsume>(method)); break;
        case m::BasicCancel::key: st = basic_cancel(std::get<m::BasicCancel>(method)); break;
        case m::BasicGet::key: st = basic_get(std::get<m::BasicGet>(method)); break;
        case m::BasicQos::key: st = basic_qos(std::get<m::BasicQos>(method)); break;
        case m::BasicRecover::key:
            st = basic_recover(std::get<m::BasicRecover>(method).requeue);
            if (!st) send(m::BasicRecoverOk{});
            break;
        case m::BasicRecoverAsync::key: st = basic_recover(std::get<m::BasicRecoverAsync>(method).requeue); break;
        case m::ExchangeDeclare::key: st = exchange_declare(std::get<m::ExchangeDeclare>(method)); break;
        case m::ExchangeDelete::key: st = exchange_delete(std::get<m::ExchangeDelete>(method)); break;
        case m::ExchangeBind::key: st = exchange_bind(std::get<m::ExchangeBind>(method)); break;
        case m::ExchangeUnbind::key: st = exchange_unbind(std::get<m::ExchangeUnbind>(method)); break;
        case m::QueueDeclare::key: st = queue_declare(std::get<m::QueueDeclare>(method)); break;
        case m::QueueBind::key: st = queue_bind(std::get<m::QueueBind>(method)); break;
        case m::QueueUnbind::key: st = queue_unbind(std::get<m::QueueUnbind>(method)); break;
        case m::QueuePurge::key: st = queue_purge(std::get<m::QueuePurge>(method)); break;
        case m::QueueDelete::key: st = queue_delete(std::get<m::QueueDelete>(method)); break;
        case m::ConfirmSelect::key: st = confirm_select(std::get<m::ConfirmSelect>(method)); break;
        case m::ChannelFlow::key: st = channel_flow(std::get<m::ChannelFlow>(method)); break;
        case m::ChannelFlowOk::key: break;
        case m::TxSelect::key:
        case m::TxCommit::key:
        case m::TxRollback::key: st = tx_method(key); break;
        default:
            st = amqp_error(reply::command_invalid,
                            "'" + std::string(amqp::method_name(key)) + "' is not valid on a channel from a client");
    }
    if (st && st->method == 0) st->method = key;
    return st;
}

Status Channel::on_header(std::string_view payload) {
    if (!publish_.active || publish_.message)
        return amqp_error(reply::unexpected_frame, "content header frame without a basic.publish before it");
    amqp::ContentHeader h;
    if (!amqp::decode_content_header(payload, h))
        return amqp_error(reply::frame_error, "malformed content header frame");
    if (h.class_id != m::BasicPublish::class_id)
        return amqp_error(reply::unexpected_frame, "content header for class " + std::to_string(h.class_id) +
                                                       ", expected class 60 (basic)");
    const uint64_t max = session_.broker().config().max_message_size;
    if (h.body_size > max) {
        publish_ = PendingPublish{};
        return AmqpError{reply::precondition_failed,
                         "message size " + std::to_string(h.body_size) + " is larger than configured max size " +
                             std::to_string(max),
                         m::BasicPublish::key};
    }
    publish_.message = std::make_shared<Message>(publish_.exchange, publish_.routing_key, h.properties, h.body_size);
    if (h.body_size == 0) return publish_complete();
    return std::nullopt;
}

Status Channel::on_body(std::string_view payload) {
    if (!publish_.active || !publish_.message)
        return amqp_error(reply::unexpected_frame, "content body frame without a content header before it");
    Message& msg = *publish_.message;
    if (msg.body().size() + payload.size() > msg.body_size())
        return amqp_error(reply::frame_error, "content body is larger than the header's body size " +
                                                  std::to_string(msg.body_size()));
    msg.append_body(payload);
    if (msg.body_complete()) return publish_complete();
    return std::nullopt;
}

void Channel::start_close(const AmqpError& error) {
    release();
    m::ChannelClose close;
    std::string text = error.reply_text();
    close.reply_code = error.code;
    close.reply_text = text;
    close.failing_class_id = static_cast<uint16_t>(error.method >> 16);
    close.failing_method_id = static_cast<uint16_t>(error.method & 0xffff);
    send(close);
    closing_ = true;
}

void Channel::detach_consumers() {
    for (const ConsumerPtr& c : consumers_) {
        if (c->queue) c->queue->remove_consumer(c.get());
    }
}

void Channel::release() {
    publish_ = PendingPublish{};
    std::vector<ConsumerPtr> consumers;
    consumers.swap(consumers_);
    for (const ConsumerPtr& c : consumers) cancel_consumer(c, false);
    if (!reply_token_.empty()) {
        session_.broker().unregister_reply_channel(reply_token_);
        reply_token_.clear();
        reply_consumer_.reset();
    }
    requeue_unacked();
}

void Channel::requeue_unacked() {
    // In reverse, so each queue's inserts land near its head cheaply; order
    // is restored by sequence numbers either way.
    std::deque<Unacked> unacked;
    unacked.swap(unacked_);
    std::vector<QueuePtr> touched;
    for (auto it = unacked.rbegin(); it != unacked.rend(); ++it) {
        settle(*it, Settlement::requeue);
        if (std::find(touched.begin(), touched.end(), it->queue) == touched.end()) touched.push_back(it->queue);
    }
    for (const QueuePtr& q : touched) q->dispatch();
}

void Channel::cancel_consumer(const ConsumerPtr& consumer, bool notify_client) {
    if (notify_client && session_.client_has_capability("consumer_cancel_notify")) {
        m::BasicCancel cancel;
        cancel.consumer_tag = consumer->tag;
        cancel.no_wait = true;
        send(cancel);
    }
    QueuePtr queue = consumer->queue;
    if (!queue) return;
    queue->remove_consumer(consumer.get());
    maybe_auto_delete(queue);
}

void Channel::maybe_auto_delete(const QueuePtr& queue) {
    if (queue->auto_delete() && !queue->deleted() && queue->unused_after_consumers())
        queue->vhost().delete_queue(queue);
}

void Channel::on_consumer_cancelled_by_broker(const ConsumerPtr& consumer) {
    auto it = std::find(consumers_.begin(), consumers_.end(), consumer);
    if (it == consumers_.end()) return;
    consumers_.erase(it);
    if (session_.client_has_capability("consumer_cancel_notify")) {
        m::BasicCancel cancel;
        cancel.consumer_tag = consumer->tag;
        cancel.no_wait = true;
        send(cancel);
    }
}

void Channel::resume_consumers() {
    for (size_t i = 0; i < consumers_.size(); ++i)
        if (consumers_[i]->queue) consumers_[i]->queue->dispatch();
}

bool Channel::can_deliver(const Consumer& c) const {
    if (!flow_active_ || closing_ || session_.output_full()) return false;
    if (c.no_ack) return true;
    if (c.prefetch != 0 && c.unacked >= c.prefetch) return false;
    if (channel_prefetch_ != 0 && channel_unacked_ >= channel_prefetch_ && under_global_limit(c)) return false;
    return true;
}

void Channel::write_content(uint16_t class_id, const Message& msg) {
    amqp::write_content(session_.output(), id_, class_id, msg.properties(), msg.body_size(), msg.body(),
                        session_.frame_max() - amqp::kFrameOverhead);
}

void Channel::deliver(const ConsumerPtr& consumer_ptr, QueuedMessage qm) {
    Consumer& consumer = *consumer_ptr;
    const Message& msg = *qm.message;
    const uint64_t tag = write_delivery(consumer.tag, qm.redelivered, msg);
    auto& stats = session_.broker().stats();
    ++(consumer.no_ack ? stats.delivered_consume_no_ack : stats.delivered_consume_ack);
    if (consumer.no_ack) {
        if (qm.stored) session_.broker().durability().remove_entry(*consumer.queue, qm.seq);
    } else {  // the queue counted it as unacked too
        ++consumer.unacked;
        if (under_global_limit(consumer)) ++channel_unacked_;
        unacked_.push_back(Unacked{tag, consumer.queue, consumer_ptr, std::move(qm), session_.broker().now_s()});
    }
    session_.wrote_output();
}

bool Channel::deliver_reply(const MessagePtr& message) {
    // A reply consumer that stopped reading does not make the broker hold
    // every reply sent to it: past its output limit the reply is unroutable.
    if (!reply_consumer_ || closing_ || session_.output_over_limit()) return false;
    write_delivery(reply_consumer_->tag, false, *message);
    ++session_.broker().stats().delivered_consume_no_ack;  // direct reply-to consumes with no_ack
    session_.wrote_output();
    return true;
}

uint64_t Channel::write_delivery(std::string_view consumer_tag, bool redelivered, const Message& msg) {
    m::BasicDeliver d;
    d.consumer_tag = consumer_tag;
    d.delivery_tag = next_delivery_tag_++;
    d.redelivered = redelivered;
    d.exchange = msg.exchange();
    d.routing_key = msg.routing_key();
    amqp::write_deliver(session_.output(), id_, d, msg.properties(), msg.body_size(), msg.body(),
                        session_.frame_max() - amqp::kFrameOverhead);
    auto& stats = session_.broker().stats();
    ++stats.messages_delivered;
    if (redelivered) ++stats.messages_redelivered;
    return d.delivery_tag;
}

void Channel::settle(Unacked& u, Settlement how) {
    if (u.consumer) {  // basic.get deliveries count against no prefetch window
        if (u.consumer->unacked > 0) --u.consumer->unacked;
        if (channel_unacked_ > 0 && under_global_limit(*u.consumer)) --channel_unacked_;
    }
    if (how == Settlement::requeue) {
        u.queue->requeue(std::move(u.qm));
        return;
    }
    if (how == Settlement::reject) {
        u.queue->reject(std::move(u.qm));
        return;
    }
    u.queue->settle(u.qm);
    if (u.qm.stored && !u.queue->deleted())
        session_.broker().durability().remove_entry(*u.queue, u.qm.seq);
}

}  // namespace sluice::broker
