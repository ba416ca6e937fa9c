// What /api/nodes, the dashboard and sluicectl show of a cluster's nodes
// (plain data: the management API includes it without the coordinator).
#pragma once

#include <cstdint>
#include <string>

namespace sluice::net {

struct ClusterNodeStatus {
    std::string node;       // node id
    std::string role;       // "leader", "follower", "starting"
    bool alive = false;     // registered in etcd (its lease is live)
    bool in_sync = false;   // in the ISR: confirms wait for it; it may become leader
    std::string host;       // advertised address
    uint16_t amqp_port = 0, http_port = 0, replication_port = 0;
    std::string state;      // the leader's view: "streaming", "snapshot", "disconnected"; "" for the leader
    uint64_t index = 0;     // the last log index it holds (for followers, as acknowledged)
    uint64_t lag_batches = 0, lag_bytes = 0, lag_ms = 0;
    uint64_t epoch = 0;     // the leader's epoch
};

}  // namespace sluice::net
