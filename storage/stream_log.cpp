#include "storage/stream_log.hpp"

#include <algorithm>

namespace sluice::storage {

namespace {

constexpr uint8_t kChunkFormat = 0x05;
constexpr size_t kChunkHeader = 1 + 4 + 8;
constexpr uint64_t kSegmentBit = uint64_t{1} << 63;
constexpr size_t kSegmentValue = 6 * 8;

void put_u32(std::string& out, uint32_t v) {
    for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void set_u32(std::string& out, size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) out[at + i] = static_cast<char>((v >> (8 * (3 - i))) & 0xff);
}

uint32_t get_u32(std::string_view in, size_t at) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(in[at + i]);
    return v;
}

// Visits a chunk's records from `from` on; false when the chunk is damaged
// or `f` stopped. `count` gets the chunk's record count.
bool for_each_record(std::string_view value, uint64_t first, uint64_t from, uint32_t& count,
                     const std::function<bool(const StreamRecord&)>& f) {
    count = 0;
    if (value.size() < kChunkHeader || static_cast<uint8_t>(value[0]) != kChunkFormat) return false;
    count = get_u32(value, 1);
    const uint64_t ms = read_u64_key(value, 5);
    size_t at = kChunkHeader;
    for (uint32_t i = 0; i < count; ++i) {
        if (value.size() - at < 4) return false;
        const uint32_t len = get_u32(value, at);
        at += 4;
        if (value.size() - at < len) return false;
        if (first + i >= from && !f(StreamRecord{first + i, ms, value.substr(at, len)})) return false;
        at += len;
    }
    return true;
}

}  // namespace

std::string StreamLog::chunk_key(uint64_t stream_id, uint64_t offset) { return message_key(stream_id, offset); }

std::string StreamLog::segment_key(uint64_t stream_id, uint64_t first) {
    return message_key(stream_id, kSegmentBit | first);
}

uint64_t StreamLog::append(uint64_t now_ms, std::initializer_list<std::string_view> payload) {
    if (open_.bytes.empty()) {
        open_.first = next_;
        open_.count = 0;
        open_.ms = now_ms;
        open_.bytes.push_back(static_cast<char>(kChunkFormat));
        put_u32(open_.bytes, 0);
        append_u64_key(open_.bytes, now_ms);
        open_bytes_ += kChunkHeader;
    }
    size_t len = 0;
    for (std::string_view p : payload) len += p.size();
    put_u32(open_.bytes, static_cast<uint32_t>(len));
    for (std::string_view p : payload) open_.bytes.append(p);
    open_bytes_ += 4 + len;
    ++open_.count;
    if (open_.bytes.size() >= kChunkBytes) seal_open();
    return next_++;
}

void StreamLog::seal_open() {
    if (open_.bytes.empty()) return;
    set_u32(open_.bytes, 1, open_.count);
    sealed_.push_back(std::move(open_));
    open_ = Chunk{};
}

uint64_t StreamLog::apply_retention(std::optional<uint64_t> max_bytes, std::optional<uint64_t> max_age_ms,
                                    uint64_t now_ms) {
    uint64_t dropped = 0;
    while (segments_.size() > 1) {
        const StreamSegment& head = segments_.front();
        const bool too_big = max_bytes && bytes_ > *max_bytes;
        const bool too_old = max_age_ms && head.last_ms + *max_age_ms < now_ms;
        if (!too_big && !too_old) break;
        dropped += head.end - head.first;
        bytes_ -= std::min(bytes_, head.bytes);
        drops_.push_back(head);
        segments_.pop_front();
    }
    return dropped;
}

void StreamLog::put_segment(Batch& batch, const StreamSegment& s) const {
    std::string v;
    v.reserve(kSegmentValue);
    for (uint64_t x : {s.first, s.end, s.last_chunk, s.first_ms, s.last_ms, s.bytes}) append_u64_key(v, x);
    batch.put(Column::msgs, segment_key(id_, s.first), v);
}

