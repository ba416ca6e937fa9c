// A small blocking client for etcd v3's JSON gateway (HTTP/1.1 POSTs of JSON
// to /v3/..., keys and values base64-encoded), checked against Debian 12's
// etcd-server 3.4. Cluster mode's coordinator uses it for leader election
// with a lease, the in-sync replica set kept in etcd, and writes fenced by
// transactions (DESIGN.md, "More than one machine").
//
// Threading: not thread-safe. One owner thread (the coordinator's) makes one
// call at a time; each call blocks until it has an answer, an error, or its
// time runs out. It never touches the broker's event loop. Asio and Beast
// stay in etcd_client.cpp.
//
// Connections: one HTTP/1.1 keep-alive connection to the current endpoint,
// reopened after an error. A call that fails in transport (refused, reset,
// no answer within `timeout`) or with HTTP 503 (etcd's "Unavailable", e.g.
// "no leader") moves on to the next endpoint, round robin, each endpoint at
// most once per call; each attempt (connect + request + response) has its
// own `timeout`. Numeric addresses are not resolved; a host name is resolved
// on each connect, and that lookup is not bounded by `timeout`.
//
// Retries and idempotence: a request that was sent but not answered may have
// been applied; the retry on the next endpoint then applies it again. A put
// or a delete is harmless twice; a create-if-absent txn may then report
// failure with the caller as the holder, so callers compare the holder's
// value with their own.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sluice::net {

// One key as etcd returns it (the gateway omits zero fields; they read as 0).
struct EtcdKV {
    std::string key, value;  // raw bytes, decoded from base64
    int64_t create_revision = 0, mod_revision = 0, version = 0, lease = 0;
};

// One condition of a txn. For a key that does not exist, etcd compares
// version/create/mod/lease with 0 (so create == 0 means "absent").
struct EtcdCompare {
    enum class Target { version, create, mod, value, lease };
    enum class Result { equal, greater, less, not_equal };
    std::string key;
    Target target = Target::version;
    Result result = Result::equal;
    int64_t number = 0;  // for version, create, mod and lease
    std::string value;   // for value
};

// One operation of a txn branch. `range_end` as in EtcdClient::range/del.
struct EtcdOp {
    enum class Kind { put, del, range };
    Kind kind = Kind::put;
    std::string key, value, range_end;
    int64_t lease = 0;  // put only
};

class EtcdClient {
public:
    // `endpoints`: "host:port" (an IPv6 address as "[::1]:2379").
    EtcdClient(std::vector<std::string> endpoints, std::chrono::milliseconds timeout);
    ~EtcdClient();
    EtcdClient(const EtcdClient&) = delete;
    EtcdClient& operator=(const EtcdClient&) = delete;

    // Each call returns false and sets error() on failure: transport (naming
    // the endpoint), an HTTP status, or etcd's own error (e.g. "etcdserver:
    // requested lease not found").

    bool lease_grant(int64_t ttl_s, int64_t& id, int64_t& granted_ttl);
    // True with ttl_left > 0 when the lease was renewed. etcd 3.4 answers a
    // keepalive of an expired, revoked or unknown lease with success and no
    // TTL: that is true with ttl_left == 0, not false.
    bool lease_keepalive(int64_t id, int64_t& ttl_left);
    // False ("requested lease not found") when the lease is already gone.
    bool lease_revoke(int64_t id);

    // `range_end` "": just `key`; prefix_end(p): every key starting with p;
    // std::string(1, '\0'): every key >= key. `out` is replaced.
    bool range(const std::string& key, const std::string& range_end, std::vector<EtcdKV>& out,
               int64_t* header_revision = nullptr);
    bool put(const std::string& key, const std::string& value, int64_t lease = 0);
    bool del(const std::string& key, const std::string& range_end = "");

    // Runs `success` if every compare holds, else `failure`; `succeeded` says
    // which. `range_results`, when given, gets one entry per op of the branch
    // that ran, in order: the keys a range op found, empty for put and del.
    bool txn(const std::vector<EtcdCompare>& compare, const std::vector<EtcdOp>& success,
             const std::vector<EtcdOp>& failure, bool& succeeded,
             std::vector<std::vector<EtcdKV>>* range_results = nullptr);

    // The range_end for "every key with this prefix" (etcd's GetPrefixRangeEnd):
    // the prefix with its last byte below 0xff incremented and what follows it
    // dropped; "\0" (every key) when there is no such byte.
    static std::string prefix_end(std::string prefix);

    const std::string& error() const { return error_; }
    const std::string& endpoint() const;  // the one last used

private:
    struct Connection;
    // POSTs `body` to `path`, failing over as described above; on success
    // `response` holds the 200 answer's body.
    bool call(const char* path, const std::string& body, std::string& response);

    std::vector<std::string> endpoints_;
    std::chrono::milliseconds timeout_;
    size_t current_ = 0;  // the endpoint the next call tries first
    size_t last_ = 0;     // the endpoint the last call tried last
    std::unique_ptr<Connection> connection_;
    std::string error_;
};

}  // namespace sluice::net
