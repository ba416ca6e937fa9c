#include "storage/records.hpp"

#include <algorithm>

#include "storage/store.hpp"

namespace sluice::storage::records {

namespace {

void put_name(std::string& out, std::string_view s) {
    s = s.substr(0, 255);
    out.push_back(static_cast<char>(s.size()));
    out.append(s);
}

void put_u32(std::string& out, uint32_t v) { append_u32_be(out, v); }

// Reads what put_name and friends wrote; once a read runs past the end,
// every later read fails too (ok() is false).
class Reader {
public:
    explicit Reader(std::string_view in) : in_(in) {}
    bool ok() const { return ok_; }
    size_t position() const { return at_; }
    std::string_view rest() const { return in_.substr(std::min(at_, in_.size())); }
    uint8_t u8() {
        if (!need(1)) return 0;
        return static_cast<uint8_t>(in_[at_++]);
    }
    uint32_t u32() {
        if (!need(4)) return 0;
        const uint32_t v = read_u32_be(in_, at_);
        at_ += 4;
        return v;
    }
    uint64_t u64() {
        if (!need(8)) return 0;
        const uint64_t v = read_u64_key(in_, at_);
        at_ += 8;
        return v;
    }
    std::string_view bytes(size_t n) {
        if (!need(n)) return {};
        std::string_view v = in_.substr(at_, n);
        at_ += n;
        return v;
    }
    std::string_view name() { return bytes(u8()); }

private:
    bool need(size_t n) {
        if (ok_ && in_.size() - at_ >= n) return true;
        ok_ = false;
        return false;
    }
    std::string_view in_;
    size_t at_ = 0;
    bool ok_ = true;
};

std::string key_of(char kind, std::string_view vhost, std::string_view name) {
    std::string k(1, kind);
    put_name(k, vhost);
    put_name(k, name);
    return k;
}

}  // namespace

std::string exchange_key(std::string_view vhost, std::string_view name) { return key_of('e', vhost, name); }

std::string exchange_value(uint8_t type, bool auto_delete, bool internal, std::string_view arguments) {
    std::string v;
    v.push_back(static_cast<char>(type));
    v.push_back(static_cast<char>((auto_delete ? 1 : 0) | (internal ? 2 : 0)));
    v.append(arguments);
    return v;
}

bool decode_exchange(std::string_view key, std::string_view value, ExchangeRecord& out) {
    if (key.empty()) return false;
    Reader k(key.substr(1));
    out.vhost = k.name();
    out.name = k.name();
    Reader r(value);
    out.type = r.u8();
    const uint8_t flags = r.u8();
    out.auto_delete = flags & 1;
    out.internal = flags & 2;
    out.arguments = r.rest();
    return k.ok() && r.ok();
}

std::string dedup_prefix(bool exchange, std::string_view vhost, std::string_view name) {
    std::string k(1, 'w');
    k.push_back(exchange ? 'e' : 'q');
    put_name(k, vhost);
    put_name(k, name);
    return k;
}

std::string dedup_key(std::string_view prefix, uint64_t seq) {
    std::string k(prefix);
    append_u64_key(k, seq);
    return k;
}

std::string dedup_end(std::string_view prefix) {
    std::string k(prefix);
    k.append(9, '\xff');  // past every 8-byte seq
    return k;
}

std::string dedup_value(uint64_t expires_ms, std::string_view key) {
    std::string v;
    append_u64_key(v, expires_ms);
    v.append(key);
    return v;
}

bool decode_dedup(std::string_view key, std::string_view value, DedupRecord& out) {
    if (key.size() < 2 || key[0] != 'w' || (key[1] != 'e' && key[1] != 'q')) return false;
    out.exchange = key[1] == 'e';
    Reader k(key.substr(2));
    out.vhost = k.name();
    out.name = k.name();
    out.prefix = key.substr(0, 2 + k.position());
    out.seq = k.u64();
    Reader r(value);
    out.expires_ms = r.u64();
    out.key = r.rest();
    return k.ok() && r.ok() && k.rest().empty();
}

std::string dedup_index_prefix(std::string_view prefix) {
    std::string k(prefix);
    if (!k.empty()) k[0] = 'h';
    return k;
}

std::string dedup_index_key(std::string_view index_prefix, uint64_t generation, uint64_t hash) {
    std::string k(index_prefix);
    append_u64_key(k, generation);
    append_u64_key(k, hash);
    return k;
}

std::string dedup_index_value(uint64_t seq, uint64_t expires_ms, std::string_view key) {
    std::string v;
    append_u64_key(v, seq);
    append_u64_key(v, expires_ms);
    v.append(key);
    return v;
}

bool decode_dedup_index_value(std::string_view value, uint64_t& seq, uint64_t& expires_ms, std::string_view& key) {
    Reader r(value);
    seq = r.u64();
    expires_ms = r.u64();
    key = r.rest();
    return r.ok();
}

std::string queue_key(std::string_view vhost, std::string_view name) { return key_of('q', vhost, name); }

std::string queue_value(uint64_t id, bool auto_delete, std::string_view arguments) {
    std::string v;
    append_u64_key(v, id);
    v.push_back(static_cast<char>(auto_delete ? 1 : 0));
    v.append(arguments);
    return v;
}

bool decode_queue(std::string_view key, std::string_view value, QueueRecord& out) {
    if (key.empty()) return false;
    Reader k(key.substr(1));
    out.vhost = k.name();
    out.name = k.name();
    Reader r(value);
    out.id = r.u64();
    out.auto_delete = r.u8() & 1;
    out.arguments = r.rest();
    return k.ok() && r.ok();
}

std::string binding_key(const BindingRecord& b) {
    std::string k = key_of('b', b.vhost, b.source);
    k.push_back(b.to_queue ? 'q' : 'e');
    put_name(k, b.destination);
    put_name(k, b.routing_key);
    k.append(b.arguments);
    return k;
}

bool decode_binding(std::string_view key, BindingRecord& out) {
    if (key.empty()) return false;
    Reader k(key.substr(1));
    out.vhost = k.name();
    out.source = k.name();
    const char kind = static_cast<char>(k.u8());
    out.to_queue = kind == 'q';
    out.destination = k.name();
    out.routing_key = k.name();
    out.arguments = k.rest();
    return k.ok() && (kind == 'q' || kind == 'e');
}

std::string delay_log_key(std::string_view vhost, std::string_view exchange) { return key_of('d', vhost, exchange); }

std::string delay_log_value(uint64_t id, uint64_t messages, uint64_t next_seq) {
    std::string v;
    append_u64_key(v, id);
    append_u64_key(v, messages);
    append_u64_key(v, next_seq);
    return v;
}

bool decode_delay_log(std::string_view key, std::string_view value, DelayLogRecord& out) {
    if (key.empty()) return false;
    Reader k(key.substr(1));
    out.vhost = k.name();
    out.exchange = k.name();
    Reader r(value);
    out.id = r.u64();
    out.messages = r.u64();
    out.next_seq = r.u64();
    return k.ok() && r.ok();
}

std::string delayed_key(uint64_t log_id, uint64_t due_ms, uint64_t seq) {
    std::string k;
    k.reserve(24);
    append_u64_key(k, log_id);
    append_u64_key(k, due_ms);
    append_u64_key(k, seq);
    return k;
}

bool decode_delayed_key(std::string_view key, DelayedKey& out) {
    if (key.size() != 24) return false;
    out.log_id = read_u64_key(key, 0);
    out.due_ms = read_u64_key(key, 8);
    out.seq = read_u64_key(key, 16);
    return true;
}

void append_message_header(std::string& out, std::string_view exchange, std::string_view routing_key,
                           size_t properties_size) {
    put_name(out, exchange);
    put_name(out, routing_key);
    put_u32(out, static_cast<uint32_t>(properties_size));
}

void append_message(std::string& out, const MessageParts& m) {
    append_message_header(out, m.exchange, m.routing_key, m.properties.size());
    out.append(m.properties);
    out.append(m.body);
}

bool decode_message(std::string_view in, MessageParts& out) {
    Reader r(in);
    out.exchange = r.name();
    out.routing_key = r.name();
    out.properties = r.bytes(r.u32());
    out.body = r.rest();
    return r.ok();
}

std::string body_key(uint64_t body_id) {
    std::string k;
    append_u64_key(k, body_id);
    return k;
}

void append_spill_record(std::string& out, uint64_t seq, uint64_t expires_ms, const MessageParts& m) {
    append_u64_key(out, seq);
    append_u64_key(out, expires_ms);
    const size_t len_at = out.size();
    put_u32(out, 0);
    append_message(out, m);
    const uint32_t len = static_cast<uint32_t>(out.size() - len_at - 4);
    for (int i = 0; i < 4; ++i) out[len_at + static_cast<size_t>(i)] = static_cast<char>(len >> (24 - 8 * i));
}

bool for_each_spill_record(std::string_view run,
                           const std::function<bool(uint64_t, uint64_t, const MessageParts&)>& f) {
    while (!run.empty()) {
        Reader r(run);
        const uint64_t seq = r.u64();
        const uint64_t expires_ms = r.u64();
        std::string_view record = r.bytes(r.u32());
        MessageParts m;
        if (!r.ok() || !decode_message(record, m) || !f(seq, expires_ms, m)) return false;
        run.remove_prefix(r.position());
    }
    return true;
}

}  // namespace sluice::storage::records
