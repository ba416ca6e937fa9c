// Replication of the store's log between cluster nodes (docs/cluster.md).
//
// The leader's store writes every batch with its place in the log (epoch,
// index: storage/store.hpp, Store::lead); ReplicationLeader keeps the recent
// batches in a ring and ships them, in order, to every follower that
// connects to its replication port. A follower (ReplicationFollower) applies
// them to its own store, syncs, and acknowledges the index it has synced.
// The leader releases a batch's commit callbacks — publisher confirms,
// durable -oks — once every in-sync replica (set_in_sync: the ISR that the
// coordinator keeps in etcd) has acknowledged it.
//
// A follower whose position is not on the leader's history (it wrote
// batches as a leader that nobody else got) or older than the ring gets a
// snapshot: a RocksDB checkpoint of the leader's store, which replaces its
// own before it streams on from the checkpoint's position. So a resync
// never brings back what was consumed meanwhile.
//
// Wire: frames of u32 length (big-endian) | u8 type | payload, over TCP.
// Threads: plain blocking sockets; the leader runs an accept thread and a
// thread per follower (plus one reading its acks), the follower one thread.
// A new batch goes out on the store's commit thread, which sends it on each
// caught-up follower's socket without blocking; the follower's thread sends
// catch-up, heartbeats and whatever a socket did not take. Nothing here runs
// on the broker's event loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "storage/store.hpp"

namespace sluice::net {

// The leader's view of one follower.
struct ReplicaState {
    std::string node;
    std::string state;        // "streaming", "snapshot", "disconnected"
    bool in_sync = false;     // its acks hold confirms back
    uint64_t acked = 0;       // the highest index it has synced
    uint64_t lag_batches = 0; // the leader's last index − acked
    uint64_t lag_bytes = 0;   // bytes of the batches it has not acknowledged (that the ring holds)
    // How long the oldest batch it has not acknowledged has waited (0: none).
    std::chrono::milliseconds lag_time{0};
};

class ReplicationLeader {
public:
    struct Options {
        std::string bind_host;  // "" = every address
        uint16_t port = 0;      // 0 = any (see port())
        std::string cluster_id;
        uint64_t epoch = 0;
        size_t ring_bytes = 64u << 20;  // recent batches kept for followers that catch up
        std::string snapshot_dir;       // where checkpoints for snapshots are made (removed after)
    };
    ReplicationLeader(storage::Store& store, Options options);
    ~ReplicationLeader();
    ReplicationLeader(const ReplicationLeader&) = delete;
    ReplicationLeader& operator=(const ReplicationLeader&) = delete;

    // Hooks the store's log listener (call after Store::lead) and listens.
    // Returns "" or what failed.
    std::string start();
    void stop();
    uint16_t port() const;

    // The replicas confirms wait for. A member not connected holds them
    // until it is removed (the coordinator removes it in etcd first).
    void set_in_sync(const std::set<std::string>& nodes);
    std::vector<ReplicaState> replicas() const;
    uint64_t last_index() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

class ReplicationFollower {
public:
    struct Options {
        std::string cluster_id;
        std::string node_id;
        storage::StoreOptions store_options;  // to reopen the store after a snapshot
    };
    // `store` is the node's store; a snapshot closes and replaces it (the
    // pointer is reset while the follower runs: read it only after stop()).
    ReplicationFollower(std::unique_ptr<storage::Store>& store, Options options);
    ~ReplicationFollower();
    ReplicationFollower(const ReplicationFollower&) = delete;
    ReplicationFollower& operator=(const ReplicationFollower&) = delete;

    // Follows the leader at host:port of `epoch` (connects, reconnects after
    // an error, until follow() names another leader or stop()). Batches of an
    // older epoch are refused.
    void follow(const std::string& host, uint16_t port, uint64_t epoch);
    // Stops following; the store is left open and idle.
    void stop();

    struct Status {
        bool connected = false;
        storage::Store::LogPosition position;  // what this node's store holds
        uint64_t leader_index = 0;             // the leader's last index, as last heard
        std::string error;                     // why the last connection ended, "" if none
        uint64_t snapshots = 0;                // snapshots installed
        // Whether this follower has had a session with the leader it now
        // follows, and how many connection attempts to it were refused in a
        // row since: a host that answers with a reset has no process on the
        // port — the leader is gone, whatever its lease says.
        bool streamed_from_leader = false;
        uint32_t refused = 0;
    };
    Status status() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::net
