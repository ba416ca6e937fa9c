// A virtual host: its exchanges, queues and the bindings between them, and
// the routing pass that turns (exchange, routing key, headers) into queues.
//
// Declares, deletes and binds validate as RabbitMQ does and answer with its
// reply codes and texts (AmqpError values, never exceptions).
//
// Thread-safety: broker thread only.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "broker/amqp_error.hpp"
#include "broker/dead_letter.hpp"
#include "broker/exchange.hpp"
#include "broker/queue.hpp"

namespace sluice::broker {

struct DedupLookup;

class Broker;

// Heterogeneous lookup by string_view, so the publish path never builds a
// std::string to find an exchange or a queue.
struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

struct ExchangeOptions {
    ExchangeType type = ExchangeType::direct;
    bool durable = false;
    bool auto_delete = false;
    bool internal = false;
    amqp::FieldTable arguments;
};

template <typename T>
using Result = std::variant<T, AmqpError>;

// A key a deduplication window has just admitted: its place and expiry.
struct DedupAdmit {
    uint64_t seq = 0;  // 0: none
    uint64_t expires_ms = 0;
};

struct PublishResult {
    bool routed = false;    // some queue matched (else: unroutable, returned if mandatory)
    bool held = false;      // an x-delayed-message exchange holds it (routed when due; not "routed" now, as the plugin)
    bool stored = false;    // written to the store: its confirm waits for the sync
    bool rejected = false;  // a queue refused it (x-overflow reject-publish): nack it
    bool duplicate = false; // the exchange's deduplication window had its key: dropped, not routed
};

class VHost {
public:
    VHost(Broker& broker, std::string name);
    ~VHost();

    const std::string& name() const { return name_; }
    Broker& broker() const { return broker_; }

    Exchange* find_exchange(std::string_view name) const;
    QueuePtr find_queue(std::string_view name) const;
    const StringMap<std::unique_ptr<Exchange>>& exchanges() const { return exchanges_; }
    const StringMap<QueuePtr>& queues() const { return queues_; }

    // exchange.declare (not passive): creates, or checks equivalence.
    Result<Exchange*> declare_exchange(std::string_view name, const ExchangeOptions& options);
    Status delete_exchange(std::string_view name, bool if_unused);

    // queue.declare (not passive). `owner` is the declaring connection.
    // `created` says whether the queue is new.
    Result<QueuePtr> declare_queue(std::string_view name, QueueOptions options, uint64_t owner,
                                   bool& created);
    // Deletes the queue: its consumers are cancelled (each channel is told),
    // its bindings removed. Returns the number of ready messages it had.
    size_t delete_queue(const QueuePtr& queue);

    Status bind_queue(std::string_view queue, std::string_view exchange, std::string_view key,
                      const amqp::FieldTable& args);
    Status unbind_queue(std::string_view queue, std::string_view exchange, std::string_view key,
                        const amqp::FieldTable& args);
    Status bind_exchange(std::string_view destination, std::string_view source, std::string_view key,
                         const amqp::FieldTable& args);
    Status unbind_exchange(std::string_view destination, std::string_view source, std::string_view key,
                           const amqp::FieldTable& args);

    // Appends to `out` each queue that `message`, published to `exchange`,
    // reaches (through exchange-to-exchange bindings too), each once.
    // An x-delayed-message exchange on the path that holds the message (its
    // x-delay is positive) is not routed through: it is in holds() after.
    // `properties` are decoded lazily by the caller's callback only when an
    // exchange on the path reads them (headers, consistent-hash on a header
    // or property). `extra_keys` (CC and BCC,
    // sender_selected.hpp) are routed with at every exchange besides
    // `routing_key`; an exchange hands the message to its alternate only
    // when no key selects anything.
    void route(const Exchange& exchange, std::string_view routing_key,
               const amqp::BasicProperties* (*properties)(void*), void* properties_ctx, std::vector<Queue*>& out,
               const std::vector<std::string>& extra_keys = {});

    struct Hold {
        const Exchange* exchange;
        int64_t delay_ms;
    };
    const std::vector<Hold>& holds() const { return route_holds_; }

