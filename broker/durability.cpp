#include "broker/durability.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <unordered_map>
#include <unordered_set>

#include "broker/broker.hpp"
#include "broker/executor.hpp"
#include "broker/queue.hpp"
#include "broker/vhost.hpp"
#include "net/amqp/field_table.hpp"
#include "net/amqp/wire.hpp"

namespace sluice::broker {

using storage::Column;

namespace {

// Record kinds in a queue's log (storage/queue_log.hpp).
constexpr uint8_t kEntryInline = 1;   // payload: the encoded message
constexpr uint8_t kEntryBodyRef = 2;  // payload: the u64 id of a body in `bodies`
constexpr uint8_t kEntryPage = 3;     // an older version's paged transient message (dropped at start)

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
    spill_.reset();
    if (!store_) return;
    batch_ = store_->new_batch();
    std::string error;
    spill_ = storage::SpillFile::open(store_->path() + "/spill", error);
    if (!spill_)
        fprintf(stderr, "sluiced: spill: %s; transient messages of long queues stay in memory\n", error.c_str());
}

void Durability::shutdown() {
    if (store_) {
        // Let the commit in flight finish (its callback posts to the
        // executor, which is still alive), then write the gathering batch
        // after it: one ordered stream of batches to the end.
        store_->wait_idle();
        flush_logs();
        if (!batch_.empty() || write_failed_) {  // a failed batch is written again with it
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
    if (!gathering() && !commit_in_flight_ && !write_failed_) {
        fn(true);  // nothing unsynced is ahead of this
        return;
    }
    if (!gathering() && commit_in_flight_) {
        in_flight_waiters_.push_back(std::move(fn));
        return;
    }
    waiters_.push_back(std::move(fn));
    // After a failed write nothing may be acknowledged until it is written
    // again: this waits for a commit that does that.
    if (!gathering()) schedule_commit();
}

template <typename Op>
void Durability::change_log(uint64_t queue_id, Op op, bool create) {
    auto it = logs_.find(queue_id);
    if (it == logs_.end()) {
        if (!create) return;
        it = logs_.emplace(queue_id, std::make_unique<storage::QueueLog>(queue_id)).first;
    }
    storage::QueueLog& log = *it->second;
    const bool was_dirty = log.needs_flush();
    const size_t open_before = log.open_bytes();
    op(log);
    open_bytes_ += log.open_bytes() - std::min(open_before, log.open_bytes());
    if (!was_dirty && log.needs_flush()) dirty_logs_.push_back(queue_id);
}

// A queue whose log freed this much (deleted, or drained to empty) has its
// key range compacted, so the space comes back by itself.
constexpr uint64_t kReclaimBytes = 4u << 20;

void Durability::flush_logs() {
    for (uint64_t id : dirty_logs_) {
        auto it = logs_.find(id);
        if (it == logs_.end()) continue;
        storage::QueueLog& log = *it->second;
        if (log.flush(batch_)) in_flight_logs_.push_back(id);
        if (log.live() == 0 && log.freed_bytes() >= kReclaimBytes) {
            log.take_freed_bytes();
            reclaims_.push_back(id);
        }
    }
    dirty_logs_.clear();
    open_bytes_ = 0;
}

void Durability::schedule_commit() {
    if (commit_scheduled_) return;
    commit_scheduled_ = true;
    // At the end of this turn of the event loop: everything the current
    // reads produce joins one batch, and the turn's spill runs one write.
    executor_->post([this, alive = std::weak_ptr<bool>(alive_)] {
        if (alive.expired()) return;
        commit_scheduled_ = false;
        end_turn();
    });
}

void Durability::seal_at_turn_end(std::weak_ptr<Queue> queue) {
    open_runs_.push_back(std::move(queue));
    schedule_commit();
}

void Durability::end_turn() {
    if (!open_runs_.empty()) {
        const bool all = spill_pending_ > kSpillPendingBudget;
        std::vector<std::weak_ptr<Queue>> runs;
        runs.swap(open_runs_);
        for (auto& weak : runs) {
            auto q = weak.lock();
            if (!q) continue;
            sub_spill_pending(q->seal_runs(*spill_, all));
            if (q->spill_registered()) open_runs_.push_back(std::move(weak));
        }
        spill_->flush();
    }
    start_commit();
}

void Durability::encode_spill_record(std::string& out, const QueuedMessage& qm) {
    const Message& m = *qm.message;
    amqp::put_u64(out, qm.seq);
    amqp::put_u64(out, qm.expires_ms);
    const size_t len_at = out.size();
    amqp::put_u32(out, 0);
    encode_message(out, m);
    const uint32_t len = static_cast<uint32_t>(out.size() - len_at - 4);
    for (int i = 0; i < 4; ++i) out[len_at + static_cast<size_t>(i)] = static_cast<char>(len >> (24 - 8 * i));
}

bool Durability::decode_spill_run(std::string_view run,
                                  const std::function<void(uint64_t, MessagePtr, uint64_t)>& f) {
    while (!run.empty()) {
        if (run.size() < 20) return false;
        const uint64_t seq = storage::read_u64_key(run, 0);
        const uint64_t expires_ms = storage::read_u64_key(run, 8);
        const uint32_t len = static_cast<uint32_t>(storage::read_u64_key(run.substr(16, 4)));
        if (run.size() < 20 + size_t{len}) return false;
        MessagePtr m = decode_message(run.substr(20, len));
        if (!m) return false;
        f(seq, std::move(m), expires_ms);
        run.remove_prefix(20 + size_t{len});
    }
    return true;
}

void Durability::start_commit() {
    if (commit_in_flight_ || !(gathering() || (write_failed_ && !waiters_.empty()))) return;
    flush_logs();
    if (batch_.empty() && !write_failed_) {
        // Everything gathered was consumed before it was written (a consumer
        // that keeps up): nothing to write, nothing unsynced ahead.
        std::vector<std::function<void(bool)>> done;
        done.swap(waiters_);
        ++gathering_generation_;
        for (auto& fn : done) fn(true);
        return;
    }
    commit_in_flight_ = true;
    in_flight_reclaims_.swap(reclaims_);
    reclaims_.clear();
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
    if (store_->down() && on_store_lost_) {
        // The database could not be reopened after a failed write: nothing
        // can be stored or read back. Stop before anything answers from it.
        on_store_lost_("the store could not be reopened after a failed write");
    }
}

void Durability::on_committed(const std::string& error) {
    commit_in_flight_ = false;
    // A failed batch is written again ahead of the next one (Store::commit):
    // until then its chunks' bytes stay in memory (the messages are still
    // queued; their publishers were nacked) and its reclaims wait. What the
    // broker holds in memory is the truth the store converges to; nothing
    // is acknowledged before it has (after_sync waits for that commit).
    write_failed_ = !error.empty();
    if (write_failed_) {
        reclaims_.insert(reclaims_.end(), in_flight_reclaims_.begin(), in_flight_reclaims_.end());
    } else {
        for (uint64_t id : in_flight_logs_)
            if (auto* log = log_of(id)) log->release_pending();
        in_flight_logs_.clear();
        if (store_)
            for (uint64_t id : in_flight_reclaims_)
                store_->reclaim(storage::message_key_of(id, 0), storage::message_key_of(queue_upper(id), 0));
    }
    in_flight_reclaims_.clear();
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
    if (!store_) return;
    drop_refs_from(q.id(), 0);
    shared_refs_.erase(q.id());
    bool had_log = false;
    if (auto it = logs_.find(q.id()); it != logs_.end()) {
        had_log = true;
        if (it->second->stored_bytes() + it->second->freed_bytes() >= kReclaimBytes) reclaims_.push_back(q.id());
        logs_.erase(it);
    }
    if (q.durable() && !q.exclusive()) batch_.remove(Column::meta, queue_key(v, q.name()));
    else if (!had_log) return;
    // Its entries (an exclusive durable queue stores them too) go now, not
    // at the next start.
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
    std::string& header = scratch_;
    if (entries.size() == 1 || message->body_size() < kSharedBodyMin) {
        // Inline in each queue's log: header here, properties and body as parts.
        header.clear();
        encode_message_header(header, *message);
        for (const StoredEntry& e : entries)
            change_log(e.queue->id(), [&](storage::QueueLog& log) {
                log.append(e.seq, kEntryInline, e.expires_ms, {header, message->properties(), message->body()});
            }, true);
        schedule_commit();
        return;
    }
    // One body, several entries that point at it; the body goes when the
    // last entry does (body_refs_ counts them, shared_refs_ knows them).
    message->body_id = next_body_id_++;
    body_refs_[message->body_id] = static_cast<uint32_t>(entries.size());
    header.clear();
    encode_message(header, *message);
    std::string key;
    storage::append_u64_key(key, message->body_id);
    batch_.put(Column::bodies, key, header);
    for (const StoredEntry& e : entries) {
        change_log(e.queue->id(), [&](storage::QueueLog& log) {
            log.append(e.seq, kEntryBodyRef, e.expires_ms, {key});
        }, true);
        shared_refs_[e.queue->id()][e.seq] = message->body_id;
    }
    schedule_commit();
}

void Durability::remove_entry(const Queue& queue, uint64_t seq) {
    if (!store_) return;
    change_log(queue.id(), [&](storage::QueueLog& log) { log.remove(seq); }, false);
    drop_ref(queue.id(), seq);
    schedule_commit();
}

void Durability::drop_ref(uint64_t queue_id, uint64_t seq) {
    if (shared_refs_.empty()) return;
    auto q = shared_refs_.find(queue_id);
    if (q == shared_refs_.end()) return;
    auto it = q->second.find(seq);
    if (it == q->second.end()) return;  // not shared, or dropped already
    uint64_t body_id = it->second;
    q->second.erase(it);
    if (q->second.empty()) shared_refs_.erase(q);
    unref_body(body_id);
}

void Durability::drop_refs_from(uint64_t queue_id, uint64_t seq) {
    auto q = shared_refs_.find(queue_id);
    if (q == shared_refs_.end()) return;
    auto& refs = q->second;
    for (auto it = refs.lower_bound(seq); it != refs.end();) {
        unref_body(it->second);
        it = refs.erase(it);
    }
    if (refs.empty()) shared_refs_.erase(q);
}

void Durability::unref_body(uint64_t body_id) {
    auto it = body_refs_.find(body_id);
    if (it == body_refs_.end()) return;
    if (--it->second > 0) return;
    body_refs_.erase(it);
    std::string key;
    storage::append_u64_key(key, body_id);
    batch_.remove(Column::bodies, key);
    schedule_commit();
}

void PagedRead::finish() {
    {
        std::lock_guard lk(mu_);
        done_ = true;
    }
    cv_.notify_all();
}

void PagedRead::wait() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return done_; });
}

