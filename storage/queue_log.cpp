#include "storage/queue_log.hpp"

#include <cstdio>

#include "storage/segment_files.hpp"

#include <algorithm>

namespace sluice::storage {

namespace {

constexpr char kChunkMagic = 0x04;
constexpr size_t kRecordHeader = 8 + 1 + 8 + 4;
// A chunk is closed (the next record starts another) past these, so that a
// read of one message never decodes an unbounded value and a sparse queue's
// live bits stay small.
constexpr uint32_t kMaxRecords = 4096;
constexpr size_t kMaxChunkBytes = 4u << 20;
constexpr uint64_t kMaxSeqSpan = 1u << 16;

// The previous format's single-record entries: kind, with 0x80 = a u64
// expiry follows.
constexpr uint8_t kLegacyExpires = 0x80;

void put_u64(std::string& out, uint64_t v) { append_u64_key(out, v); }
void put_u32(std::string& out, uint32_t v) { append_u32_be(out, v); }
uint32_t get_u32(std::string_view s, size_t at) { return read_u32_be(s, at); }

std::string encode_bits(const std::vector<uint64_t>& bits) {
    std::string out;
    out.reserve(bits.size() * 8);
    for (uint64_t w : bits)
        for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(w >> (i * 8)));  // little-endian words
    return out;
}

std::vector<uint64_t> decode_bits(std::string_view s) {
    std::vector<uint64_t> bits(s.size() / 8);
    for (size_t w = 0; w < bits.size(); ++w)
        for (size_t i = 0; i < 8; ++i) bits[w] |= uint64_t{static_cast<uint8_t>(s[w * 8 + i])} << (i * 8);
    return bits;
}

// Set bits in [lo, hi].
size_t live_in(const std::vector<uint64_t>& bits, uint64_t lo, uint64_t hi) {
    size_t n = 0;
    for (uint64_t w = lo / 64; w <= hi / 64 && w < bits.size(); ++w) {
        uint64_t word = bits[w];
        if (w == lo / 64) word &= ~uint64_t{0} << (lo % 64);
        if (w == hi / 64 && hi % 64 != 63) word &= (uint64_t{1} << (hi % 64 + 1)) - 1;
        n += static_cast<size_t>(__builtin_popcountll(word));
    }
    return n;
}

bool bit(const std::vector<uint64_t>& bits, uint64_t i) {
    return i / 64 < bits.size() && (bits[i / 64] >> (i % 64)) & 1;
}

}  // namespace

std::string chunk_key(uint64_t queue_id, uint64_t first_seq) { return message_key(queue_id, first_seq); }

std::string ack_key(uint64_t queue_id, uint64_t first_seq) {
    std::string k = message_key(queue_id, first_seq);
    k.push_back('a');
    return k;
}

void QueueLog::mark_dirty(uint64_t first, Chunk& c) {
    if (c.dirty) return;
    c.dirty = true;
    dirty_.push_back(first);
}

void QueueLog::append(uint64_t seq, uint8_t kind, uint64_t expires_ms,
                      std::initializer_list<std::string_view> payload) {
    Chunk* c = nullptr;
    if (open_first_ != 0) {
        auto it = chunks_.find(open_first_);
        if (it != chunks_.end() && it->second.records < kMaxRecords && it->second.pending.size() < kMaxChunkBytes &&
            seq > it->second.last_seq && seq - open_first_ < kMaxSeqSpan)
            c = &it->second;
    }
    if (!c) {
        open_first_ = seq;
        c = &chunks_[seq];
        c->pending.push_back(kChunkMagic);
        open_bytes_ += 1;
        mark_dirty(seq, *c);
    }
    const uint64_t i = seq - open_first_;
    if (c->bits.size() <= i / 64) c->bits.resize(i / 64 + 1, 0);
    c->bits[i / 64] |= uint64_t{1} << (i % 64);
    ++c->records;
    ++c->live;
    ++live_;
    c->last_seq = seq;
    size_t len = 0;
    for (auto p : payload) len += p.size();
    const size_t before = c->pending.size();
    put_u64(c->pending, seq);
    c->pending.push_back(static_cast<char>(kind));
    put_u64(c->pending, expires_ms);
    put_u32(c->pending, static_cast<uint32_t>(len));
    for (auto p : payload) c->pending.append(p);
    open_bytes_ += c->pending.size() - before;
}

void QueueLog::clear_bit(uint64_t first, Chunk& c, uint64_t seq) {
    const uint64_t i = seq - first;
    c.bits[i / 64] &= ~(uint64_t{1} << (i % 64));
    --c.live;
    --live_;
    mark_dirty(first, c);
}