    // The one publish path (AMQP channels, the HTTP API, dead-lettering):
    // routes `message` from `exchange`, writes it once for the durable
    // queues it reaches if persistent, and enqueues it.
    PublishResult publish(const Exchange& exchange, const MessagePtr& message);
    // Before a channel publishes `message` from `exchange`: the keys that
    // may be in the disk part of a durable window (dedup.hpp) it meets —
    // the exchange's, then those of the queues it routes to — into `out`
    // (made only then: nothing is allocated on a publish that needs none).
    // None: publish now. Else the channel has them looked up off the broker
    // thread (Durability::read_dedup_off_thread) and waits; then
    // finish_dedup_lookups brings what was found into the windows' memory,
    // and publish() sees it.
    bool dedup_lookups(const Exchange& exchange, const MessagePtr& message,
                       std::shared_ptr<std::vector<DedupLookup>>& out);
    void finish_dedup_lookups(const std::vector<DedupLookup>& lookups);
    // Queue `from` gives up on `message`: re-publish it to the queue's
    // dead-letter exchange (dropping it where that would close a cycle).
    // Deferred to the end of a publish in progress, so publishing never
    // re-enters itself.
    void dead_letter(Queue& from, const MessagePtr& message, DeathReason reason);

    // Recovery: recreate durable entities without writing them again.
    void restore_exchange(const std::string& name, const ExchangeOptions& options);
    QueuePtr restore_queue(const std::string& name, QueueOptions options, uint64_t id);

    std::string not_found_queue(std::string_view name) const;
    std::string not_found_exchange(std::string_view name) const;

private:
    void declare_builtin(std::string name, ExchangeType type, bool internal = false);
    // A durable object's deduplication window gets its place in the store.
    void attach_dedup(Exchange& exchange);
    void attach_dedup(Queue& queue);
    // A key (dedup_key_) not in `window` (dedup.hpp) enters it.
    DedupAdmit admit_dedup(DedupCache& window, const amqp::BasicProperties& properties, uint64_t now_ms);
    // Writes an admitted key of a durable window with the batch gathering
    // now; `result.stored` then says the confirm waits for it.
    void write_dedup(DedupCache& window, const DedupAdmit& admit, std::string_view key, PublishResult& result);
    // 406 when `arguments` names another alternate exchange than `ex` has.
    Status alternate_exchange_inequivalence(const Exchange& ex, const amqp::FieldTable& arguments) const;
    // A headers exchange refuses a binding whose x-match it does not know, a
    // consistent-hash one a key that is not a weight (406).
    static Status check_binding(const Exchange& source, std::string_view key, const amqp::FieldTable& args);
    // Deletes an auto-delete exchange once its last binding is gone.
    void maybe_auto_delete(Exchange* exchange);
    void remove_exchange_bindings(Exchange* exchange);
    // Both ends of an exchange-to-exchange binding, or the error (403, 404).
    Status exchange_pair(std::string_view destination, std::string_view source, Exchange*& dst, Exchange*& src) const;
    // Writes (or removes) the record of a binding when both its ends are durable.
    void persist_binding(const Exchange& source, const Binding& binding, bool add);

    struct PendingDeadLetter {
        DeadLetter letter;
        DeathReason reason;
    };
    PublishResult publish_routed(const Exchange& exchange, const MessagePtr& message, const PendingDeadLetter* dead);
    void drain_dead_letters();

    Broker& broker_;
    std::string name_;
    // publish() scratch, reused.
    std::string dedup_key_, exchange_key_;
    std::vector<Queue*> publish_queues_;
    std::vector<StoredEntry> publish_targets_;  // every queue it enters: seq, expiry
    std::vector<StoredEntry> publish_entries_;  // those of them that store it
    int publish_depth_ = 0;
    // Queues of this vhost whose window spills to disk: publish routes
    // twice (once for dedup_lookups) only when there are some.
    size_t spilling_queue_windows_ = 0;
    bool draining_dead_letters_ = false;
    std::deque<PendingDeadLetter> dead_letters_;
    StringMap<std::unique_ptr<Exchange>> exchanges_;
    StringMap<QueuePtr> queues_;
    uint64_t route_epoch_ = 0;
    std::vector<Destination> route_scratch_;
    std::vector<Exchange*> route_exchanges_;
    std::vector<Hold> route_holds_;
    // publish(): the held copy of `msg` (x-delay replaced by -delay) goes to
    // each exchange in holds(); returns whether one of them must be synced
    // before its confirm.
    bool hold_delayed(const MessagePtr& msg, const amqp::BasicProperties& properties);
    // A new x-delayed-message exchange's held messages (its log id: 0 at
    // recovery, which sets it).
    void attach_delayed(Exchange& exchange, bool recovering);
};

}  // namespace sluice::broker
