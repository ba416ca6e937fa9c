// The hot path's frames: a basic.deliver with its content header and body
// frames, written in one pass. The bytes are exactly those of write_method()
// + encode_content_header() + one body frame per frame_max − 8 bytes of body
// (tests/unit/frame_test.cpp compares them), with the fixed part sized once
// and filled in place instead of a dozen appends, each checking capacity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "net/amqp/methods.hpp"

namespace sluice::amqp {

// `body_size` is the content header's (the message's declared size);
// `body` is written in frames of at most `max_body_chunk` bytes.
void write_deliver(std::string& out, uint16_t channel, const method::BasicDeliver& d,
                   std::string_view properties, uint64_t body_size, std::string_view body,
                   size_t max_body_chunk);

}  // namespace sluice::amqp
