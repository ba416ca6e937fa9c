// A follower's front door (cluster mode): connections to this node's AMQP
// and HTTP ports are forwarded, byte for byte, to the leader's, so a client
// or a load balancer may point at any node. When the leader changes, the
// forwarded connections close (as they would on the leader's failure) and
// new ones go to the new leader.
//
// Threads: one io thread of its own (start/stop from any one thread).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

namespace sluice::net {

class TcpProxy {
public:
    // Where connections to a listener go now: host and port ("" = nowhere
    // yet: the connection is closed).
    using Target = std::function<std::pair<std::string, uint16_t>()>;

    TcpProxy();
    ~TcpProxy();
    TcpProxy(const TcpProxy&) = delete;
    TcpProxy& operator=(const TcpProxy&) = delete;

    // Binds host:port ("" = every address). Returns "" or what failed.
    std::string listen(const std::string& host, uint16_t port, Target target);
    void start();
    // Closes every forwarded connection (the leader changed).
    void close_connections();
    // Closes the listeners and connections and joins the io thread.
    void stop();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::net
