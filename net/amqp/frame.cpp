// AMQP 0-9-1 frame parsing and writing.
#include "net/amqp/frame.hpp"

#include "net/amqp/wire.hpp"

namespace sluice::amqp {

FrameParse parse_frame(std::string_view in, uint32_t max_frame_size) {
    FrameParse p;
    if (in.size() < kFrameHeaderSize) return p;  // need_more
    WireReader r(in);
    const uint8_t type = r.u8();
    const uint16_t channel = r.u16();
    const uint32_t size = r.u32();
    if (type != kFrameMethod && type != kFrameHeader && type != kFrameBody &&
        type != kFrameHeartbeat) {
        p.status = FrameStatus::bad_type;
        return p;
    }
    // Decided from the header alone, so an oversized frame is refused before
    // its payload is buffered. 64-bit arithmetic: size + 8 cannot overflow.
    const uint64_t total = uint64_t(size) + kFrameOverhead;
    if (max_frame_size != 0 && total > max_frame_size) {
        p.status = FrameStatus::too_large;
        return p;
    }
    if (in.size() < total) return p;  // need_more
    if (static_cast<uint8_t>(in[kFrameHeaderSize + size]) != kFrameEnd) {
        p.status = FrameStatus::bad_end;
        return p;
    }
    p.status = FrameStatus::ok;
    p.frame.type = type;
    p.frame.channel = channel;
    p.frame.payload = in.substr(kFrameHeaderSize, size);
    p.consumed = static_cast<size_t>(total);
    return p;
}

void write_frame(std::string& out, uint8_t type, uint16_t channel, std::string_view payload) {
    put_u8(out, type);
    put_u16(out, channel);
    put_u32(out, static_cast<uint32_t>(payload.size()));
    out.append(payload);
    put_u8(out, kFrameEnd);
}

void write_heartbeat(std::string& out) { write_frame(out, kFrameHeartbeat, 0, {}); }

size_t begin_frame(std::string& out, uint8_t type, uint16_t channel) {
    const size_t start = out.size();
    put_u8(out, type);
    put_u16(out, channel);
    put_u32(out, 0);
    return start;
}

void end_frame(std::string& out, size_t frame_start) {
    patch_u32(out, frame_start + 3,
              static_cast<uint32_t>(out.size() - frame_start - kFrameHeaderSize));
    put_u8(out, kFrameEnd);
}

}  // namespace sluice::amqp
