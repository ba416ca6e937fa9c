// Durability::recover: what storage::recovery reads at start, applied to
// the broker — vhosts' exchanges, queues and bindings, each durable queue's
// log (its entries, in memory up to the queue's limits, the rest left paged),
// shared bodies checked to exist, streams' segment records and delayed
// exchanges' logs — before the broker serves anyone.
#include <chrono>
#include <cstdio>
#include <unordered_map>
#include <unordered_set>

#include "broker/broker.hpp"
#include "broker/delayed_messages.hpp"
#include "broker/durability.hpp"
#include "broker/durability_detail.hpp"
#include "broker/queue.hpp"
#include "broker/vhost.hpp"
#include "storage/records.hpp"
#include "storage/recovery.hpp"

namespace sluice::broker {

using storage::Column;
using storage::records::kEntryBodyRef;
using storage::records::kEntryInline;
using storage::records::kEntryPage;
using namespace durability_detail;

RecoveryStats Durability::recover(Broker& broker) {
    RecoveryStats st;
    if (!store_) return st;
    auto start = std::chrono::steady_clock::now();
    recovering_ = true;
    namespace rec = storage::recovery;

    rec::exchanges(*store_, [&](const storage::records::ExchangeRecord& r) {
        ExchangeOptions o;
        o.type = static_cast<ExchangeType>(r.type);
        o.durable = true;
        o.auto_delete = r.auto_delete;
        o.internal = r.internal;
        VHost* vhost = broker.find_vhost(r.vhost);
        if (!vhost || !decode_arguments(r.arguments, o.arguments)) return;
        vhost->restore_exchange(r.name, o);
        ++st.exchanges;
    });

    std::vector<std::shared_ptr<Queue>> queues;
    struct RecoveredDelayLog {
        DelayedMessages* delayed;
        uint64_t id, messages, next_seq;
    };
    std::vector<RecoveredDelayLog> delayed;
    std::vector<uint64_t> delayed_ids;
    rec::queues(*store_, [&](const storage::records::QueueRecord& r) {
        QueueOptions o;
        o.durable = true;
        o.auto_delete = r.auto_delete;
        VHost* vhost = broker.find_vhost(r.vhost);
        if (!vhost || !decode_arguments(r.arguments, o.arguments)) return;
        queues.push_back(vhost->restore_queue(r.name, std::move(o), r.id));
        ++st.queues;
    });

    rec::bindings(*store_, [&](const storage::records::BindingRecord& r) {
        amqp::FieldTable args;
        VHost* vhost = broker.find_vhost(r.vhost);
        if (!vhost || !decode_arguments(r.arguments, args)) return;
        if (r.to_queue) vhost->bind_queue(r.destination, r.source, r.routing_key, args);
        else vhost->bind_exchange(r.destination, r.source, r.routing_key, args);
        ++st.bindings;
    });

    recover_dedup(broker);

    // Delayed exchanges' logs: their counts; the messages stay in the store
    // until their window is read back.
    rec::delay_logs(*store_, [&](const storage::records::DelayLogRecord& r) {
        VHost* vhost = broker.find_vhost(r.vhost);
        Exchange* ex = vhost ? vhost->find_exchange(r.exchange) : nullptr;
        DelayedMessages* d = ex && ex->durable() ? ex->delayed() : nullptr;
        if (!d || d->log_id() != 0) {  // its exchange is gone: the log goes (remove_other_queues)
            batch().remove(Column::meta, storage::records::delay_log_key(r.vhost, r.exchange));
            return;
        }
        broker.saw_queue_id(r.id);
        delay_logs_[r.id].key = storage::records::delay_log_key(r.vhost, r.exchange);
        delay_logs_[r.id].messages = r.messages;
        delay_logs_[r.id].next_seq = r.next_seq;
        delayed_ids.push_back(r.id);
        delayed.push_back({d, r.id, r.messages, r.next_seq});
    });

    // Shared bodies first: which exist (an entry pointing at one that does
    // not is a lost message, and says so).
    rec::Bodies stored = rec::bodies(*store_);
    const auto& stored_bodies = stored.ids;
    shared_bodies_.next_id_at_least(stored.next_id);

    // Messages: each durable queue's log in order. The head goes to memory
    // (within the queue's and the broker's memory limits), the rest stays
    // paged (not even decoded). Bodies shared by several queues come back as
    // one Message; their reference counts are rebuilt from the entries.
    // Page entries (transient, of an older version) are dropped.
    std::unordered_map<uint64_t, MessagePtr> bodies;
    std::vector<uint64_t> queue_ids = delayed_ids;
    for (const auto& q : queues) {
        queue_ids.push_back(q->id());
        if (auto it = streams_.find(q->id()); it != streams_.end()) {
            // A stream: its segment records say where it starts and ends;
            // no chunk is read.
            it->second.log->recover(*store_);
            st.messages += it->second.log->end() - it->second.log->first();
            continue;
        }
        storage::QueueLog* raw = &queue_logs_.fresh(q->id());
        raw->recover(*store_, batch(), [&](const storage::LogRecord& r) {
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
                shared_bodies_.recovered(q->id(), seq, body_id);
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
        st.missing_bodies += raw->damaged_chunks();  // chunks whose segment bytes were lost (each logged)
        queue_logs_.note(q->id());
    }
    flush_logs(batch());
    queue_logs_.forget_in_flight();  // recovered chunks hold no pending bytes
    bodies.clear();
    for (const auto& q : queues) q->start();  // TTL and x-expires timers

    // Shared bodies no entry refers to any more (left by a crash between an
    // entry's removal and its body's, or by a path that missed a release).
    for (uint64_t id : stored_bodies)
        if (!shared_bodies_.referenced(id)) batch().remove(Column::bodies, storage::records::body_key(id));
    // Ranges of queues that are not durable (they paged before the restart).
    std::sort(queue_ids.begin(), queue_ids.end());
    rec::remove_other_queues(*store_, batch(), queue_ids);
    if (!batch().empty()) {
        storage::Batch cleanup = std::move(batch());
        batch() = store_->new_batch();
        const bool ok = store_->commit_now(std::move(cleanup)).empty();
        queue_logs_.committed(ok);  // chunks it deleted drop their segment files' references
    }
    // Segment files no stored chunk points at (left by a crash between a
    // chunk's write and its batch's, or emptied by the cleanup) go.
    store_->collect_segments();
    recovering_ = false;
    // Durable delayed exchanges: their windows are read back (now that the
    // cleanup is written) and what is due is routed; one without a log
    // gets a new one.
    for (const RecoveredDelayLog& r : delayed) r.delayed->recover(r.id, r.messages, r.next_seq);
    for (VHost* vhost : broker.vhosts())
        for (const auto& [name, ex] : vhost->exchanges())
            if (DelayedMessages* d = ex->delayed(); d && d->log_id() == 0) {
                d->set_log(broker.next_queue_id());
                put_delay_log(*vhost, *ex, d->log_id());
            }
    st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return st;
}

}  // namespace sluice::broker