void StreamLog::flush(Batch& batch) {
    seal_open();
    for (const StreamSegment& d : drops_) {
        batch.remove_range(Column::msgs, chunk_key(id_, d.first), chunk_key(id_, d.end));
        batch.remove(Column::msgs, segment_key(id_, d.first));
        if (dropped_.first == dropped_.second) dropped_.first = d.first;
        dropped_.second = d.end;
    }
    drops_.clear();
    // The segments these chunks grew (or started): each record written once.
    size_t touched_from = segments_.size();
    for (Chunk& c : sealed_) {
        batch.put(Column::msgs, chunk_key(id_, c.first), c.bytes);
        if (segments_.empty() || segments_.back().bytes >= segment_bytes_) {
            StreamSegment s;
            s.first = c.first;
            s.first_ms = c.ms;
            segments_.push_back(s);
        }
        touched_from = std::min(touched_from, segments_.size() - 1);
        StreamSegment& s = segments_.back();
        s.end = c.first + c.count;
        s.last_chunk = c.first;
        s.last_ms = c.ms;
        s.bytes += c.bytes.size();
        bytes_ += c.bytes.size();
        flushed_end_ = s.end;
        flushed_last_chunk_ = c.first;
    }
    for (size_t i = touched_from; i < segments_.size(); ++i) put_segment(batch, segments_[i]);
    sealed_.clear();
    open_bytes_ = 0;
}

void StreamLog::committed() {
    committed_end_ = flushed_end_;
    committed_last_chunk_ = flushed_last_chunk_;
}

void StreamLog::recover(const Store& store) {
    segments_.clear();
    bytes_ = 0;
    store.scan(Column::msgs, segment_key(id_, 0), message_key(id_ + 1, 0), [&](std::string_view, std::string_view v) {
        if (v.size() < kSegmentValue) return true;  // damaged: its chunks are still read by offset
        StreamSegment s;
        s.first = read_u64_key(v, 0);
        s.end = read_u64_key(v, 8);
        s.last_chunk = read_u64_key(v, 16);
        s.first_ms = read_u64_key(v, 24);
        s.last_ms = read_u64_key(v, 32);
        s.bytes = read_u64_key(v, 40);
        if (!segments_.empty() && s.first < segments_.back().end) return true;
        segments_.push_back(s);
        bytes_ += s.bytes;
        return true;
    });
    if (segments_.empty()) return;
    next_ = flushed_end_ = committed_end_ = segments_.back().end;
    flushed_last_chunk_ = committed_last_chunk_ = segments_.back().last_chunk;
}

uint64_t StreamLog::read(const Store& store, uint64_t stream_id, uint64_t from, uint64_t end, size_t max_bytes,
                         const std::function<bool(const StreamRecord&)>& f) {
    if (from >= end) return from;
    uint64_t next = from;
    size_t bytes = 0;
    bool stopped = false;
    auto visit = [&](uint64_t first, std::string_view value) {
        uint32_t count = 0;
        if (!for_each_record(value, first, next, count, f)) stopped = true;
        if (count == 0) count = 1;  // damaged: step past its key
        next = std::max(next, first + count);
        bytes += value.size();
        return !stopped && bytes < max_bytes;
    };
    std::string key, value;
    if (store.floor(Column::msgs, chunk_key(stream_id, 0), chunk_key(stream_id, from), key, value) &&
        key.size() == 16 && read_u64_key(key, 8) + std::max<uint32_t>(1, value.size() >= 5 ? get_u32(value, 1) : 1) > from) {
        if (!visit(read_u64_key(key, 8), value)) return next;
    }
    if (next >= end) return next;
    store.scan(Column::msgs, chunk_key(stream_id, next), chunk_key(stream_id, end),
               [&](std::string_view k, std::string_view v) { return visit(read_u64_key(k, 8), v); });
    return next;
}

}  // namespace sluice::storage
