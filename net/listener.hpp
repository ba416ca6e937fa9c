// TCP listeners for the AMQP and HTTP servers. Private to net/.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <list>
#include <string>

namespace sluice::net {

// Binds and listens on host:port — "" means every address, IPv6 (v6-only)
// and IPv4 — appending the acceptors to `into`. The second family takes the
// port the first one got (so port 0 gives one ephemeral port for both), and
// `bound` reports it. Listening on one family is enough (a host without IPv6
// is fine). Returns "" or what failed; never throws.
std::string bind_listeners(boost::asio::io_context& io, const std::string& host, uint16_t port,
                           std::list<boost::asio::ip::tcp::acceptor>& into, uint16_t& bound);

}  // namespace sluice::net
