#include "broker/queue.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include "broker/broker.hpp"
#include "broker/channel.hpp"
#include "broker/vhost.hpp"

namespace sluice::broker {

Queue::Queue(VHost& vhost, std::string name, QueueOptions options, uint64_t owner, uint64_t id)
    : vhost_(vhost), name_(std::move(name)), id_(id), options_(std::move(options)), owner_(owner) {
    if (options_.features.type == QueueType::stream) stream_ = std::make_unique<Stream>(*this, vhost_.broker().durability());
    if (options_.features.dedup) dedup_ = std::make_unique<DedupCache>(*options_.features.dedup);
}

bool Queue::has_memory_room() const {
    // A priority queue keeps its messages in memory: its order is not the
    // store's (sequence) order, which paging reads back in.
    if (options_.features.max_priority > 0) return true;
    const Broker& broker = vhost_.broker();
    const BrokerConfig& cfg = broker.config();
    return ready_.size() < cfg.queue_memory_messages && memory_bytes_ < cfg.queue_memory_bytes &&
           broker.message_memory() < cfg.message_memory_limit;
}

void Queue::add_memory(size_t n) {
    memory_bytes_ += n;
    vhost_.broker().add_message_memory(n);
}

void Queue::sub_memory(size_t n) {
    n = std::min(n, memory_bytes_);
    memory_bytes_ -= n;
    vhost_.broker().sub_message_memory(n);
}

void Queue::publish(QueuedMessage qm) {
    ++counters.published;
    if (stream_) {
        stream_->publish(qm);  // readers see it once its batch is synced
        return;
    }
    ready_bytes_ += qm.message->body_size();
    const uint64_t expires_ms = qm.expires_ms;
    const uint64_t qm_seq = qm.seq;
    if ((paged_count_ > 0 || !has_memory_room()) && can_page_out(qm)) {
        page_out(std::move(qm));  // the tail lives on disk: keep order, drop the message from memory
    } else {
        add_memory(qm.message->body_size());
        qm.enqueued_s = vhost_.broker().now_s();
        insert_ready(std::move(qm));
    }
    if (!consumers_.empty()) {
        // A message that a consumer can take as it arrives is delivered, not
        // expired, however little TTL it has (RabbitMQ's rule for TTL 0):
        // the dispatcher does not look at this one's expiry.
        arriving_seq_ = expires_ms != 0 ? qm_seq : 0;
        dispatch();
        arriving_seq_ = 0;
    }
    if (options_.features.has_length_limit()) enforce_length_limit();
    if (expires_ms != 0) {
        // A TTL of 0 means "now or never": what no consumer took is expired.
        expire_head(vhost_.broker().now_ms(), true);
        schedule_head_expiry();
    }
}

void Queue::insert_ready(QueuedMessage qm) {
    if (options_.features.max_priority == 0) {
        if (ready_.empty() || ready_.back().seq < qm.seq) {
            ready_.push_back(std::move(qm));
            return;
        }
        auto pos = std::upper_bound(ready_.begin(), ready_.end(), qm.seq,
                                    [](uint64_t seq, const QueuedMessage& m) { return seq < m.seq; });
        ready_.insert(pos, std::move(qm));
        return;
    }
    // Highest priority first; FIFO (by sequence number) within a priority.
    const uint8_t p = priority_of(*qm.message);
    auto before = [&](const QueuedMessage& m) {
        const uint8_t mp = priority_of(*m.message);
        return mp > p || (mp == p && m.seq < qm.seq);
    };
    if (ready_.empty() || before(ready_.back())) {
        ready_.push_back(std::move(qm));
        return;
    }
    auto pos = std::partition_point(ready_.begin(), ready_.end(), before);
    ready_.insert(pos, std::move(qm));
}

bool Queue::can_page_out(const QueuedMessage& qm) const {
    const Durability& durability = vhost_.broker().durability();
    return durability.enabled() && (qm.stored || durability.spill());
}

void Queue::append_stored_run(uint64_t seq) {
    if (runs_.empty() || runs_.back().spilled) {
        runs_.emplace_back();
        runs_.back().next_seq = seq;
    }
    runs_.back().last_seq = seq;
    ++runs_.back().count;
    ++paged_count_;
}

namespace {
// A run gathers page-outs across turns until it holds this much: it is read
// back whole (so this bounds what one read brings into memory), and a
// private run's bytes wait in memory until it is sealed. Runs of a few
// messages each would cost more memory than they save.
constexpr size_t kRunBytes = 128u << 10;
}  // namespace

void Queue::page_out(QueuedMessage qm) {
    Durability& durability = vhost_.broker().durability();
    if (qm.stored) {
        // Already in the queue's log (the publish's batch, or still
        // gathering: the log reads it from memory until it is synced).
        append_stored_run(qm.seq);
        return;
    }
    if (qm.message->spill_shared && page_out_shared(qm)) return;
    ++paged_count_;
    if (runs_.empty() || !runs_.back().spilled || runs_.back().shared || runs_.back().written ||
        runs_.back().pending.size() >= kRunBytes) {
        runs_.emplace_back();
        runs_.back().spilled = true;
        runs_.back().next_seq = qm.seq;
        // Its bytes grow to about kRunBytes: one allocation, not a dozen
        // doublings that copy them again (pages not yet written are not
        // resident, so a run that stays short costs what it holds).
        runs_.back().pending.reserve(kRunBytes + 4096);
    }
    PagedRun& run = runs_.back();
    run.last_seq = qm.seq;
    ++run.count;
    const size_t before = run.pending.size();
    Durability::encode_spill_record(run.pending, qm.seq, qm.expires_ms, *qm.message);
    durability.add_spill_pending(run.pending.size() - before);
    if (!spill_registered_) {
        spill_registered_ = true;
        durability.seal_at_turn_end(weak_from_this());
    }
}

bool Queue::page_out_shared(const QueuedMessage& qm) {
    storage::SpillFile* spill = vhost_.broker().durability().spill();
    if (!spill || qm.expires_ms != 0) return false;
    const Message& m = *qm.message;
    storage::SpillExtent e{m.spill_segment, m.spill_length, m.spill_offset};
    if (e.length == 0 || !spill->retain(e)) {
        // The first queue to page it out (or every earlier copy is gone):
        // its record goes to the file, for the queues after this one too.
        size_t start = 0;
        std::string& buffer = spill->begin_append(start);
        Durability::encode_spill_record(buffer, 0, 0, m);  // seq and expiry: the run's
        e = spill->end_append(buffer, start);
        m.spill_segment = e.segment;
        m.spill_length = e.length;
        m.spill_offset = e.offset;
    }
    ++paged_count_;
    if (!runs_.empty()) {
        PagedRun& back = runs_.back();
        if (back.shared && !back.written && back.last_seq + 1 == qm.seq && back.extent.segment == e.segment &&
            back.extent.offset + back.extent.length == e.offset && back.extent.length < kRunBytes) {
            back.extent.length += e.length;
            back.last_seq = qm.seq;
            ++back.count;
            return true;
        }
    }
    PagedRun& run = runs_.emplace_back();
    run.spilled = run.shared = true;
    run.next_seq = run.last_seq = qm.seq;
    run.count = 1;
    run.extent = e;
    return true;
}

size_t Queue::seal_runs(storage::SpillFile& spill, bool all) {
    // Every run not yet written sits behind the last written one (stored
    // runs may be between them). The one at the back may still grow: it
    // stays open unless `all` (the broker's budget for open runs is spent).
    size_t sealed = 0;
    bool open_left = false;
    for (auto it = runs_.rbegin(); it != runs_.rend(); ++it) {
        if (!it->spilled || it->shared) continue;
        if (it->written) break;
        if (!all && it == runs_.rbegin()) {
            open_left = true;
            continue;
        }
        sealed += it->pending.size();
        it->extent = spill.append(std::move(it->pending));  // the file writes these very bytes
        it->written = true;
        std::string().swap(it->pending);
    }
    spill_registered_ = open_left;
    return sealed;
}

bool Queue::start_read(size_t max_count) {
    Durability& durability = vhost_.broker().durability();
    PagedRun& run = runs_.front();
    if (run.spilled && !run.shared && !run.written) {
        // Not sealed yet: the run's bytes are here, no disk to wait for.
        const uint32_t now_s = vhost_.broker().now_s();
        Durability::decode_spill_run(run.pending, [&](uint64_t seq, MessagePtr m, uint64_t expires_ms) {
            add_memory(m->body_size());
            insert_ready(QueuedMessage{std::move(m), seq, false, false, now_s, 0, expires_ms});
        });
        durability.sub_spill_pending(run.pending.size());
        pop_front_run();
        return true;
    }
    // Everything else is read on the store's read thread. When the result
    // is back on the broker thread, finish_read() takes it in if this queue
    // still waits for it; else (the run was dropped meanwhile, or the queue
    // is gone) on_dropped runs.
    auto done = [weak = weak_from_this()](std::function<void()> on_dropped) {
        return [weak, on_dropped = std::move(on_dropped)](PagedRead& r) {
            auto q = weak.lock();
            if (q && q->read_.get() == &r) q->finish_read(r);
            else if (on_dropped) on_dropped();
            if (q) q->after_read();
        };
    };
    if (run.spilled) {
        run.written = true;  // a shared run takes no more messages once its read starts
        const storage::SpillExtent extent = run.extent;
        read_ = durability.read_spill_off_thread(extent, done([extent, &durability] {
            if (durability.spill()) durability.spill()->release(extent);  // the read no longer uses its file
        }));
    } else {
        read_ = durability.read_entries_off_thread(*this, run.next_seq, run.last_seq, max_count, done(nullptr));
        if (!read_) {  // no entries to read: the count was off
            pop_front_run();
            return true;
        }
    }
    return read_ != nullptr;
}

void Queue::pop_front_run() {
    paged_count_ -= std::min(paged_count_, runs_.front().count);
    runs_.pop_front();
}

void Queue::finish_read(PagedRead& r) {
    Durability& durability = vhost_.broker().durability();
    read_.reset();
    PagedRun& run = runs_.front();
    const uint32_t now_s = vhost_.broker().now_s();
    if (run.spilled) {
        if (auto* spill = durability.spill()) {
            if (r.from_file) spill->note_read(run.extent, r.ok);
            spill->release(run.extent);
        }
        if (!r.ok) {
            // Unreadable (an I/O error): the run's messages are lost. Say so.
            fprintf(stderr, "sluiced: spill: queue '%s': reading %zu paged transient messages failed; dropped\n",
                    name_.c_str(), run.count);
            r.entries.clear();
        }
        if (run.shared && r.entries.size() != run.count && r.ok) {
            fprintf(stderr, "sluiced: spill: queue '%s': %zu shared paged messages read back, %zu expected\n",
                    name_.c_str(), r.entries.size(), run.count);
        }
        uint64_t seq = run.next_seq;
        for (auto& e : r.entries) {
            if (run.shared) e.seq = seq++;  // the records are the messages; their places are the run's
            add_memory(e.message->body_size());
            insert_ready(QueuedMessage{std::move(e.message), e.seq, false, false, now_s, 0, e.expires_ms});
        }
        pop_front_run();
        return;
    }
    size_t got = 0;
    for (auto& e : r.entries) {
        if (e.seq < run.next_seq || !durability.entry_live(*this, e.seq)) continue;  // removed meanwhile
        add_memory(e.message->body_size());
        // What was stored before a restart may have been delivered.
        const bool redelivered = e.seq < recovered_below_;
        insert_ready(QueuedMessage{std::move(e.message), e.seq, redelivered, true, now_s, 0, e.expires_ms});
        ++got;
    }
    const size_t taken = std::min(run.count, got);
    run.count -= taken;
    paged_count_ -= std::min(paged_count_, taken);
    if (r.last == 0 || r.last >= run.last_seq || run.count == 0) {
        pop_front_run();  // what is left of its count was not there (the count was off)
    } else {
        run.next_seq = r.last + 1;
    }
}

void Queue::after_read() {
    run_head_waiters();
    if (deleted_) return;
    refill();  // read ahead further, if the head is still short
    enforce_length_limit();
    schedule_head_expiry();
    dispatch();
}

void Queue::drop_runs() {
    Durability& durability = vhost_.broker().durability();
    for (const PagedRun& run : runs_) {
        if (!run.spilled) continue;
        // A run being read keeps its extent until the read is back (its
        // segment's file is in use): the read's callback releases it.
        if (read_ && &run == &runs_.front()) continue;
        if ((run.written || run.shared) && durability.spill()) durability.spill()->release(run.extent);
        else durability.sub_spill_pending(run.pending.size());
    }
    read_.reset();
    runs_.clear();
    paged_count_ = 0;
}

void Queue::restore_paged(uint64_t seq, uint64_t body_bytes) {
    append_stored_run(seq);  // a recovered entry left in the store
    ready_bytes_ += body_bytes;
    next_seq_ = std::max(next_seq_, seq + 1);
    recovered_below_ = next_seq_;
}

void Queue::refill() {
    if (deleted_) return;
    const size_t chunk = std::max<size_t>(64, vhost_.broker().config().queue_memory_messages / 4);
    // Read a whole chunk at a time (not one message per delivery): each
    // read of stored records is a lookup in the store. Reads of the disk
    // run on the store's read thread, one at a time per queue, started
    // while the head still holds messages, so that consumers rarely wait.
    while (!read_ && ready_.size() < chunk && !runs_.empty())
        if (!start_read(chunk)) break;
}

bool Queue::head_ready_or_read(std::function<void()> ready) {
    if (stream_ || deleted_ || !ready_.empty() || runs_.empty()) return true;
    refill();
    if (!ready_.empty() || runs_.empty() || !read_) return true;  // read at once, or get() reads it
    head_waiters_.push_back(std::move(ready));
    return false;
}

void Queue::run_head_waiters() {
    std::vector<std::function<void()>> waiters;
    waiters.swap(head_waiters_);
    for (auto& fn : waiters) fn();
}

Queue::~Queue() { run_head_waiters(); }

void Queue::restore_message(MessagePtr message, uint64_t seq, uint64_t expires_ms) {
    // Whether it had been delivered is not recorded: every recovered message
    // is flagged redelivered, which the flag's meaning ("may have been
    // delivered before") allows.
    ready_bytes_ += message->body_size();
    add_memory(message->body_size());  // counted like any message in memory (limits, metrics)
    insert_ready(QueuedMessage{std::move(message), seq, true, true, vhost_.broker().now_s(), 0, expires_ms});
    next_seq_ = std::max(next_seq_, seq + 1);
    recovered_below_ = next_seq_;
}

std::optional<QueuedMessage> Queue::get(bool no_ack) {
    if (stream_) return std::nullopt;  // refused before (Channel::basic_get, operations)
    touch();
    // Callers ask head_ready_or_read() first: a head on disk has been read
    // by now, and this never waits.
    refill();  // read ahead
    if (!ready_.empty() && ready_.front().expires_ms != 0) expire_head(vhost_.broker().now_ms(), false);
    if (ready_.empty()) return std::nullopt;
    QueuedMessage qm = std::move(ready_.front());
    ready_.pop_front();
    take(qm);
    counters.note_delivery(qm.redelivered);
    if (!no_ack) ++unacked_;
    // As RabbitMQ, what expired behind the head goes now, so get-ok's
    // message count does not include it.
    if (!ready_.empty() && ready_.front().expires_ms != 0) expire_head(vhost_.broker().now_ms(), false);
    stamp_delivery(qm);
    return qm;
}

void Queue::requeue(QueuedMessage qm) {
    if (stream_) {
        stream_->settle();  // the message never left the stream
        return;
    }
    if (unacked_ > 0) --unacked_;
    if (deleted_) return;
    qm.redelivered = true;
    if (options_.features.type == QueueType::quorum) {
        ++qm.returns;
        const auto& limit = options_.features.delivery_limit;
        if (limit && qm.returns > *limit) {
            discard(std::move(qm), DeathReason::delivery_limit);
            return;
        }
    }
    ready_bytes_ += qm.message->body_size();
    const bool expiring = qm.expires_ms != 0;
    if (options_.features.type == QueueType::quorum) {
        requeue_at_back(std::move(qm));
    } else {
        add_memory(qm.message->body_size());
        insert_ready(std::move(qm));
    }
    if (options_.features.has_length_limit()) enforce_length_limit();
    if (expiring) schedule_head_expiry();
}

void Queue::requeue_at_back(QueuedMessage qm) {
    // RabbitMQ 3.10's quorum queues return a message behind the others: it
    // gets a new place, and a stored one moves to the entry of that place.
    const uint64_t old_seq = qm.seq;
    qm.seq = allocate_seq();
    Durability& durability = vhost_.broker().durability();
    if (qm.stored) {
        durability.store_message(qm.message, {StoredEntry{this, qm.seq, qm.expires_ms}});  // one entry: inline
        durability.remove_entry(*this, old_seq);
    }
    if (paged_count_ > 0 && can_page_out(qm)) {
        page_out(std::move(qm));  // the tail lives on disk: the message joins it, as Queue::publish does
        return;
    }
    add_memory(qm.message->body_size());
    qm.enqueued_s = vhost_.broker().now_s();
    insert_ready(std::move(qm));
}

void Queue::settle(const QueuedMessage&) {
    if (stream_) stream_->settle();
    if (unacked_ > 0) --unacked_;
}

void Queue::reject(QueuedMessage qm) {
    if (stream_) {
        stream_->settle();
        return;
    }
    if (unacked_ > 0) --unacked_;
    if (deleted_) return;
    discard(std::move(qm), DeathReason::rejected);
}

size_t Queue::purge() {
    if (stream_) return 0;  // a stream is trimmed by retention only
    size_t n = ready_count();
    std::vector<uint64_t> stored;
    Durability& durability = vhost_.broker().durability();
    for (const auto& qm : ready_)
        if (qm.stored) stored.push_back(qm.seq);
    std::sort(stored.begin(), stored.end());  // a priority queue's order is not seq order
    durability.remove_entries(*this, stored);
    // Every stored entry from the first paged one on is in the paged tail.
    for (const PagedRun& run : runs_)
        if (!run.spilled) {
            durability.remove_entries_from(*this, run.next_seq);
            break;
        }
    drop_runs();
    ready_.clear();
    sub_memory(memory_bytes_);
    ready_bytes_ = 0;
    return n;
}

Status Queue::check_can_consume(bool exclusive) const {
    if (exclusive && !consumers_.empty())
        return amqp_error(reply::access_refused,
                          "queue '" + name_ + "' in vhost '" + vhost_.name() + "' in exclusive use");
    for (const auto& c : consumers_)
        if (c->exclusive)
            return amqp_error(reply::access_refused, "queue '" + name_ + "' in exclusive use");
    return std::nullopt;
}

void Queue::add_consumer(ConsumerPtr consumer) {
    if (stream_) stream_->add_consumer(consumer);  // a reader from its x-stream-offset
    if (options_.features.single_active_consumer) {
        consumers_.push_back(std::move(consumer));  // in order of arrival: the first is active
    } else {
        // Sorted by priority, highest first; a new consumer goes behind its equals.
        auto pos = std::find_if(consumers_.begin(), consumers_.end(),
                                [&](const ConsumerPtr& c) { return c->priority < consumer->priority; });
        consumers_.insert(pos, std::move(consumer));
    }
    had_consumer_ = true;
}

ConsumerPtr Queue::remove_consumer(const Consumer* consumer) {
    auto it = std::find_if(consumers_.begin(), consumers_.end(),
                           [&](const ConsumerPtr& c) { return c.get() == consumer; });
    if (it == consumers_.end()) return nullptr;
    ConsumerPtr removed = std::move(*it);
    consumers_.erase(it);
    if (stream_) stream_->remove_consumer(consumer);
    if (consumers_.empty() && options_.features.expires_ms) {
        touch();  // unused from now: x-expires counts from here
        wake_at(last_used_ms_ + *options_.features.expires_ms);
    }
    return removed;
}

void Queue::dispatch() {
    if (dispatching_ || deleted_) return;
    if (stream_) {
        stream_->dispatch();
        return;
    }
    dispatching_ = true;
    const bool single_active = options_.features.single_active_consumer;
    while (!consumers_.empty()) {
        if (ready_.empty()) {
            refill();
            if (ready_.empty()) break;
        }
        if (ready_.front().expires_ms != 0 && ready_.front().seq != arriving_seq_ &&
            ready_.front().expires_ms < vhost_.broker().now_ms()) {
            expire_head(vhost_.broker().now_ms(), false);
            continue;
        }
        // The first consumer with credit in priority order; the one served
        // moves behind the others of its priority (round-robin within a
        // priority, RabbitMQ's consumer priorities across them). A single
        // active consumer is the only one served.
        size_t n = single_active ? 1 : consumers_.size();
        size_t idx = 0;
        while (idx < n && !consumers_[idx]->channel->can_deliver(*consumers_[idx])) ++idx;
        if (idx == n) break;
        QueuedMessage qm = std::move(ready_.front());
        ready_.pop_front();
        take(qm);
        if (ready_.empty() || paged_count_ > 0) refill();  // read ahead before the head runs dry
        size_t band_end = idx + 1;
        while (band_end < n && consumers_[band_end]->priority == consumers_[idx]->priority) ++band_end;
        std::rotate(consumers_.begin() + static_cast<ptrdiff_t>(idx), consumers_.begin() + static_cast<ptrdiff_t>(idx) + 1,
                    consumers_.begin() + static_cast<ptrdiff_t>(band_end));
        const ConsumerPtr& consumer = consumers_[band_end - 1];  // deliver() does not touch consumers_
        if (!consumer->no_ack) ++unacked_;
        counters.note_delivery(qm.redelivered);
        stamp_delivery(qm);
        consumer->channel->deliver(consumer, std::move(qm));
    }
    dispatching_ = false;
}

std::vector<ConsumerPtr> Queue::mark_deleted() {
    deleted_ = true;
    if (stream_) stream_->mark_deleted();
    run_head_waiters();  // their gets find the queue gone
    ready_.clear();
    ready_bytes_ = 0;
    drop_runs();
    sub_memory(memory_bytes_);
    std::vector<ConsumerPtr> out;
    out.swap(consumers_);
    return out;
}

}  // namespace sluice::broker
