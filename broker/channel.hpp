// One AMQP channel: its consumers and unacked deliveries, publisher confirms,
// content assembly (method → header → body frames → a Message), and the
// handlers for the exchange, queue, basic and confirm classes
// (channel_exchange_queue.cpp, channel_basic.cpp).
//
// Delivery tags count per channel from 1. Unacked deliveries are kept in tag
// order, so acks (usually of the oldest) are cheap.
//
// Thread-safety: owned by its Session; broker thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "broker/access_control.hpp"
#include "broker/amqp_error.hpp"
#include "broker/exchange.hpp"
#include "broker/message.hpp"
#include "broker/operations.hpp"
#include "broker/queue.hpp"
#include "broker/vhost.hpp"

namespace sluice::amqp::method {
struct ExchangeDeclare; struct ExchangeDelete; struct ExchangeBind; struct ExchangeUnbind;
struct QueueDeclare; struct QueueBind; struct QueueUnbind; struct QueuePurge; struct QueueDelete;
struct BasicQos; struct BasicConsume; struct BasicCancel; struct BasicPublish; struct BasicGet;
struct ConfirmSelect; struct ChannelFlow;
}  // namespace sluice::amqp::method

namespace sluice::broker {

class Session;
class VHost;

class Channel {
public:
    Channel(Session& session, VHost& vhost, uint16_t id);
    ~Channel();

    uint16_t id() const { return id_; }
    bool closing() const { return closing_; }
    // --- introspection (management API) -----------------------------------
    Session& session() const { return session_; }
    VHost& vhost() const { return vhost_; }
    const std::vector<ConsumerPtr>& consumers() const { return consumers_; }
    size_t unacked_count() const { return unacked_.size(); }
    uint32_t prefetch_count() const { return consumer_prefetch_; }
    uint32_t global_prefetch_count() const { return channel_prefetch_; }
    bool confirm_mode() const { return confirm_mode_; }
    bool tx_mode() const { return tx_mode_; }

    // A frame for this channel. Errors come back as values: soft ones close
    // the channel (the session sends channel.close), hard ones the connection.
    Status on_method(std::string_view payload);
    Status on_header(std::string_view payload);
    Status on_body(std::string_view payload);

    // Server-initiated close after a soft error; frames are then ignored
    // until the client's close-ok.
    void start_close(const AmqpError& error);
    // The channel goes away (close, close-ok or the connection's end):
    // consumers are cancelled, unacked messages requeued.
    void release();
    // First half of release(): consumers detach (no notification) so that
    // messages requeued by a closing connection skip its other channels.
    void detach_consumers();

    // --- used by Queue's dispatcher ----------------------------------------
    bool can_deliver(const Consumer& consumer) const;
    void deliver(const ConsumerPtr& consumer, QueuedMessage qm);
    // The queue was deleted under this consumer: basic.cancel to the client.
    void on_consumer_cancelled_by_broker(const ConsumerPtr& consumer);
    // Session output drained: retry dispatch on every consumed queue.
    void resume_consumers();
    // Direct reply-to: deliver a reply straight to this channel's consumer.
    bool deliver_reply(const MessagePtr& message);
    // Send the pending basic.ack for confirmed publishes (end of a batch).
    void flush_confirms();
    // consumer_timeout: 406 when the oldest unacked delivery has waited
    // longer than timeout_ms (delivery_timeout.cpp).
    Status check_delivery_timeout(uint32_t now_s, uint32_t timeout_ms) const;

private:
    struct Unacked {
        uint64_t tag;
        QueuePtr queue;
        ConsumerPtr consumer;  // null for basic.get
        QueuedMessage qm;
        uint32_t delivered_s = 0;  // Broker::now_s() at delivery (consumer timeout)
    };
    static uint64_t tag_of(const Unacked& u) { return u.tag; }
    static uint64_t tag_of(uint64_t t) { return t; }
    struct PendingPublish {
        std::string exchange;
        std::string routing_key;
        bool mandatory = false;
        bool active = false;           // basic.publish seen, content expected
        std::shared_ptr<Message> message;  // created at the header frame
    };

