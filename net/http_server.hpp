// The HTTP listener (Boost.Beast): /metrics, the management API under /api/
// (management_api.hpp) and the dashboard (net/dashboard/). Private to net/.
//
// Thread-safety: runs on the server's io_context thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace boost::asio {
class io_context;
}
namespace sluice::broker {
class Broker;
}

namespace sluice::net {

class HttpServer {
public:
    HttpServer(boost::asio::io_context& io, broker::Broker& broker);
    ~HttpServer();
    // Binds host:port ("" = every address). Returns "" or the error.
    std::string listen(const std::string& host, uint16_t port);
    void stop();
    uint16_t port() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::net
