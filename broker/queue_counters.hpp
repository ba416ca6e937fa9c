// A queue's message totals since it was created (or recovered): plain
// integers bumped on the broker thread as messages go through the queue, read
// by the Prometheus collector (net/metrics_text.cpp) at scrape time. No
// atomics: the queue and the scrape both run on the broker thread.
#pragma once

#include <cstdint>

namespace sluice::broker {

struct QueueCounters {
    uint64_t published = 0;    // messages that entered the queue (routed to it)
    uint64_t delivered = 0;    // to consumers and by basic.get, with or without ack
    uint64_t redelivered = 0;  // those of them flagged redelivered
    uint64_t acked = 0;        // deliveries acknowledged by basic.ack
    uint64_t expired = 0;      // dropped or dead-lettered by a TTL
    uint64_t dropped = 0;      // dropped from the head by a length limit
    uint64_t dead_lettered = 0;  // re-published to the dead-letter exchange

    void note_delivery(bool was_redelivered) {
        ++delivered;
        if (was_redelivered) ++redelivered;
    }
};

}  // namespace sluice::broker
