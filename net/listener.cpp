#include "net/listener.hpp"

#include <boost/asio/ip/v6_only.hpp>
#include <vector>

namespace sluice::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

std::string bind_listeners(asio::io_context& io, const std::string& host, uint16_t port,
                           std::list<tcp::acceptor>& into, uint16_t& bound) {
    std::vector<tcp::endpoint> endpoints;
    if (host.empty()) {
        endpoints.emplace_back(tcp::v6(), port);
        endpoints.emplace_back(tcp::v4(), port);
    } else {
        boost::system::error_code ec;
        auto address = asio::ip::make_address(host, ec);
        if (ec) return "'" + host + "' is not an IP address";
        endpoints.emplace_back(address, port);
    }
    const size_t before = into.size();
    std::string errors;
    for (auto ep : endpoints) {
        if (bound != 0) ep.port(bound);
        boost::system::error_code ec;
        tcp::acceptor a(io);
        a.open(ep.protocol(), ec);
        if (!ec && ep.address().is_v6()) a.set_option(asio::ip::v6_only(true), ec);
        if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
        if (!ec) a.bind(ep, ec);
        if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
        if (ec) {
            errors += (errors.empty() ? "" : "; ") + ep.address().to_string() + ":" + std::to_string(ep.port()) +
                      ": " + ec.message();
            continue;
        }
        bound = a.local_endpoint().port();
        into.push_back(std::move(a));
    }
    return into.size() > before ? "" : errors;
}

}  // namespace sluice::net