    // channel_exchange_queue.cpp
    Status exchange_declare(const amqp::method::ExchangeDeclare& m);
    Status exchange_delete(const amqp::method::ExchangeDelete& m);
    Status exchange_bind(const amqp::method::ExchangeBind& m);
    Status exchange_unbind(const amqp::method::ExchangeUnbind& m);
    Status queue_declare(const amqp::method::QueueDeclare& m);
    Status queue_bind(const amqp::method::QueueBind& m);
    Status queue_unbind(const amqp::method::QueueUnbind& m);
    Status queue_purge(const amqp::method::QueuePurge& m);
    Status queue_delete(const amqp::method::QueueDelete& m);
    // channel_basic.cpp
    Status basic_qos(const amqp::method::BasicQos& m);
    Status basic_consume(const amqp::method::BasicConsume& m);
    Status basic_cancel(const amqp::method::BasicCancel& m);
    Status basic_publish(const amqp::method::BasicPublish& m);
    Status basic_get(const amqp::method::BasicGet& m);
    Status basic_ack(uint64_t tag, bool multiple);
    Status basic_reject(uint64_t tag, bool multiple, bool requeue, bool nack);
    // How a delivery is settled: acked, requeued, or rejected (dead-lettered
    // when its queue has a dead-letter exchange).
    enum class Settlement { ack, requeue, reject };
    Status settle_tags(uint64_t tag, bool multiple, Settlement how, uint64_t& counter);
    Status basic_recover(bool requeue);
    Status confirm_select(const amqp::method::ConfirmSelect& m);
    Status channel_flow(const amqp::method::ChannelFlow& m);
    Status publish_complete();
    // The rest of a publish once its message is built (and its keys that
    // may be on disk looked up): tx hold, or route and confirm. `exchange`
    // is looked up again by name when not given (after a wait).
    Status publish_built(MessagePtr message, bool mandatory, const Exchange* exchange = nullptr);
    // Routes and enqueues (VHost::publish), returning it if unroutable and
    // mandatory; direct reply-to replies go straight to their channel.
    PublishResult route_message(const Exchange& exchange, const MessagePtr& message, bool mandatory);
    void on_synced(uint64_t seq, bool ok);
    // The store synced (or failed) batch generation `gen`: everything this
    // channel published into it is confirmable (one basic.ack multiple).
    void on_generation_synced(uint64_t gen, bool ok);
    // Sends a reply once every durable write so far is synced.
    void reply_after_sync(std::function<void()> reply);
    // reply_after_sync for durable entities, at once for the others.
    void reply_when_durable(bool durable, std::function<void()> reply);
    Status tx_method(uint32_t key);
    // Validates a tag settled inside a transaction and records it as settled.
    Status check_tag(uint64_t tag, bool multiple);
    void send_return(const Message& message, uint16_t code, std::string_view text);
    // The current publish's confirm: after the sync when it was stored; a
    // nack when a queue refused it.
    void confirm_publish(bool needs_sync, bool nack);

    // channel_access.cpp: the permission each method needs (RabbitMQ's
    // access-control table) and the vhost's queue limit; 403 / 406 values.
    Status check_access(Permission p, ResourceKind kind, std::string_view name);
    // This channel as broker/operations.hpp's checks see it.
    Caller caller();
    Status check_queue_access(Permission p, std::string_view queue);
    Status check_consume(std::string_view queue);
    // basic.publish: write on the exchange. The last exchange allowed is
    // remembered, so a publisher pays a string compare, not a regex.
    Status check_publish(std::string_view exchange) {
        return publish_access_.allows(exchange) ? Status{} : check_publish_access(exchange);
    }
    Status check_publish_access(std::string_view exchange);