bool QueueLog::remove(uint64_t seq) {
    auto it = chunks_.upper_bound(seq);
    if (it == chunks_.begin()) return false;
    --it;
    Chunk& c = it->second;
    if (seq > c.last_seq || !bit(c.bits, seq - it->first)) return false;
    clear_bit(it->first, c, seq);
    return true;
}

size_t QueueLog::remove_from(uint64_t seq) {
    size_t n = 0;
    auto it = chunks_.upper_bound(seq);
    if (it != chunks_.begin()) --it;
    for (; it != chunks_.end(); ++it) {
        Chunk& c = it->second;
        if (c.last_seq < seq || c.live == 0) continue;
        const uint64_t first = it->first;
        for (uint64_t s = std::max(seq, first); s <= c.last_seq && c.live > 0; ++s) {
            if (!bit(c.bits, s - first)) continue;
            clear_bit(first, c, s);
            ++n;
        }
    }
    return n;
}

void QueueLog::keep_live_records(uint64_t first, Chunk& c) {
    // Records are found by their seq, never by their place in the value:
    // the live bits stay as they are, and recovery sees every record it
    // finds as live (no ack record needed).
    std::string kept;
    kept.reserve(c.pending.size());
    kept.push_back(kChunkMagic);
    for_each_record(c.pending, first, [&](const LogRecord& r) {
        if (bit(c.bits, r.seq - first))  // the whole record: its header precedes its payload
            kept.append(r.payload.data() - kRecordHeader, kRecordHeader + r.payload.size());
    });
    c.pending.swap(kept);
    c.records = c.live;
}

void QueueLog::put_chunk(Batch& batch, uint64_t first, Chunk& c) {
    c.file = batch.put_chunk(Column::msgs, chunk_key(queue_id_, first), c.pending);
    in_flight_.push_back(first);  // its bytes stay readable here until the batch is synced
    if (c.live != c.records) {    // some of it is gone already: its live bits too
        batch.put(Column::msgs, ack_key(queue_id_, first), encode_bits(c.bits));
        c.ack_record = true;
    }
}

bool QueueLog::flush(Batch& batch) {
    bool put = false;
    for (uint64_t first : dirty_) {
        auto it = chunks_.find(first);
        if (it == chunks_.end()) continue;
        Chunk& c = it->second;
        c.dirty = false;
        if (c.rewrite) {
            c.rewrite = false;
            if (c.written && c.live > 0) {
                // Compaction: the same bytes at a new place; the old one is
                // let go once this batch is synced.
                unrefs_.emplace_back(c.file, c.size);
                put_chunk(batch, first, c);
                put = true;
                continue;
            }
            std::string().swap(c.pending);
        }
        if (!c.written) {
            open_bytes_ -= std::min(open_bytes_, c.pending.size());
            if (c.live == 0) {  // consumed before it was ever written: nothing to write
                chunks_.erase(it);
                continue;
            }
            if (c.live < c.records) keep_live_records(first, c);
            c.written = true;
            c.size = static_cast<uint32_t>(c.pending.size());
            stored_bytes_ += c.size;
            put_chunk(batch, first, c);
            put = true;
            continue;
        }
        if (c.live == 0) {
            batch.remove(Column::msgs, chunk_key(queue_id_, first));
            if (c.file != 0) unrefs_.emplace_back(c.file, c.size);
            if (c.ack_record) batch.remove(Column::msgs, ack_key(queue_id_, first));
            stored_bytes_ -= std::min<uint64_t>(stored_bytes_, c.size);
            // What the database frees: the bytes, or only a pointer to them
            // (the segment file's space comes back when the file goes).
            freed_bytes_ += c.file != 0 ? kSegmentPointerSize : c.size;
            chunks_.erase(it);
            continue;
        }
        batch.put(Column::msgs, ack_key(queue_id_, first), encode_bits(c.bits));
        c.ack_record = true;
    }
    dirty_.clear();
    open_first_ = 0;
    return put;
}

void QueueLog::release_pending() {
    for (uint64_t first : in_flight_) {
        auto it = chunks_.find(first);
        if (it != chunks_.end() && it->second.written) std::string().swap(it->second.pending);
    }
    in_flight_.clear();
}

void QueueLog::for_each_record(std::string_view value, uint64_t key_seq,
                               const std::function<void(const LogRecord&)>& f) {
    if (value.empty()) return;
    if (value[0] != kChunkMagic) {
        // A single entry of the previous format.
        LogRecord r;
        r.seq = key_seq;
        uint8_t kind = static_cast<uint8_t>(value[0]);
        size_t at = 1;
        if (kind & kLegacyExpires) {
            if (value.size() < 9) return;
            r.expires_ms = read_u64_key(value, 1);
            at = 9;
        }
        r.kind = kind & ~kLegacyExpires;
        r.payload = value.substr(at);
        f(r);
        return;
    }
    size_t at = 1;
    while (at + kRecordHeader <= value.size()) {
        LogRecord r;
        r.seq = read_u64_key(value, at);
        r.kind = static_cast<uint8_t>(value[at + 8]);
        r.expires_ms = read_u64_key(value, at + 9);
        const uint32_t len = get_u32(value, at + 17);
        at += kRecordHeader;
        if (at + len > value.size()) return;  // damaged: stop here
        r.payload = value.substr(at, len);
        at += len;
        f(r);
    }
}

