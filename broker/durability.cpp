#include "broker/durability.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <unordered_map>
#include <unordered_set>

#include "broker/broker.hpp"
#include "broker/delayed_messages.hpp"
#include "broker/durability_detail.hpp"
#include "broker/executor.hpp"
#include "broker/queue.hpp"
#include "broker/vhost.hpp"
#include "net/amqp/field_table.hpp"
#include "net/amqp/properties.hpp"
#include "storage/records.hpp"
#include "storage/recovery.hpp"
#include "storage/segment_files.hpp"

namespace sluice::broker {

using storage::Column;

using storage::records::kEntryBodyRef;
using storage::records::kEntryInline;
using storage::records::kEntryPage;

namespace durability_detail {

std::string encoded_arguments(const amqp::FieldTable& t) {
    std::string out;
    amqp::encode_table(out, t);
    return out;
}

storage::records::MessageParts parts_of(const Message& m) {
    return {m.exchange(), m.routing_key(), m.properties(), m.body()};
}

std::shared_ptr<Message> message_of(const storage::records::MessageParts& p) {
    auto m = std::make_shared<Message>(p.exchange, p.routing_key, p.properties, p.body.size());
    m->append_body(p.body);
    return m;
}

std::shared_ptr<Message> decode_message(std::string_view in) {
    storage::records::MessageParts p;
    if (!storage::records::decode_message(in, p)) return nullptr;
    return message_of(p);
}

bool decode_arguments(std::string_view bytes, amqp::FieldTable& out) {
    return amqp::decode_table(bytes, out) == amqp::TableError::none;
}

}  // namespace durability_detail

using namespace durability_detail;

namespace {

uint64_t queue_upper(uint64_t id) { return id + 1; }

storage::records::BindingRecord binding_record(const VHost& v, const Exchange& source, const Binding& b,
                                               std::string& arguments) {
    storage::records::BindingRecord r;
    r.vhost = v.name();
    r.source = source.name();
    r.to_queue = b.destination.queue != nullptr;
    r.destination = r.to_queue ? b.destination.queue->name() : b.destination.exchange->name();
    r.routing_key = b.key;
    arguments = encoded_arguments(b.arguments);
    r.arguments = arguments;
    return r;
}

}  // namespace

Durability::~Durability() { *alive_ = false; }

void Durability::attach(storage::Store* store, Executor* executor) {
    store_ = store;
    executor_ = executor;
    queue_logs_.set_store(store);
    spill_.reset();
    commit_.reset();
    if (!store_) return;
    storage::GroupCommit::Hooks hooks;
    hooks.has_open_writes = [this] { return queue_logs_.has_open_writes() || !dirty_streams_.empty(); };
    hooks.open_bytes = [this] { return queue_logs_.open_bytes() + stream_open_bytes_; };
    hooks.end_of_turn = [this] { seal_spill_runs(); };
    hooks.flush = [this](storage::Batch& batch) { flush_logs(batch); };
    hooks.committed = [this](bool ok) { on_committed(ok); };
    commit_ = std::make_unique<storage::GroupCommit>(
        *store_, [executor](std::function<void()> fn) { executor->post(std::move(fn)); }, std::move(hooks));
    commit_->set_backlog_limit(backlog_limit_, on_caught_up_);
    commit_->set_on_store_lost(on_store_lost_);
    std::string error;
    spill_ = storage::SpillFile::open(store_->path() + "/spill", error);
    if (!spill_)
        fprintf(stderr, "sluiced: spill: %s; transient messages of long queues stay in memory\n", error.c_str());
}

void Durability::shutdown() {
    // Writes what gathered (and a failed batch), in order. Then every batch
    // is synced: the chunks they deleted let their segment files go (the
    // in-flight batch's callback would have said so, but the loop is
    // stopping).
    if (commit_ && commit_->shutdown()) queue_logs_.committed(true);
    store_ = nullptr;
    executor_ = nullptr;
}

void Durability::after_sync(std::function<void(bool)> fn) {
    if (!commit_) {
        fn(true);
        return;
    }
    commit_->after_sync(std::move(fn));
}

// A queue whose log freed this much (deleted, or drained to empty) has its
// key range compacted, so the space comes back by itself.
constexpr uint64_t kReclaimBytes = 4u << 20;

void Durability::flush_logs(storage::Batch& batch) {
    flush_streams(batch);
    flush_delay_logs(batch);
    queue_logs_.flush(batch, kReclaimBytes, reclaims_);
    stream_open_bytes_ = 0;
    // The ranges this batch deletes are compacted once it is written.
    in_flight_reclaims_.insert(in_flight_reclaims_.end(), reclaims_.begin(), reclaims_.end());
    reclaims_.clear();
}

void Durability::schedule_commit() {
    if (commit_) commit_->schedule();
}

void Durability::seal_at_turn_end(std::weak_ptr<Queue> queue) {
    open_runs_.push_back(std::move(queue));
    schedule_commit();
}

void Durability::seal_spill_runs() {
    if (open_runs_.empty()) return;
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

void Durability::encode_spill_record(std::string& out, uint64_t seq, uint64_t expires_ms, const Message& message) {
    storage::records::append_spill_record(out, seq, expires_ms, parts_of(message));
}

bool Durability::decode_spill_run(std::string_view run,
                                  const std::function<void(uint64_t, MessagePtr, uint64_t)>& f) {
    return storage::records::for_each_spill_record(
        run, [&](uint64_t seq, uint64_t expires_ms, const storage::records::MessageParts& p) {
            f(seq, message_of(p), expires_ms);
            return true;
        });
}

void Durability::on_committed(bool ok) {
    // A failed batch is written again ahead of the next one (Store::commit):
    // until then its chunks' bytes stay in memory (the messages are still
    // queued; their publishers were nacked) and its reclaims wait. What the
    // broker holds in memory is the truth the store converges to; nothing
    // is acknowledged before it has (GroupCommit::after_sync waits for that).
    queue_logs_.committed(ok);
    if (ok) compact_segments();
    if (!ok) {
        reclaims_.insert(reclaims_.end(), in_flight_reclaims_.begin(), in_flight_reclaims_.end());
        stream_reclaims_.insert(stream_reclaims_.end(), in_flight_stream_reclaims_.begin(),
                                in_flight_stream_reclaims_.end());
        in_flight_stream_reclaims_.clear();
        // The streams' chunks stay unreadable until a later commit succeeds
        // (it writes this batch again first): they stay on the list.
    } else {
        std::vector<uint64_t> streams;
        streams.swap(in_flight_streams_);
        for (uint64_t id : streams)
            if (auto it = streams_.find(id); it != streams_.end()) it->second.log->committed();
        if (store_)
            for (const auto& [begin, end] : in_flight_stream_reclaims_) store_->reclaim(begin, end);
        in_flight_stream_reclaims_.clear();
        // Readers go on after everything is marked readable (a callback
        // may delete another stream).
        for (uint64_t id : streams)
            if (auto it = streams_.find(id); it != streams_.end() && it->second.on_committed) {
                auto fn = it->second.on_committed;
                fn();
            }
        if (store_)
            for (uint64_t id : in_flight_reclaims_)
                store_->reclaim(storage::message_key_of(id, 0), storage::message_key_of(queue_upper(id), 0));
    }
    in_flight_reclaims_.clear();
}

void Durability::compact_segments() {
    storage::SegmentFiles* segments = store_ ? store_->segments() : nullptr;
    if (!segments) return;
    for (uint32_t file : segments->sparse(compaction_quiet_)) {
        auto chunks = queue_logs_.chunks_in(file);
        if (chunks.empty()) {
            segments->compacted(file);
            continue;
        }
        struct Moved {
            storage::QueueLogs::ChunkRef chunk;
            std::string bytes;
        };
        auto moved = std::make_shared<std::vector<Moved>>();
        storage::Store* store = store_;
        store_->read_off_thread([store, file, chunks = std::move(chunks), moved, executor = executor_,
                                 alive = std::weak_ptr<bool>(alive_), this] {
            for (const auto& c : chunks) {
                std::string v, error;
                if (store->get(Column::msgs, storage::chunk_key(c.queue_id, c.first), v, false) &&
                    store->resolve_chunk(v, error))
                    moved->push_back({c, std::move(v)});
            }
            executor->post([alive, moved, file, store, this] {
                if (alive.expired()) return;
                size_t n = 0;
                for (auto& m : *moved) n += queue_logs_.rewrite(m.chunk, file, std::move(m.bytes)) ? 1 : 0;
                if (store->segments()) store->segments()->compacted(file);
                if (n > 0) {
                    ++segments_compacted_;
                    schedule_commit();
                }
            });
        });
    }
}

void Durability::put_exchange(const VHost& v, const Exchange& e) {
    if (recovering_ || !store_ || !e.durable()) return;
    batch().put(Column::meta, storage::records::exchange_key(v.name(), e.name()),
                storage::records::exchange_value(static_cast<uint8_t>(e.type()), e.auto_delete(), e.internal(),
                                                 encoded_arguments(e.arguments())));
    schedule_commit();
}

void Durability::remove_exchange(const VHost& v, const Exchange& e) {
    if (!store_) return;
    if (const DelayedMessages* d = e.delayed(); d && d->log_id() != 0) {
        const uint64_t id = d->log_id();
        delay_logs_.erase(id);  // a dirty entry left in dirty_delay_logs_ finds nothing
        batch().remove(Column::meta, storage::records::delay_log_key(v.name(), e.name()));
        batch().remove_range(Column::msgs, storage::message_key_of(id, 0), storage::message_key_of(queue_upper(id), 0));
        if (d->count() > 0) reclaims_.push_back(id);
        schedule_commit();
    }
    if (!e.durable()) return;
    batch().remove(Column::meta, storage::records::exchange_key(v.name(), e.name()));
    schedule_commit();
}

void Durability::put_queue(const VHost& v, const Queue& q) {
    if (recovering_ || !store_ || !q.durable() || q.exclusive()) return;
    batch().put(Column::meta, storage::records::queue_key(v.name(), q.name()),
                storage::records::queue_value(q.id(), q.auto_delete(), encoded_arguments(q.arguments())));
    schedule_commit();
}

void Durability::remove_queue(const VHost& v, const Queue& q) {
    if (!store_) return;
    for (uint64_t body : shared_bodies_.drop_from(q.id(), 0)) remove_body(body);
    bool had_log = false;
    if (auto it = streams_.find(q.id()); it != streams_.end()) {
        had_log = true;
        if (it->second.log->bytes() >= kReclaimBytes) reclaims_.push_back(q.id());
        streams_.erase(it);
    }
    if (auto bytes = queue_logs_.erase(q.id())) {
        had_log = true;
        if (*bytes >= kReclaimBytes) reclaims_.push_back(q.id());
    }
    if (q.durable() && !q.exclusive()) batch().remove(Column::meta, storage::records::queue_key(v.name(), q.name()));
    else if (!had_log) return;
    // Its entries (an exclusive durable queue stores them too) go now, not
    // at the next start.
    batch().remove_range(Column::msgs, storage::message_key_of(q.id(), 0),
                         storage::message_key_of(queue_upper(q.id()), 0));
    schedule_commit();
}

void Durability::put_binding(const VHost& v, const Exchange& source, const Binding& b) {
    if (recovering_ || !store_) return;
    std::string arguments;
    batch().put(Column::meta, storage::records::binding_key(binding_record(v, source, b, arguments)), "");
    schedule_commit();
}

void Durability::remove_binding(const VHost& v, const Exchange& source, const Binding& b) {
    if (!store_) return;
    std::string arguments;
    batch().remove(Column::meta, storage::records::binding_key(binding_record(v, source, b, arguments)));
    schedule_commit();
}

void Durability::put_record(std::string_view key, std::string_view value) {
    if (!store_) return;
    batch().put(Column::meta, key, value);
    schedule_commit();
}

void Durability::remove_record(std::string_view key) {
    if (!store_) return;
    batch().remove(Column::meta, key);
    schedule_commit();
}

void Durability::store_message(const MessagePtr& message, const std::vector<StoredEntry>& entries) {
    if (!store_ || entries.empty()) return;
    std::string& header = scratch_;
    if (entries.size() == 1 || message->body_size() < kSharedBodyMin) {
        // Inline in each queue's log: header here, properties and body as parts.
        header.clear();
        storage::records::append_message_header(header, message->exchange(), message->routing_key(),
                                                message->properties().size());
        for (const StoredEntry& e : entries)
            queue_logs_.change(e.queue->id(), [&](storage::QueueLog& log) {
                log.append(e.seq, kEntryInline, e.expires_ms, {header, message->properties(), message->body()});
            }, true);
        schedule_commit();
        return;
    }
    // One body, several entries that point at it; the body goes when the
    // last entry does (shared_bodies_ counts them).
    shared_entries_.clear();
    for (const StoredEntry& e : entries) shared_entries_.push_back({e.queue->id(), e.seq});
    message->body_id = shared_bodies_.add(shared_entries_);
    header.clear();
    storage::records::append_message(header, parts_of(*message));
    const std::string key = storage::records::body_key(message->body_id);
    batch().put(Column::bodies, key, header);
    for (const StoredEntry& e : entries) {
        queue_logs_.change(e.queue->id(), [&](storage::QueueLog& log) {
            log.append(e.seq, kEntryBodyRef, e.expires_ms, {key});
        }, true);
    }
    schedule_commit();
}

void Durability::remove_entry(const Queue& queue, uint64_t seq) {
    if (!store_) return;
    queue_logs_.change(queue.id(), [&](storage::QueueLog& log) { log.remove(seq); }, false);
    if (uint64_t body = shared_bodies_.drop(queue.id(), seq)) remove_body(body);
    schedule_commit();
}

void Durability::remove_body(uint64_t body_id) {
    batch().remove(Column::bodies, storage::records::body_key(body_id));
    schedule_commit();
}

namespace {

// The read is done (on whichever thread did it): `done` runs on the broker
// thread, unless the Durability went.
void finish_read(Executor* executor, std::weak_ptr<bool> alive, const PagedReadPtr& read,
                 std::function<void(PagedRead&)> done) {
    executor->post([alive = std::move(alive), read, done = std::move(done)] {
        if (!alive.expired()) done(*read);
    });
}

void decode_spilled(std::string_view bytes, PagedRead& read) {
    read.ok = Durability::decode_spill_run(bytes, [&](uint64_t seq, MessagePtr m, uint64_t expires_ms) {
        read.entries.push_back({seq, std::move(m), expires_ms});
    });
}

}  // namespace

PagedReadPtr Durability::read_entries_off_thread(const Queue& queue, uint64_t from, uint64_t to, size_t max_count,
                                                 std::function<void(PagedRead&)> done) {
    const storage::QueueLog* log = store_ ? queue_logs_.find(queue.id()) : nullptr;
    if (!log || max_count == 0 || to < from) return nullptr;
    auto read = std::make_shared<PagedRead>();
    auto plan = log->plan_read(from, to, max_count, true);
    storage::Store* store = store_;
    store_->read_off_thread([store, read, plan = std::move(plan), from, to, max_count, executor = executor_,
                             alive = std::weak_ptr<bool>(alive_), done = std::move(done)] {
        read->last = storage::QueueLog::read_planned(*store, plan, from, to, max_count, [&](const storage::LogRecord& r) {
            if (MessagePtr m = decode_record(*store, r)) read->entries.push_back({r.seq, std::move(m), r.expires_ms});
        });
        finish_read(executor, alive, read, done);
    });
    return read;
}

PagedReadPtr Durability::read_spill_off_thread(const storage::SpillExtent& extent,
                                               std::function<void(PagedRead&)> done) {
    if (!spill_ || !store_) return nullptr;
    auto read = std::make_shared<PagedRead>();
    int fd = -1;
    std::string bytes;
    if (spill_->locate(extent, bytes, fd)) {  // still in memory: no disk to wait for
        decode_spilled(bytes, *read);
        finish_read(executor_, alive_, read, std::move(done));
        return read;
    }
    read->from_file = true;
    store_->read_off_thread([read, fd, extent, executor = executor_, alive = std::weak_ptr<bool>(alive_),
                             done = std::move(done)] {
        if (auto bytes = storage::SpillFile::pread_extent(fd, extent))
            decode_spilled(std::string_view(bytes.get(), extent.length), *read);
        else
            read->ok = false;
        finish_read(executor, alive, read, done);
    });
    return read;
}

bool Durability::entry_live(const Queue& queue, uint64_t seq) const {
    const storage::QueueLog* log = queue_logs_.find(queue.id());
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
    queue_logs_.change(queue.id(), [&](storage::QueueLog& log) {
        for (uint64_t seq : seqs) log.remove(seq);
    }, false);
    for (uint64_t seq : seqs)
        if (uint64_t body = shared_bodies_.drop(queue.id(), seq)) remove_body(body);
    schedule_commit();
}

void Durability::remove_entries_from(const Queue& queue, uint64_t seq) {
    if (!store_) return;
    queue_logs_.change(queue.id(), [&](storage::QueueLog& log) { log.remove_from(seq); }, false);
    for (uint64_t body : shared_bodies_.drop_from(queue.id(), seq)) remove_body(body);
    schedule_commit();
}

}  // namespace sluice::broker
