// AMQP 0-9-1 frames: an incremental parser (bytes in, complete frames out)
// and frame writers that append to an output byte string.
//
// Frame: type (1) | channel (2) | payload size (4) | payload | 0xCE
//
// The parser is a pure function over a byte span: it never allocates and the
// returned frame's payload points into the caller's buffer. Thread-safety:
// stateless functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::amqp {

inline constexpr uint8_t kFrameMethod = 1;
inline constexpr uint8_t kFrameHeader = 2;
inline constexpr uint8_t kFrameBody = 3;
inline constexpr uint8_t kFrameHeartbeat = 8;
inline constexpr uint8_t kFrameEnd = 0xCE;
inline constexpr size_t kFrameHeaderSize = 7;
inline constexpr size_t kFrameOverhead = 8;  // header + frame-end octet
inline constexpr uint32_t kFrameMinSize = 4096;

// "AMQP" 0 0 9 1
inline constexpr std::string_view kProtocolHeader{"AMQP\x00\x00\x09\x01", 8};

struct Frame {
    uint8_t type = 0;
    uint16_t channel = 0;
    std::string_view payload;
};

enum class FrameStatus {
    ok,         // `frame` is complete; `consumed` bytes were used
    need_more,  // not enough bytes yet
    too_large,  // payload size exceeds max_frame_size (501 FRAME_ERROR)
    bad_end,    // frame-end octet is not 0xCE (501 FRAME_ERROR)
    bad_type,   // unknown frame type (501 FRAME_ERROR)
};

struct FrameParse {
    FrameStatus status = FrameStatus::need_more;
    Frame frame;
    size_t consumed = 0;
};

// Parses one frame from the front of `in`. `max_frame_size` is the negotiated
// frame_max (whole frame, header and end octet included), 0 = no limit.
FrameParse parse_frame(std::string_view in, uint32_t max_frame_size);

// Appends a frame with the given payload.
void write_frame(std::string& out, uint8_t type, uint16_t channel, std::string_view payload);
void write_heartbeat(std::string& out);

// For writers that encode the payload in place: begin_frame() appends the
// 7-byte header with a zero size and returns its offset; end_frame() patches
// the size and appends the frame-end octet.
size_t begin_frame(std::string& out, uint8_t type, uint16_t channel);
void end_frame(std::string& out, size_t frame_start);

}  // namespace sluice::amqp