std::vector<QueueLog::ChunkRead> QueueLog::plan_read(uint64_t from, uint64_t to, size_t max, bool copy) const {
    std::vector<ChunkRead> out;
    size_t n = 0;
    auto it = chunks_.upper_bound(from);
    if (it != chunks_.begin()) --it;
    for (; it != chunks_.end() && it->first <= to && n < max; ++it) {
        const Chunk& c = it->second;
        if (c.live == 0 || c.last_seq < from) continue;
        ChunkRead r;
        r.first = it->first;
        r.key = chunk_key(queue_id_, it->first);
        if (!c.pending.empty()) {
            if (copy) r.held = c.pending;
            else r.pending = c.pending;
        }
        r.bits = c.bits;
        out.push_back(std::move(r));
        n += live_in(c.bits, std::max(from, it->first) - it->first, std::min(to, c.last_seq) - it->first);
    }
    return out;
}

uint64_t QueueLog::read_planned(const Store& store, const std::vector<ChunkRead>& plan, uint64_t from, uint64_t to,
                                size_t max, const std::function<void(const LogRecord&)>& f) {
    uint64_t last = 0;
    size_t n = 0;
    std::string value;
    for (const ChunkRead& c : plan) {
        if (n >= max) break;
        std::string_view v = !c.pending.empty() ? c.pending : std::string_view(c.held);
        if (v.empty()) {
            if (!store.get(Column::msgs, c.key, value, false)) continue;
            std::string error;
            if (!store.resolve_chunk(value, error)) {
                std::fprintf(stderr, "sluiced: queue log: reading a chunk: %s\n", error.c_str());
                continue;
            }
            v = value;
        }
        for_each_record(v, c.first, [&](const LogRecord& r) {
            if (n >= max || r.seq < from || r.seq > to || !bit(c.bits, r.seq - c.first)) return;
            f(r);
            last = r.seq;
            ++n;
        });
    }
    return last;
}

uint64_t QueueLog::read(const Store& store, uint64_t from, uint64_t to, size_t max,
                        const std::function<void(const LogRecord&)>& f) const {
    return read_planned(store, plan_read(from, to, max, false), from, to, max, f);
}

bool QueueLog::is_live(uint64_t seq) const {
    auto it = chunks_.upper_bound(seq);
    if (it == chunks_.begin()) return false;
    --it;
    return seq <= it->second.last_seq && bit(it->second.bits, seq - it->first);
}

size_t QueueLog::recover(Store& store, Batch& cleanup, const std::function<void(const LogRecord&)>& f) {
    size_t visited = 0;
    std::string value;
    uint64_t first = 0;
    bool have = false;
    std::vector<uint64_t> acked_bits;
    bool have_ack = false;
    auto finish = [&] {
        if (!have) return;
        have = false;
        uint32_t file = 0;
        std::string error;
        if (!store.resolve_chunk(value, error, &file)) {
            // A pointer is made durable only after its bytes are: this is
            // damage (or a lost file), not a crash's torn tail. Said loudly
            // and counted; the chunk's key goes (nothing to read).
            std::fprintf(stderr, "sluiced: queue log %llu: the chunk at seq %llu is lost: %s\n",
                         static_cast<unsigned long long>(queue_id_), static_cast<unsigned long long>(first),
                         error.c_str());
            ++damaged_;
            cleanup.remove(Column::msgs, chunk_key(queue_id_, first));
            if (have_ack) cleanup.remove(Column::msgs, ack_key(queue_id_, first));
            return;
        }
        if (file != 0) store.segments()->ref(file, value.size());  // resolved: the store has segment files
        Chunk& c = chunks_[first];
        c.written = true;
        c.file = file;
        c.size = static_cast<uint32_t>(value.size());
        stored_bytes_ += c.size;
        c.ack_record = have_ack;
        for_each_record(value, first, [&](const LogRecord& r) {
            if (r.seq < first || r.seq - first >= kMaxSeqSpan) return;  // damaged
            c.last_seq = std::max(c.last_seq, r.seq);
            ++c.records;
            const uint64_t i = r.seq - first;
            if (have_ack && !bit(acked_bits, i)) return;
            if (c.bits.size() <= i / 64) c.bits.resize(i / 64 + 1, 0);
            c.bits[i / 64] |= uint64_t{1} << (i % 64);
            ++c.live;
            ++live_;
            ++visited;
            f(r);
        });
        if (c.live == 0) mark_dirty(first, c);  // every record acked: the next flush deletes it
    };
    store.scan(Column::msgs, message_key(queue_id_, 0), message_key(queue_id_ + 1, 0),
               [&](std::string_view key, std::string_view v) {
                   if (key.size() == 16) {
                       finish();
                       first = read_u64_key(key, 8);
                       value.assign(v);
                       have = true;
                       have_ack = false;
                   } else if (key.size() == 17 && key[16] == 'a') {
                       if (have && read_u64_key(key, 8) == first) {
                           acked_bits = decode_bits(v);
                           have_ack = true;
                       } else {
                           cleanup.remove(Column::msgs, key);  // its chunk is gone
                       }
                   }
                   return true;
               });
    finish();
    return visited;
}

