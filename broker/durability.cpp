#include "broker/durability.hpp"

#include <algorithm>
#include <chrono>
#include <unordered_map>

#include "broker/broker.hpp"
#include "broker/executor.hpp"
#include "broker/vhost.hpp"
#include "net/amqp/field_table.hpp"
#include "net/amqp/wire.hpp"

namespace sluice::broker {

using storage::Column;

namespace {

constexpr uint8_t kEntryInline = 1;
constexpr uint8_t kEntryBodyRef = 2;
constexpr uint8_t kEntryPage = 3;  // a transient message paged out of memory
constexpr uint8_t kEntryExpires = 0x80;  // flag on the kind: a u64 expiry (Unix ms) follows it

// An entry's value split up: kind, expiry, and what follows them.
struct EntryView {
    uint8_t kind = 0;
    uint64_t expires_ms = 0;
    std::string_view rest;  // inline/page: the encoded message; body ref: the u64 body id
    bool ok = false;
};

EntryView parse_entry(std::string_view value) {
    EntryView e;
    if (value.empty()) return e;
    uint8_t kind = static_cast<uint8_t>(value[0]);
    size_t at = 1;
    if (kind & kEntryExpires) {
        if (value.size() < 9) return e;
        e.expires_ms = storage::read_u64_key(value, 1);
        at = 9;
    }
    e.kind = kind & ~kEntryExpires;
    e.rest = value.substr(at);
    e.ok = e.kind != kEntryBodyRef || e.rest.size() >= 8;
    return e;
}

void put_entry_kind(std::string& out, uint8_t kind, uint64_t expires_ms) {
    if (expires_ms == 0) {
        amqp::put_u8(out, kind);
        return;
    }
    amqp::put_u8(out, kind | kEntryExpires);
    storage::append_u64_key(out, expires_ms);
}

void put_name(std::string& out, std::string_view s) { amqp::put_shortstr(out, s.substr(0, 255)); }

std::string exchange_key(const VHost& v, std::string_view name) {
    std::string k = "e";
    put_name(k, v.name());
    put_name(k, name);
    return k;
}

std::string queue_key(const VHost& v, std::string_view name) {
    std::string k = "q";
    put_name(k, v.name());
    put_name(k, name);
    return k;
}

std::string binding_key(const VHost& v, const Exchange& source, const Binding& b) {
    std::string k = "b";
    put_name(k, v.name());
    put_name(k, source.name());
    if (b.destination.queue) {
        k.push_back('q');
        put_name(k, b.destination.queue->name());
    } else {
        k.push_back('e');
        put_name(k, b.destination.exchange->name());
    }
    put_name(k, b.key);
    amqp::encode_table(k, b.arguments);
    return k;
}

// exchange, routing key, properties, body — as a queue entry or a shared body.
// The header is everything before the properties' bytes.
void encode_message_header(std::string& out, const Message& m) {
    put_name(out, m.exchange());
    put_name(out, m.routing_key());
    amqp::put_u32(out, static_cast<uint32_t>(m.properties().size()));
}

void encode_message(std::string& out, const Message& m) {
    encode_message_header(out, m);
    out.append(m.properties());
    out.append(m.body());
}

MessagePtr decode_message(std::string_view in) {
    amqp::WireReader r(in);
    auto exchange = r.shortstr();
    auto routing_key = r.shortstr();
    auto props = r.longstr();
    if (!r.ok()) return nullptr;
    auto body = in.substr(r.position());
    auto m = std::make_shared<Message>(exchange, routing_key, props, body.size());
    m->append_body(body);
    return m;
}

uint64_t queue_upper(uint64_t id) { return id + 1; }

}  // namespace

Durability::~Durability() { *alive_ = false; }

void Durability::attach(storage::Store* store, Executor* executor) {
    store_ = store;
    executor_ = executor;
    if (store_) batch_ = store_->new_batch();
}

void Durability::shutdown() {
    if (store_) {
        // Let the commit in flight finish (its callback posts to the
        // executor, which is still alive), then write the gathering batch
        // after it: one ordered stream of batches to the end.
        store_->wait_idle();
        if (!batch_.empty()) {
            storage::Batch batch = std::move(batch_);
            batch_ = store_->new_batch();
            store_->commit_now(std::move(batch));
        }
    }
    store_ = nullptr;
    executor_ = nullptr;
    waiters_.clear();
    in_flight_waiters_.clear();
}

void Durability::after_sync(std::function<void(bool)> fn) {
    if (!store_) {
        fn(true);
        return;
    }
    if (batch_.empty() && !commit_in_flight_) {
        fn(true);  // nothing unsynced is ahead of this
        return;
    }
    if (batch_.empty()) in_flight_waiters_.push_back(std::move(fn));
    else waiters_.push_back(std::move(fn));
}

void Durability::schedule_commit() {
    if (commit_scheduled_ || commit_in_flight_) return;
    commit_scheduled_ = true;
    // At the end of this turn of the event loop: everything the current
    // reads produce joins one batch.
    executor_->post([this, alive = std::weak_ptr<bool>(alive_)] {
        if (alive.expired()) return;
        commit_scheduled_ = false;
        start_commit();
    });
}

void Durability::start_commit() {
    if (commit_in_flight_ || batch_.empty()) return;
    commit_in_flight_ = true;
    in_flight_waiters_ = std::move(waiters_);
    waiters_.clear();
    storage::Batch batch = std::move(batch_);
    batch_ = store_->new_batch();
    in_flight_generation_ = gathering_generation_++;
    // The callback runs on the commit thread: it touches nothing of this
    // object but hands the result to the broker thread (shutdown() waits for
    // it before the executor goes away).
    store_->commit(std::move(batch), [this, executor = executor_, alive = std::weak_ptr<bool>(alive_)](std::string error) {
        executor->post([this, alive, error = std::move(error)] {
            if (!alive.expired()) on_committed(error);
        });
    });
}

void Durability::on_committed(const std::string& error) {
    commit_in_flight_ = false;
    synced_generation_ = in_flight_generation_;
    std::vector<std::function<void(bool)>> done;
    done.swap(in_flight_waiters_);
    bool ok = error.empty();
    for (auto& fn : done) fn(ok);
    start_commit();  // the batch that gathered meanwhile
    if (on_caught_up_ && !backlogged()) on_caught_up_();
}

void Durability::put_exchange(const VHost& v, const Exchange& e) {
    if (recovering_ || !store_ || !e.durable()) return;
    std::string value;
    amqp::put_u8(value, static_cast<uint8_t>(e.type()));
    amqp::put_u8(value, static_cast<uint8_t>((e.auto_delete() ? 1 : 0) | (e.internal() ? 2 : 0)));
    amqp::encode_table(value, e.arguments());
    batch_.put(Column::meta, exchange_key(v, e.name()), value);
    schedule_commit();
}

void Durability::remove_exchange(const VHost& v, const Exchange& e) {
    if (!store_ || !e.durable()) return;
    batch_.remove(Column::meta, exchange_key(v, e.name()));
    schedule_commit();
}

void Durability::put_queue(const VHost& v, const Queue& q) {
    if (recovering_ || !store_ || !q.durable() || q.exclusive()) return;
    std::string value;
    amqp::put_u64(value, q.id());
    amqp::put_u8(value, q.auto_delete() ? 1 : 0);
    amqp::encode_table(value, q.arguments());
    batch_.put(Column::meta, queue_key(v, q.name()), value);
    schedule_commit();
}

void Durability::remove_queue(const VHost& v, const Queue& q) {
    if (!store_ || !q.durable() || q.exclusive()) return;
    release_bodies_from(q, 0);
    batch_.remove(Column::meta, queue_key(v, q.name()));
    batch_.remove_range(Column::msgs, storage::message_key_of(q.id(), 0), storage::message_key_of(queue_upper(q.id()), 0));
    schedule_commit();
}

void Durability::put_binding(const VHost& v, const Exchange& source, const Binding& b) {
    if (recovering_ || !store_) return;
    batch_.put(Column::meta, binding_key(v, source, b), "");
    schedule_commit();
}

void Durability::remove_binding(const VHost& v, const Exchange& source, const Binding& b) {
    if (!store_) return;
    batch_.remove(Column::meta, binding_key(v, source, b));
    schedule_commit();
}

void Durability::put_record(std::string_view key, std::string_view value) {
    if (!store_) return;
    batch_.put(Column::meta, key, value);
    schedule_commit();
}

void Durability::remove_record(std::string_view key) {
    if (!store_) return;
    batch_.remove(Column::meta, key);
    schedule_commit();
}

void Durability::store_message(const MessagePtr& message, const std::vector<StoredEntry>& entries) {
    if (!store_ || entries.empty()) return;
    std::string& value = scratch_;
    value.clear();
    if (entries.size() == 1) {
        // Inline: kind + header here; properties and body go in as parts.
        const StoredEntry& e = entries.front();
        put_entry_kind(value, kEntryInline, e.expires_ms);
        encode_message_header(value, *message);
        batch_.put(Column::msgs, storage::message_key_of(e.queue->id(), e.seq),
                   {value, message->properties(), message->body()});
        schedule_commit();
        return;
    }
    // One body, several entries that point at it; the body goes when the
    // last entry does (body_refs_ counts them).
    message->body_id = next_body_id_++;
    body_refs_[message->body_id] = static_cast<uint32_t>(entries.size());
    std::string body;
    encode_message(body, *message);
    std::string key;
    storage::append_u64_key(key, message->body_id);
    batch_.put(Column::bodies, key, body);
    for (const StoredEntry& e : entries) {
        value.clear();
        put_entry_kind(value, kEntryBodyRef, e.expires_ms);
        amqp::put_u64(value, message->body_id);
        batch_.put(Column::msgs, storage::message_key_of(e.queue->id(), e.seq), value);
    }
    schedule_commit();
}

void Durability::remove_entry(const Queue& queue, uint64_t seq, const Message& message) {
    if (!store_) return;
    batch_.remove(Column::msgs, storage::message_key_of(queue.id(), seq));
    release_body(message.body_id);
    schedule_commit();
}

void Durability::release_body(uint64_t body_id) {
    if (!store_ || body_id == 0) return;
    auto it = body_refs_.find(body_id);
    if (it == body_refs_.end() || --it->second > 0) return;
    body_refs_.erase(it);
    std::string key;
    storage::append_u64_key(key, body_id);
    batch_.remove(Column::bodies, key);
    schedule_commit();
}

void Durability::release_bodies_from(const Queue& queue, uint64_t seq) {
    if (body_refs_.empty()) return;  // nothing is shared: no need to look
    store_->scan(Column::msgs, storage::message_key_of(queue.id(), seq), storage::message_key_of(queue_upper(queue.id()), 0),
                 [&](std::string_view, std::string_view value) {
                     EntryView e = parse_entry(value);
                     if (e.ok && e.kind == kEntryBodyRef) release_body(storage::read_u64_key(e.rest, 0));
                     return true;
                 });
}

void Durability::page_message(const Queue& queue, uint64_t seq, const Message& message, uint64_t expires_ms) {
    if (!store_) return;
    std::string& value = scratch_;
    value.clear();
    put_entry_kind(value, kEntryPage, expires_ms);
    encode_message_header(value, message);
    batch_.put(Column::msgs, storage::message_key_of(queue.id(), seq), {value, message.properties(), message.body()});
    schedule_commit();
}

uint64_t Durability::read_entries(const Queue& queue, uint64_t from, uint64_t to, size_t max_count,
                                  const std::function<void(uint64_t, MessagePtr, bool, uint64_t)>& f) {
    if (!store_ || max_count == 0 || to < from) return 0;
    uint64_t last = 0;
    size_t n = 0;
    std::string upper = to == UINT64_MAX ? storage::message_key(queue_upper(queue.id()), 0)
                                         : storage::message_key(queue.id(), to + 1);
    store_->scan(Column::msgs, storage::message_key(queue.id(), from), upper,
                 [&](std::string_view key, std::string_view value) {
                     uint64_t seq = storage::read_u64_key(key, 8);
                     last = seq;
                     EntryView e = parse_entry(value);
                     if (!e.ok) return true;
                     const uint8_t kind = e.kind;
                     MessagePtr m;
                     if (kind == kEntryInline || kind == kEntryPage) {
                         m = decode_message(e.rest);
                     } else if (kind == kEntryBodyRef) {
                         uint64_t body_id = storage::read_u64_key(e.rest, 0);
                         std::string body_key, body;
                         storage::append_u64_key(body_key, body_id);
                         if (store_->get(Column::bodies, body_key, body)) m = decode_message(body);
                         if (m) m->body_id = body_id;
                     }
                     if (kind == kEntryPage) {
                         batch_.remove(Column::msgs, key);
                         schedule_commit();
                     }
                     if (m) f(seq, std::move(m), kind != kEntryPage, e.expires_ms);
                     return ++n < max_count;
                 });
    return last;
}

void Durability::remove_entries(const Queue& queue, const std::vector<uint64_t>& seqs) {
    if (!store_ || seqs.empty()) return;
    // Consecutive sequence numbers become one range delete.
    size_t i = 0;
    while (i < seqs.size()) {
        size_t j = i;
        while (j + 1 < seqs.size() && seqs[j + 1] == seqs[j] + 1) ++j;
        if (j == i) batch_.remove(Column::msgs, storage::message_key(queue.id(), seqs[i]));
        else
            batch_.remove_range(Column::msgs, storage::message_key(queue.id(), seqs[i]),
                                storage::message_key(queue.id(), seqs[j] + 1));
        i = j + 1;
    }
    schedule_commit();
}

void Durability::remove_entries_from(const Queue& queue, uint64_t seq) {
    if (!store_) return;
    release_bodies_from(queue, seq);
    batch_.remove_range(Column::msgs, storage::message_key(queue.id(), seq),
                        storage::message_key(queue_upper(queue.id()), 0));
    schedule_commit();
}

RecoveryStats Durability::recover(Broker& broker) {
    RecoveryStats st;
    if (!store_) return st;
    auto start = std::chrono::steady_clock::now();
    recovering_ = true;
    auto name_at = [](amqp::WireReader& r) { return std::string(r.shortstr()); };

    store_->scan(Column::meta, "e", "f", [&](std::string_view key, std::string_view value) {
        amqp::WireReader k(key.substr(1));
        std::string vh = name_at(k), name = name_at(k);
        amqp::WireReader r(value);
        ExchangeOptions o;
        o.type = static_cast<ExchangeType>(r.u8());
        uint8_t flags = r.u8();
        o.durable = true;
        o.auto_delete = flags & 1;
        o.internal = flags & 2;
        std::string_view rest = value.substr(std::min<size_t>(2, value.size()));
        VHost* vhost = broker.find_vhost(vh);
        if (!k.ok() || !r.ok() || amqp::decode_table(rest, o.arguments) != amqp::TableError::none || !vhost)
            return true;
        vhost->restore_exchange(name, o);
        ++st.exchanges;
        return true;
    });

    std::vector<std::shared_ptr<Queue>> queues;
    store_->scan(Column::meta, "q", "r", [&](std::string_view key, std::string_view value) {
        amqp::WireReader k(key.substr(1));
        std::string vh = name_at(k), name = name_at(k);
        amqp::WireReader r(value);
        uint64_t id = r.u64();
        uint8_t flags = r.u8();
        QueueOptions o;
        o.durable = true;
        o.auto_delete = flags & 1;
        std::string_view rest = value.substr(std::min<size_t>(9, value.size()));
        VHost* vhost = broker.find_vhost(vh);
        if (!k.ok() || !r.ok() || amqp::decode_table(rest, o.arguments) != amqp::TableError::none || !vhost)
            return true;
        queues.push_back(vhost->restore_queue(name, std::move(o), id));
        ++st.queues;
        return true;
    });

    store_->scan(Column::meta, "b", "c", [&](std::string_view key, std::string_view) {
        amqp::WireReader k(key.substr(1));
        std::string vh = name_at(k), source = name_at(k);
        char kind = static_cast<char>(k.u8());
        std::string dest = name_at(k), rk = name_at(k);
        amqp::FieldTable args;
        std::string_view rest = key.substr(1 + k.position());
        VHost* vhost = broker.find_vhost(vh);
        if (!k.ok() || amqp::decode_table(rest, args) != amqp::TableError::none || !vhost) return true;
        if (kind == 'q') vhost->bind_queue(dest, source, rk, args);
        else vhost->bind_exchange(dest, source, rk, args);
        ++st.bindings;
        return true;
    });

    // Messages: each durable queue's range in order. The head goes to
    // memory, the rest stays paged (not even decoded). Bodies shared by
    // several queues come back as one Message; their reference counts are
    // rebuilt from the entries. Page entries (transient) are dropped.
    std::unordered_map<uint64_t, MessagePtr> bodies;
    std::vector<uint64_t> queue_ids;
    for (const auto& q : queues) {
        queue_ids.push_back(q->id());
        store_->scan(Column::msgs, storage::message_key(q->id(), 0), storage::message_key(queue_upper(q->id()), 0),
                     [&](std::string_view key, std::string_view value) {
                         uint64_t seq = storage::read_u64_key(key, 8);
                         EntryView e = parse_entry(value);
                         if (!e.ok) return true;
                         const uint8_t kind = e.kind;
                         if (kind == kEntryPage) {
                             batch_.remove(Column::msgs, key);
                             return true;
                         }
                         uint64_t body_id = kind == kEntryBodyRef ? storage::read_u64_key(e.rest, 0) : 0;
                         if (body_id) ++body_refs_[body_id];
                         ++st.messages;
                         if (!q->has_memory_room()) {
                             // Left in the store; the size is close enough for
                             // x-max-length-bytes (a shared body's is not known here).
                             q->restore_paged(seq, kind == kEntryInline ? e.rest.size() : 0);
                             return true;
                         }
                         MessagePtr m;
                         if (kind == kEntryInline) {
                             m = decode_message(e.rest);
                         } else if (auto it = bodies.find(body_id); it != bodies.end()) {
                             m = it->second;
                         } else {
                             std::string body_key, body;
                             storage::append_u64_key(body_key, body_id);
                             if (store_->get(Column::bodies, body_key, body)) m = decode_message(body);
                             if (m) {
                                 m->body_id = body_id;
                                 bodies.emplace(body_id, m);
                             }
                         }
                         if (m) q->restore_message(std::move(m), seq, e.expires_ms);
                         return true;
                     });
    }
    for (const auto& q : queues) q->start();  // TTL and x-expires timers
    // Shared bodies no entry refers to any more (left by a crash between an
    // entry's removal and its body's, or by a path that missed a release).
    store_->scan(Column::bodies, "", "", [&](std::string_view key, std::string_view) {
        uint64_t id = storage::read_u64_key(key);
        next_body_id_ = std::max(next_body_id_, id + 1);
        if (!body_refs_.count(id)) batch_.remove(Column::bodies, key);
        return true;
    });
    // Ranges of queues that are not durable (they paged before the restart).
    std::sort(queue_ids.begin(), queue_ids.end());
    uint64_t cursor = 0;
    for (;;) {
        uint64_t found = UINT64_MAX;
        store_->scan(Column::msgs, storage::message_key(cursor, 0), "", [&](std::string_view key, std::string_view) {
            found = storage::read_u64_key(key);
            return false;
        });
        if (found == UINT64_MAX) break;
        if (!std::binary_search(queue_ids.begin(), queue_ids.end(), found))
            batch_.remove_range(Column::msgs, storage::message_key(found, 0), storage::message_key(found + 1, 0));
        if (found == UINT64_MAX - 1) break;
        cursor = found + 1;
    }
    if (!batch_.empty()) {
        storage::Batch cleanup = std::move(batch_);
        batch_ = store_->new_batch();
        store_->commit_now(std::move(cleanup));
    }
    recovering_ = false;
    st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return st;
}

}  // namespace sluice::broker
