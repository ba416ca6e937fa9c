// The queue.declare arguments that change how a queue behaves (RabbitMQ's
// "optional queue arguments"), parsed and validated once at declare time so
// the hot path reads plain fields.
//
// Validation follows RabbitMQ: a value of the wrong type or out of range is
// 406 PRECONDITION_FAILED, worded as RabbitMQ words it ("invalid arg
// 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}"; texts
// checked against RabbitMQ 3.10.8). Unknown
// `x-` arguments are kept and ignored, as RabbitMQ does.
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "broker/amqp_error.hpp"
#include "broker/dedup.hpp"
#include "net/amqp/field_table.hpp"

namespace sluice::broker {

enum class Overflow : uint8_t { drop_head, reject_publish, reject_publish_dlx };
enum class QueueType : uint8_t { classic, quorum, stream };

// "classic", "quorum" or "stream".
const char* queue_type_name(QueueType t);

// RabbitMQ's duration strings for streams (x-max-age, and a consumer's
// x-stream-offset interval): a positive integer and one unit of Y, M, D,
// h, m or s ("7D", "1h", "30m"); a year is 365 days, a month 30. Null if
// malformed.
std::optional<uint64_t> parse_stream_duration_ms(std::string_view text);

// A stream's default segment size (x-stream-max-segment-size-bytes):
// RabbitMQ's is 500 MB; see docs/streams.md for why Sluice's is smaller.
inline constexpr uint64_t kDefaultStreamSegmentBytes = 64u << 20;

struct QueueArguments {
    std::optional<uint64_t> message_ttl_ms;   // x-message-ttl
    std::optional<uint64_t> expires_ms;       // x-expires: delete after this long unused
    std::optional<std::string> dead_letter_exchange;     // x-dead-letter-exchange
    std::optional<std::string> dead_letter_routing_key;  // x-dead-letter-routing-key
    std::optional<uint64_t> max_length;       // x-max-length (ready messages)
    std::optional<uint64_t> max_length_bytes; // x-max-length-bytes (ready bodies)
    Overflow overflow = Overflow::drop_head;  // x-overflow
    uint8_t max_priority = 0;                 // x-max-priority (0 = not a priority queue)
    bool single_active_consumer = false;      // x-single-active-consumer
    std::optional<uint64_t> delivery_limit;   // x-delivery-limit (quorum queues)
    QueueType type = QueueType::classic;      // x-queue-type
    // Streams: x-max-length-bytes is retention (max_length_bytes, kept
    // whole segments at a time), with x-max-age and the segment size.
    std::optional<uint64_t> max_age_ms;       // x-max-age
    uint64_t segment_bytes = kDefaultStreamSegmentBytes;  // x-stream-max-segment-size-bytes
    std::optional<DedupSettings> dedup;       // x-message-deduplication and its x-cache-* (dedup.hpp)

    bool has_length_limit() const { return max_length || max_length_bytes; }
};

struct QueueDeclareFlags {
    bool durable = false;
    bool exclusive = false;
    bool auto_delete = false;
};

// Parses `args` for queue `queue` in `vhost`; 406 with RabbitMQ's text when a
// value is invalid, or when the queue type forbids the flags (a quorum queue
// and a stream must be durable, neither exclusive nor auto-delete).
std::variant<QueueArguments, AmqpError> parse_queue_arguments(const amqp::FieldTable& args, std::string_view queue,
                                                              std::string_view vhost, QueueDeclareFlags flags);

}  // namespace sluice::broker