void QueueLog::stored_files(std::vector<Unref>& out) const {
    for (const auto& [first, c] : chunks_)
        if (c.written && c.file != 0) out.emplace_back(c.file, c.size);
    out.insert(out.end(), unrefs_.begin(), unrefs_.end());  // deleted by a flush whose batch is not yet taken
}

void QueueLog::chunks_in(uint32_t file, std::vector<uint64_t>& firsts) const {
    for (const auto& [first, c] : chunks_)
        if (c.written && c.file == file && c.live > 0 && !c.rewrite) firsts.push_back(first);
}

bool QueueLog::rewrite(uint64_t first, uint32_t file, std::string bytes) {
    auto it = chunks_.find(first);
    if (it == chunks_.end()) return false;
    Chunk& c = it->second;
    if (!c.written || c.file != file || c.live == 0 || c.rewrite || bytes.size() != c.size) return false;
    c.pending = std::move(bytes);
    c.rewrite = true;
    mark_dirty(first, c);
    return true;
}

std::vector<QueueLogs::ChunkRef> QueueLogs::chunks_in(uint32_t file) const {
    std::vector<ChunkRef> out;
    std::vector<uint64_t> firsts;
    for (const auto& [id, log] : logs_) {
        firsts.clear();
        log->chunks_in(file, firsts);
        for (uint64_t f : firsts) out.push_back({id, f});
    }
    return out;
}

bool QueueLogs::rewrite(const ChunkRef& c, uint32_t file, std::string bytes) {
    bool done = false;
    change(c.queue_id, [&](QueueLog& log) { done = log.rewrite(c.first, file, std::move(bytes)); }, false);
    return done;
}

QueueLog& QueueLogs::fresh(uint64_t queue_id) {
    auto& log = logs_[queue_id];
    log = std::make_unique<QueueLog>(queue_id);
    return *log;
}

void QueueLogs::note(uint64_t queue_id) {
    // No search for a duplicate (it would make recovery quadratic in the
    // number of queues): a log listed twice is flushed once, the second
    // flush finding nothing left to write.
    QueueLog* log = find(queue_id);
    if (log && log->needs_flush()) dirty_.push_back(queue_id);
}

void QueueLogs::flush(Batch& batch, uint64_t reclaim_bytes, std::vector<uint64_t>& reclaim) {
    for (uint64_t id : dirty_) {
        QueueLog* log = find(id);
        if (!log) continue;  // deleted since it changed
        if (log->flush(batch)) in_flight_.push_back(id);
        log->take_unrefs(unrefs_);
        if (log->live() == 0 && log->freed_bytes() >= reclaim_bytes) {
            log->take_freed_bytes();
            reclaim.push_back(id);
        }
    }
    dirty_.clear();
    open_bytes_ = 0;
    // This batch deletes their chunks (a failed batch's stay until a later
    // one succeeds: it is written again first).
    in_flight_unrefs_.insert(in_flight_unrefs_.end(), unrefs_.begin(), unrefs_.end());
    unrefs_.clear();
}

void QueueLogs::committed(bool ok) {
    if (!ok) return;
    if (!in_flight_unrefs_.empty() && store_ && store_->segments()) {
        for (const auto& [f, bytes] : in_flight_unrefs_) store_->segments()->unref(f, bytes);
        store_->collect_segments();
    }
    in_flight_unrefs_.clear();
    for (uint64_t id : in_flight_)
        if (QueueLog* log = find(id)) log->release_pending();
    in_flight_.clear();
}

std::optional<uint64_t> QueueLogs::erase(uint64_t queue_id) {
    auto it = logs_.find(queue_id);
    if (it == logs_.end()) return std::nullopt;
    const uint64_t bytes = it->second->stored_bytes() + it->second->freed_bytes();
    // Its range delete joins the gathering batch: the files go once it is synced.
    it->second->stored_files(unrefs_);
    logs_.erase(it);
    return bytes;
}

}  // namespace sluice::storage
