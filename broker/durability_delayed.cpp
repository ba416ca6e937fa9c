// Durability's side of delayed messages (broker/delayed_messages.hpp): the
// delay logs of x-delayed-message exchanges in `msgs` (a key per held
// message: log id | due ms | seq) and the 'd' records of durable ones
// (storage/records.hpp), and reading a log's next keys back off the broker
// thread.
#include <memory>

#include "broker/delayed_messages.hpp"
#include "broker/durability.hpp"
#include "broker/durability_detail.hpp"
#include "broker/exchange.hpp"
#include "broker/sender_selected.hpp"
#include "broker/vhost.hpp"
#include "storage/records.hpp"

namespace sluice::broker {

using storage::Column;

namespace {

MessagePtr held_message(std::string_view value) {
    std::shared_ptr<Message> m = durability_detail::decode_message(value);
    if (!m) return nullptr;
    // Its CC keys again (the header stayed; BCC's were stripped at publish
    // and kept in memory only, so they are gone).
    apply_sender_selected(m);
    return m;
}

}  // namespace

void Durability::put_delay_log(const VHost& v, const Exchange& e, uint64_t id) {
    if (!store_ || !e.durable()) return;
    DelayLogRecord& r = delay_logs_[id];
    r.key = storage::records::delay_log_key(v.name(), e.name());
    if (const DelayedMessages* d = e.delayed()) {
        r.messages = d->count();
        r.next_seq = d->next_seq();
    }
    if (recovering_) return;
    batch().put(Column::meta, r.key, storage::records::delay_log_value(id, r.messages, r.next_seq));
    schedule_commit();
}

void Durability::delay_log_changed(uint64_t id, uint64_t messages, uint64_t next_seq) {
    auto it = delay_logs_.find(id);
    if (it == delay_logs_.end()) return;  // not durable
    it->second.messages = messages;
    it->second.next_seq = next_seq;
    if (!it->second.dirty) {
        it->second.dirty = true;
        dirty_delay_logs_.push_back(id);
    }
    schedule_commit();
}

void Durability::flush_delay_logs(storage::Batch& batch) {
    for (uint64_t id : dirty_delay_logs_) {
        auto it = delay_logs_.find(id);
        if (it == delay_logs_.end() || !it->second.dirty) continue;
        it->second.dirty = false;
        batch.put(Column::meta, it->second.key,
                  storage::records::delay_log_value(id, it->second.messages, it->second.next_seq));
    }
    dirty_delay_logs_.clear();
}

void Durability::hold_delayed(uint64_t id, uint64_t due_ms, uint64_t seq, const Message& m) {
    if (!store_) return;
    std::string& value = scratch_;
    value.clear();
    storage::records::append_message_header(value, m.exchange(), m.routing_key(), m.properties().size());
    batch().put(Column::msgs, storage::records::delayed_key(id, due_ms, seq), {value, m.properties(), m.body()});
    schedule_commit();
}

void Durability::release_delayed(uint64_t id, uint64_t due_ms, uint64_t seq) {
    if (!store_) return;
    batch().remove(Column::msgs, storage::records::delayed_key(id, due_ms, seq));
    schedule_commit();
}

void Durability::read_delayed_off_thread(uint64_t id, uint64_t due_ms, uint64_t seq, size_t max_count,
                                         size_t max_bytes, std::function<void(DelayedRead&)> done) {
    if (!store_) return;
    // After the sync: every message held so far is in the database, so the
    // read cannot miss one that left memory before it started.
    after_sync([this, alive = std::weak_ptr<bool>(alive_), id, due_ms, seq, max_count, max_bytes,
                done = std::move(done)](bool) mutable {
        if (alive.expired() || !store_) return;
        auto read = std::make_shared<DelayedRead>();
        store_->read_off_thread([store = store_, executor = executor_, alive, read, id, due_ms, seq, max_count,
                                 max_bytes, done = std::move(done)] {
            size_t bytes = 0;
            bool stopped = false;
            store->scan(Column::msgs, storage::records::delayed_key(id, due_ms, seq),
                        storage::message_key_of(id + 1, 0), [&](std::string_view key, std::string_view value) {
                            if (read->entries.size() >= max_count || bytes >= max_bytes) {
                                stopped = true;
                                return false;
                            }
                            storage::records::DelayedKey k;
                            MessagePtr m = held_message(value);
                            if (storage::records::decode_delayed_key(key, k) && m) {
                                bytes += value.size();
                                read->entries.push_back({k.due_ms, k.seq, std::move(m)});
                            }
                            return true;
                        });
            read->exhausted = !stopped;
            executor->post([alive, read, done] {
                if (!alive.expired()) done(*read);
            });
        });
    });
}

}  // namespace sluice::broker
