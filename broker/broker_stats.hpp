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
    uint64_t bytes_in = 0;
    uint64_t bytes_out = 0;
};

}  // namespace sluice::broker
