#include "storage/recovery.hpp"

#include <algorithm>
#include <string>

namespace sluice::storage::recovery {

namespace {

template <typename Record, typename Decode>
void scan_records(const Store& store, const std::string_view (&range)[2], Decode decode,
                  const std::function<void(const Record&)>& f) {
    store.scan(Column::meta, range[0], range[1], [&](std::string_view key, std::string_view value) {
        Record r;
        if (decode(key, value, r)) f(r);
        return true;
    });
}

}  // namespace

void exchanges(const Store& store, const std::function<void(const records::ExchangeRecord&)>& f) {
    scan_records<records::ExchangeRecord>(store, records::kExchanges, records::decode_exchange, f);
}

void queues(const Store& store, const std::function<void(const records::QueueRecord&)>& f) {
    scan_records<records::QueueRecord>(store, records::kQueues, records::decode_queue, f);
}

void bindings(const Store& store, const std::function<void(const records::BindingRecord&)>& f) {
    scan_records<records::BindingRecord>(
        store, records::kBindings,
        [](std::string_view key, std::string_view, records::BindingRecord& r) { return records::decode_binding(key, r); },
        f);
}

void delay_logs(const Store& store, const std::function<void(const records::DelayLogRecord&)>& f) {
    scan_records<records::DelayLogRecord>(store, records::kDelayLogs, records::decode_delay_log, f);
}

void dedup_entries(const Store& store, const std::function<void(const records::DedupRecord&)>& f) {
    scan_records<records::DedupRecord>(store, records::kDedup, records::decode_dedup, f);
}

Bodies bodies(const Store& store) {
    Bodies out;
    store.scan(Column::bodies, "", "", [&](std::string_view key, std::string_view) {
        const uint64_t id = read_u64_key(key);
        out.ids.insert(id);
        out.next_id = std::max(out.next_id, id + 1);
        return true;
    });
    return out;
}

void remove_other_queues(const Store& store, Batch& batch, const std::vector<uint64_t>& live) {
    uint64_t cursor = 0;
    for (;;) {
        uint64_t found = UINT64_MAX;
        store.scan(Column::msgs, message_key(cursor, 0), "", [&](std::string_view key, std::string_view) {
            found = read_u64_key(key);
            return false;
        });
        if (found == UINT64_MAX) break;
        if (!std::binary_search(live.begin(), live.end(), found))
            batch.remove_range(Column::msgs, message_key(found, 0), message_key(found + 1, 0));
        if (found == UINT64_MAX - 1) break;
        cursor = found + 1;
    }
}

}  // namespace sluice::storage::recovery
