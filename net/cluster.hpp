// Cluster mode (docs/cluster.md): the coordinator that elects the leader
// through etcd, keeps the in-sync replica set (ISR) there, and switches this
// node between following and leading.
//
// The unit of leadership is the node's whole store (one log). Its keys live
// under /sluice/<cluster>/ in etcd:
//   cluster-id      the cluster's identity, created once; every data dir
//                   records it and a node whose data dir has another refuses to start
//   initialized     set by the first leader (bootstrap)
//   leader          the leader's address (JSON), put with its lease; the
//                   key's create_revision is the leader's epoch
//   isr             the in-sync replicas (a JSON array); only they may become
//                   leader; changed only by compare-and-swap transactions on
//                   its mod_revision and the leader key's create_revision
//                   (fencing); a change whose answer was lost is waited for
//                   until the key's revision moves on
//   nodes/<node>    each live node's address and instance (JSON), with its lease
//
// Threads: the coordinator runs on its own thread (etcd calls block there,
// never on the broker's event loop). run_follower() blocks the caller until
// this node is elected; lead()'s `lost` callback runs on a coordinator thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "net/cluster_status.hpp"
#include "storage/store.hpp"

namespace sluice::net {

struct ClusterConfig {
    std::vector<std::string> etcd_endpoints;  // host:port
    std::string name = "sluice";              // the cluster's name: etcd key prefix
    std::string node_id;
    std::string advertise_host = "127.0.0.1";  // how the others reach this node
    std::string bind_host;                      // replication listener's address ("" = all)
    uint16_t amqp_port = 5672;
    uint16_t http_port = 15672;
    uint16_t replication_port = 5679;
    uint32_t lease_ttl_s = 5;
    uint32_t isr_max_lag_ms = 3000;             // an in-sync replica further behind leaves the ISR
    uint64_t isr_max_lag_bytes = 64u << 20;
    size_t ring_bytes = 64u << 20;              // recent batches the leader keeps for catching up
    std::string data_dir;
};

class ClusterNode {
public:
    explicit ClusterNode(ClusterConfig config);
    ~ClusterNode();
    ClusterNode(const ClusterNode&) = delete;
    ClusterNode& operator=(const ClusterNode&) = delete;

    // Checks this node's identity against etcd (retrying, one log line per
    // attempt, while etcd is down): the data dir's cluster, a unique node
    // id, a data dir with data but no cluster identity. `store` is open.
    // Returns "" or why this node must not start.
    std::string join(storage::Store& store);

    // Follows the leader — replicates its store into `store` (which a
    // snapshot may replace) and forwards AMQP and HTTP connections on this
    // node's ports to the leader — until this node is elected. Returns the
    // epoch it leads, or 0 if stop() was called.
    uint64_t run_follower(std::unique_ptr<storage::Store>& store, const storage::StoreOptions& store_options);

    // As leader of `epoch` (after store.lead(epoch)): ships the log, keeps
    // the lease and the ISR. `lost(why)` runs once, on the coordinator
    // thread, when this node must stop serving (lease not renewed in time,
    // its disk stalled, another leader). Returns "" or what failed.
    std::string lead(storage::Store& store, uint64_t epoch, std::function<void(const std::string& why)> lost);

    // Every node as this one sees it (the leader's view has the lags).
    std::vector<ClusterNodeStatus> nodes() const;
    // Stops the coordinator and gives up this node's lease in etcd, so
    // another node takes over at once rather than a TTL later.
    void stop();
    // Makes run_follower() return 0 soon; async-signal-safe (SIGTERM).
    void request_stop() noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::net