    // Shared helpers.
    QueuePtr resolve_queue(std::string_view name, Status& error);
    std::string_view resolve_queue_name(std::string_view name) const;
    Status check_exclusive_access(const Queue& queue) const;
    void write_content(uint16_t class_id, const Message& message);
    // basic.deliver + content; counts the delivery; returns its tag.
    uint64_t write_delivery(std::string_view consumer_tag, bool redelivered, const Message& message);
    // Every unacked delivery back to its queue, marked redelivered.
    void requeue_unacked();
    void cancel_consumer(const ConsumerPtr& consumer, bool notify_client);
    void settle(Unacked& u, Settlement how);
    void maybe_auto_delete(const QueuePtr& queue);
    template <typename M>
    void send(const M& method);

    Session& session_;
    VHost& vhost_;
    uint16_t id_;
    bool closing_ = false;
    bool flow_active_ = true;

    PendingPublish publish_;
    std::string last_queue_;  // "" in queue methods means this one (spec)

    std::vector<ConsumerPtr> consumers_;
    std::deque<Unacked> unacked_;
    uint64_t next_delivery_tag_ = 1;
    uint32_t consumer_prefetch_ = 0;  // basic.qos global=false: for new consumers
    uint32_t channel_prefetch_ = 0;   // basic.qos global=true
    uint32_t channel_unacked_ = 0;    // deliveries counted against channel_prefetch_
    // Global qos limits classic queues' consumers only (RabbitMQ's limiter
    // does not see quorum queues).
    static bool under_global_limit(const Consumer& c) {
        return !c.queue || c.queue->features().type == QueueType::classic;
    }

    bool confirm_mode_ = false;
    uint64_t publish_seq_ = 0;        // last publish sequence number
    uint64_t confirmed_seq_ = 0;      // last one acked to the client
    uint64_t confirmable_seq_ = 0;    // every publish up to here may be acked
    std::deque<uint64_t> unsynced_;   // publishes waiting for their batch's sync
    std::deque<uint64_t> nacks_;      // those of them to nack (a queue refused them)
    // (batch generation, last publish seq in it): one sync callback per batch
    // this channel published into, not one per message.
    std::deque<std::pair<uint64_t, uint64_t>> sync_groups_;
    bool confirm_queued_ = false;

    // tx.select: publishes and settlements wait for tx.commit.
    struct TxPublish {
        MessagePtr message;
        bool mandatory;
    };
    struct TxSettle {
        uint64_t tag;
        bool multiple;
        bool requeue;
        enum Kind { ack, nack, reject } kind;
    };
    bool tx_mode_ = false;
    std::vector<TxPublish> tx_publishes_;
    std::vector<TxSettle> tx_settles_;
    std::unordered_set<uint64_t> tx_settled_tags_;  // settled in the open transaction
    uint64_t tx_settled_upto_ = 0;                  // ... and all tags up to here (multiple)

    // The last exchange basic.publish was allowed to write to, and the
    // AccessControl generation that said so (stale once it changes).
    struct PublishAccess {
        const uint64_t* current = nullptr;  // AccessControl's generation counter
        uint64_t generation = 0;
        std::string exchange;
        bool allows(std::string_view e) const { return current && *current == generation && exchange == e; }
    } publish_access_;

    std::string reply_token_;         // direct reply-to
    ConsumerPtr reply_consumer_;
    std::vector<QueuePtr> touched_;  // owning: settling may drop a deleted queue's last reference
    // The last basic.get waits for its queue's head to be read from disk
    // (Queue::head_ready_or_read; the session parses nothing meanwhile).
    bool waiting_get_again_ = false;
    // A publish waits for its deduplication keys to be looked up on disk
    // (VHost::dedup_lookups; the session parses nothing meanwhile).
    bool waiting_dedup_ = false;
    std::shared_ptr<char> alive_ = std::make_shared<char>(0);  // storage callbacks check it
};

}  // namespace sluice::broker
