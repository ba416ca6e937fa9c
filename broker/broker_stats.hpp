// Broker-wide counters. Plain integers bumped on the broker thread; a
// Prometheus collector reads them at scrape time (no atomics on the hot path).
#pragma once

#include <cstdint>

namespace sluice::broker {

struct BrokerStats {
    uint64_t connections_opened = 0;
    uint64_t connections_closed = 0;
    uint64_t channels_opened = 0;
    uint64_t channels_closed = 0;
    uint64_t messages_published = 0;
    uint64_t messages_routed = 0;
    uint64_t messages_unroutable = 0;
    uint64_t messages_deduplicated = 0;  // dropped by an exchange's or a queue's deduplication window
    uint64_t messages_delivered = 0;
    uint64_t messages_redelivered = 0;
    uint64_t messages_acked = 0;
    uint64_t messages_nacked = 0;
    uint64_t messages_rejected = 0;
    uint64_t messages_confirmed = 0;
    uint64_t messages_returned = 0;
    uint64_t messages_expired = 0;        // dropped or dead-lettered by a TTL
    uint64_t messages_dropped_maxlen = 0; // dropped from a queue head by a length limit
    uint64_t messages_dead_lettered = 0;  // re-published to a dead-letter exchange
    // Deliveries by how they were taken (the sum is messages_delivered).
    uint64_t delivered_consume_ack = 0;
    uint64_t delivered_consume_no_ack = 0;
    uint64_t delivered_get_ack = 0;
    uint64_t delivered_get_no_ack = 0;
    uint64_t gets_empty = 0;       // basic.get (and the API's get) that found nothing
    uint64_t queues_declared = 0;  // successful queue.declare (not passive), new or not
    uint64_t queues_created = 0;
    uint64_t queues_deleted = 0;   // by any cause: delete, auto-delete, expiry, owner gone
    uint64_t bytes_in = 0;
    uint64_t bytes_out = 0;
};

}  // namespace sluice::broker
