// What the broker stores, as bytes: the keys and values of its records in
// `meta`, the records of a queue's log, shared bodies and spill records.
// Everything a data dir holds is written and read here, so its format is in
// one place; the broker maps its objects to these plain records
// (broker/durability.cpp) and knows nothing of the bytes.
//
// A name is length-prefixed with one octet (AMQP's shortstr: names are at
// most 255 bytes). Argument tables are opaque bytes here (the broker encodes
// them, AMQP field-table format with its u32 length).
//
// In `meta`:
//   'e' name(vhost) name(exchange)                → type u8, flags u8 (1 auto-delete, 2 internal), arguments
//   'q' name(vhost) name(queue)                   → queue id u64 BE, flags u8 (1 auto-delete), arguments
//   'b' name(vhost) name(source) kind u8 ('q' or 'e') name(destination) name(routing key) arguments → ""
//   'v', 'u', 'p', 'i': vhosts, users, permissions (broker/broker.hpp, broker/access_control.hpp)
//   'r': runtime parameters such as shovels (broker/runtime_parameters.hpp)
//   'd' name(vhost) name(exchange)                → delay log id u64 BE, messages u64 BE, next seq u64 BE
//                                                   (a durable x-delayed-message exchange's held messages)
//   'w' kind u8 ('e' or 'q') name(vhost) name(object) seq u64 BE → expires_ms u64 BE (0: never), key
//       a deduplication window's entry (broker/dedup.hpp), in insertion order per object
//   'h' kind u8 name(vhost) name(object) generation u64 BE hash u64 BE → seq u64 BE, expires_ms u64 BE, key
//       the same entry found by its key's hash: generation = seq / a size fixed by the window's
//       x-cache-size, so what a window lets go leaves by a range delete per generation
// In `msgs`: each durable queue's log (storage/queue_log.hpp), whose records
// are of a kind below: a message inline, or the id of a body in `bodies`.
// In `msgs`, besides: each delayed exchange's delay log, one key per held
// message, due-time order: log id (u64 BE, from the queue ids' space) | due
// Unix ms (u64 BE) | seq (u64 BE) → a message.
// In `bodies`: body id u64 BE → a message (shared by several queues' logs).
// A message: name(exchange) name(routing key) u32 BE properties length,
// properties, body.
// A spill record (storage/spill_file.hpp): seq u64 BE, expires_ms u64 BE,
// u32 BE length, a message.
//
// Threads: pure functions, any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace sluice::storage::records {

// Record kinds in a queue's log.
inline constexpr uint8_t kEntryInline = 1;   // payload: a message
inline constexpr uint8_t kEntryBodyRef = 2;  // payload: the u64 id of a body in `bodies`
inline constexpr uint8_t kEntryPage = 3;     // an older version's paged transient message (dropped at start)

// Key ranges in `meta`: [lower, upper).
inline constexpr std::string_view kExchanges[2] = {"e", "f"};
inline constexpr std::string_view kQueues[2] = {"q", "r"};
inline constexpr std::string_view kBindings[2] = {"b", "c"};
inline constexpr std::string_view kDelayLogs[2] = {"d", "e"};
inline constexpr std::string_view kDedup[2] = {"w", "x"};
inline constexpr std::string_view kDedupIndex[2] = {"h", "i"};

struct ExchangeRecord {
    std::string vhost, name;
    uint8_t type = 0;
    bool auto_delete = false;
    bool internal = false;
    std::string_view arguments;  // into the value
};
std::string exchange_key(std::string_view vhost, std::string_view name);
std::string exchange_value(uint8_t type, bool auto_delete, bool internal, std::string_view arguments);
bool decode_exchange(std::string_view key, std::string_view value, ExchangeRecord& out);

struct QueueRecord {
    std::string vhost, name;
    uint64_t id = 0;
    bool auto_delete = false;
    std::string_view arguments;  // into the value
};
std::string queue_key(std::string_view vhost, std::string_view name);
std::string queue_value(uint64_t id, bool auto_delete, std::string_view arguments);
bool decode_queue(std::string_view key, std::string_view value, QueueRecord& out);

struct BindingRecord {
    std::string vhost, source;
    bool to_queue = true;
    std::string destination, routing_key;
    std::string_view arguments;  // into the key
};
std::string binding_key(const BindingRecord& b);
bool decode_binding(std::string_view key, BindingRecord& out);

// A delayed exchange's log: its id, how many messages it holds (written in
// every batch that changes it, so it matches them after a crash) and the
// next seq to give (ties among equal due times keep publish order).
struct DelayLogRecord {
    std::string vhost, exchange;
    uint64_t id = 0;
    uint64_t messages = 0;
    uint64_t next_seq = 1;
};
std::string delay_log_key(std::string_view vhost, std::string_view exchange);
std::string delay_log_value(uint64_t id, uint64_t messages, uint64_t next_seq);
bool decode_delay_log(std::string_view key, std::string_view value, DelayLogRecord& out);
// The key of a held message in `msgs`.
std::string delayed_key(uint64_t log_id, uint64_t due_ms, uint64_t seq);
struct DelayedKey {
    uint64_t log_id = 0, due_ms = 0, seq = 0;
};
bool decode_delayed_key(std::string_view key, DelayedKey& out);
struct DedupRecord {
    bool exchange = true;  // else a queue's
    std::string vhost, name;
    uint64_t seq = 0;
    uint64_t expires_ms = 0;
    std::string_view prefix;  // into the key: the object's prefix
    std::string_view key;     // into the value
};
// The common prefix of one object's window entries; an entry's key is the
// prefix and its seq. Every entry of the object is in [prefix, dedup_end(prefix)).
std::string dedup_prefix(bool exchange, std::string_view vhost, std::string_view name);
std::string dedup_key(std::string_view prefix, uint64_t seq);
std::string dedup_end(std::string_view prefix);
std::string dedup_value(uint64_t expires_ms, std::string_view key);
bool decode_dedup(std::string_view key, std::string_view value, DedupRecord& out);
// The key-addressed index of an object's entries (its dedup_prefix): every
// record of it is in [dedup_index_prefix(prefix), dedup_end(that)).
std::string dedup_index_prefix(std::string_view prefix);
std::string dedup_index_key(std::string_view index_prefix, uint64_t generation, uint64_t hash);
std::string dedup_index_value(uint64_t seq, uint64_t expires_ms, std::string_view key);
bool decode_dedup_index_value(std::string_view value, uint64_t& seq, uint64_t& expires_ms, std::string_view& key);

// A message's parts (views into the bytes it was decoded from).
struct MessageParts {
    std::string_view exchange, routing_key, properties, body;
};
// Everything of a message before its properties' bytes: written apart so
// that properties and body can be appended without a copy.
void append_message_header(std::string& out, std::string_view exchange, std::string_view routing_key,
                           size_t properties_size);
void append_message(std::string& out, const MessageParts& m);
bool decode_message(std::string_view in, MessageParts& out);

// The key of a shared body in `bodies`.
std::string body_key(uint64_t body_id);

void append_spill_record(std::string& out, uint64_t seq, uint64_t expires_ms, const MessageParts& m);
// Visits a spill run's records in order; false if the bytes are damaged.
bool for_each_spill_record(std::string_view run,
                           const std::function<bool(uint64_t seq, uint64_t expires_ms, const MessageParts& m)>& f);

}  // namespace sluice::storage::records
