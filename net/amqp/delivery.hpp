// The hot path's frames, each message written in one pass: a content header
// and its body frames, and a basic.deliver with its content. The bytes are
// exactly those of write_method() + encode_content_header() + one body frame
// per `max_body_chunk` bytes of body (tests/unit/frame_test.cpp compares
// them), with the fixed part sized once and filled in place instead of a
// dozen appends, each checking capacity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "net/amqp/methods.hpp"

namespace sluice::amqp {

// A content header of `class_id` and the body frames after it. `body_size`
// is the header's (the message's declared size); `body` is written in
// frames of at most `max_body_chunk` bytes.
void write_content(std::string& out, uint16_t channel, uint16_t class_id, std::string_view properties,
                   uint64_t body_size, std::string_view body, size_t max_body_chunk);

// A basic.deliver method frame, then its content as write_content().
void write_deliver(std::string& out, uint16_t channel, const method::BasicDeliver& d,
                   std::string_view properties, uint64_t body_size, std::string_view body,
                   size_t max_body_chunk);

}  // namespace sluice::amqp