PagedReadPtr Durability::read_entries_off_thread(const Queue& queue, uint64_t from, uint64_t to, size_t max_count,
                                                 std::function<void(PagedRead&)> done) {
    const storage::QueueLog* log = store_ ? log_of(queue.id()) : nullptr;
    if (!log || max_count == 0 || to < from) return nullptr;
    auto read = std::make_shared<PagedRead>();
    auto plan = log->plan_read(from, to, max_count, true);
    storage::Store* store = store_;
    store_->read_off_thread([store, read, plan = std::move(plan), from, to, max_count, executor = executor_,
                             alive = std::weak_ptr<bool>(alive_), done = std::move(done)] {
        read->last = storage::QueueLog::read_planned(*store, plan, from, to, max_count, [&](const storage::LogRecord& r) {
            if (MessagePtr m = decode_record(*store, r)) read->entries.push_back({r.seq, std::move(m), r.expires_ms});
        });
        read->finish();
        executor->post([alive, read, done] {
            if (!alive.expired()) done(*read);
        });
    });
    return read;
}

PagedReadPtr Durability::read_spill_off_thread(const storage::SpillExtent& extent,
                                               std::function<void(PagedRead&)> done) {
    if (!spill_ || !store_) return nullptr;
    auto read = std::make_shared<PagedRead>();
    int fd = -1;
    std::string bytes;
    if (spill_->locate(extent, bytes, fd)) {
        // Still in memory: no disk to wait for.
        read->ok = decode_spill_run(bytes, [&](uint64_t seq, MessagePtr m, uint64_t expires_ms) {
            read->entries.push_back({seq, std::move(m), expires_ms});
        });
        read->finish();
        executor_->post([alive = std::weak_ptr<bool>(alive_), read, done = std::move(done)] {
            if (!alive.expired()) done(*read);
        });
        return read;
    }
    store_->read_off_thread([read, fd, extent, executor = executor_, alive = std::weak_ptr<bool>(alive_),
                             done = std::move(done)] {
        std::string bytes;
        read->ok = storage::SpillFile::pread_extent(fd, extent, bytes) &&
                   decode_spill_run(bytes, [&](uint64_t seq, MessagePtr m, uint64_t expires_ms) {
                       read->entries.push_back({seq, std::move(m), expires_ms});
                   });
        read->bytes_read = bytes.size();
        read->finish();
        executor->post([alive, read, done] {
            if (!alive.expired()) done(*read);
        });
    });
    return read;
}

bool Durability::entry_live(const Queue& queue, uint64_t seq) const {
    const storage::QueueLog* log = log_of(queue.id());
    return log && log->is_live(seq);
}

MessagePtr Durability::decode_record(const storage::Store& store, const storage::LogRecord& r) {
    if (r.kind == kEntryInline) return decode_message(r.payload);
    if (r.kind != kEntryBodyRef || r.payload.size() < 8) return nullptr;
    const uint64_t body_id = storage::read_u64_key(r.payload, 0);
    std::string body;
    if (!store.get(Column::bodies, r.payload.substr(0, 8), body)) return nullptr;
    MessagePtr m = decode_message(body);
    if (m) m->body_id = body_id;
    return m;
}

void Durability::remove_entries(const Queue& queue, const std::vector<uint64_t>& seqs) {
    if (!store_ || seqs.empty()) return;
    change_log(queue.id(), [&](storage::QueueLog& log) {
        for (uint64_t seq : seqs) log.remove(seq);
    }, false);
    for (uint64_t seq : seqs) drop_ref(queue.id(), seq);
    schedule_commit();
}

void Durability::remove_entries_from(const Queue& queue, uint64_t seq) {
    if (!store_) return;
    change_log(queue.id(), [&](storage::QueueLog& log) { log.remove_from(seq); }, false);
    drop_refs_from(queue.id(), seq);
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

    // Shared bodies first: which exist (an entry pointing at one that does
    // not is a lost message, and says so).
    std::unordered_set<uint64_t> stored_bodies;
    store_->scan(Column::bodies, "", "", [&](std::string_view key, std::string_view) {
        uint64_t id = storage::read_u64_key(key);
        stored_bodies.insert(id);
        next_body_id_ = std::max(next_body_id_, id + 1);
        return true;
    });

    // Messages: each durable queue's log in order. The head goes to memory
    // (within the queue's and the broker's memory limits), the rest stays
    // paged (not even decoded). Bodies shared by several queues come back as
    // one Message; their reference counts are rebuilt from the entries.
    // Page entries (transient, of an older version) are dropped.
    std::unordered_map<uint64_t, MessagePtr> bodies;
    std::vector<uint64_t> queue_ids;
    for (const auto& q : queues) {
        queue_ids.push_back(q->id());
        auto& log = logs_[q->id()];
        log = std::make_unique<storage::QueueLog>(q->id());
        storage::QueueLog* raw = log.get();
        raw->recover(*store_, batch_, [&](const storage::LogRecord& r) {
            const uint64_t seq = r.seq;
            if (r.kind == kEntryPage || (r.kind != kEntryInline && r.kind != kEntryBodyRef)) {
                raw->remove(seq);
                return;
            }
            uint64_t body_id = 0;
            if (r.kind == kEntryBodyRef) {
                if (r.payload.size() >= 8) body_id = storage::read_u64_key(r.payload, 0);
                if (!stored_bodies.count(body_id)) {
                    ++st.missing_bodies;
                    fprintf(stderr,
                            "sluiced: recovery: ERROR: queue '%s' in vhost '%s': message %llu refers to stored body "
                            "%llu, which is missing; the message is lost and its entry removed\n",
                            q->name().c_str(), q->vhost().name().c_str(), static_cast<unsigned long long>(seq),
                            static_cast<unsigned long long>(body_id));
                    raw->remove(seq);
                    return;
                }
                ++body_refs_[body_id];
                shared_refs_[q->id()][seq] = body_id;
            }
            ++st.messages;
            if (!q->has_memory_room()) {
                // Left in the store; the size is close enough for
                // x-max-length-bytes (a shared body's is not known here).
                q->restore_paged(seq, r.kind == kEntryInline ? r.payload.size() : 0);
                return;
            }
            MessagePtr m;
            if (r.kind == kEntryInline) {
                m = decode_message(r.payload);
            } else if (auto it = bodies.find(body_id); it != bodies.end()) {
                m = it->second;
            } else if ((m = decode_record(*store_, r))) {
                bodies.emplace(body_id, m);
            }
            if (m) q->restore_message(std::move(m), seq, r.expires_ms);
        });
        if (raw->needs_flush()) dirty_logs_.push_back(q->id());
    }
    flush_logs();
    in_flight_logs_.clear();  // recovered chunks hold no pending bytes
    bodies.clear();
    for (const auto& q : queues) q->start();  // TTL and x-expires timers
    // Shared bodies no entry refers to any more (left by a crash between an
    // entry's removal and its body's, or by a path that missed a release).
    for (uint64_t id : stored_bodies) {
        if (body_refs_.count(id)) continue;
        std::string key;
        storage::append_u64_key(key, id);
        batch_.remove(Column::bodies, key);
    }
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
