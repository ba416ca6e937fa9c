#include "net/http_server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <list>

#include "broker/broker.hpp"
#include "net/metrics_text.hpp"

namespace sluice::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kMaxRequestBody = 1 << 20;
constexpr auto kIdleTimeout = std::chrono::seconds(30);

class HttpSession : public std::enable_shared_from_this<HttpSession> {
public:
    HttpSession(tcp::socket socket, broker::Broker& broker) : stream_(std::move(socket)), broker_(broker) {}

    void start() { read(); }

private:
    void read() {
        parser_.emplace();
        parser_->body_limit(kMaxRequestBody);
        stream_.expires_after(kIdleTimeout);  // a slow or silent client is dropped
        http::async_read(stream_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
    }

    void on_read(beast::error_code ec) {
        if (ec) {
            stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
            return;
        }
        auto req = parser_->release();
        response_ = {};
        response_.version(req.version());
        response_.keep_alive(req.keep_alive());
        response_.set(http::field::server, "Sluice");
        std::string target(req.target());
        if (req.method() != http::verb::get && req.method() != http::verb::head) {
            respond(http::status::method_not_allowed, "text/plain", "method not allowed\n");
        } else if (target == "/metrics") {
            respond(http::status::ok, "text/plain; version=0.0.4", metrics_text(broker_));
        } else if (target == "/" || target == "/api/overview") {
            respond(http::status::ok, "text/plain", "Sluice AMQP 0-9-1 broker\n");
        } else {
            respond(http::status::not_found, "text/plain", "not found\n");
        }
        if (req.method() == http::verb::head) response_.body().clear();
        response_.prepare_payload();
        http::async_write(stream_, response_, [self = shared_from_this()](beast::error_code e, size_t) {
            if (e || !self->response_.keep_alive()) {
                self->stream_.socket().shutdown(tcp::socket::shutdown_both, e);
                return;
            }
            self->read();
        });
    }

    void respond(http::status status, const char* type, std::string body) {
        response_.result(status);
        response_.set(http::field::content_type, type);
        response_.body() = std::move(body);
    }

    beast::tcp_stream stream_;
    broker::Broker& broker_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    http::response<http::string_body> response_;
};

}  // namespace

struct HttpServer::Impl {
    Impl(asio::io_context& i, broker::Broker& b) : io(i), broker(b) {}
    asio::io_context& io;
    broker::Broker& broker;
    std::list<tcp::acceptor> acceptors;
    uint16_t port = 0;

    void accept(tcp::acceptor& a) {
        a.async_accept([this, &a](beast::error_code ec, tcp::socket socket) {
            if (ec == asio::error::operation_aborted) return;
            if (!ec) std::make_shared<HttpSession>(std::move(socket), broker)->start();
            accept(a);
        });
    }
};

HttpServer::HttpServer(asio::io_context& io, broker::Broker& broker) : impl_(std::make_unique<Impl>(io, broker)) {}
HttpServer::~HttpServer() = default;

std::string HttpServer::listen(const std::string& host, uint16_t port) {
    std::vector<tcp::endpoint> endpoints;
    if (host.empty()) {
        endpoints.emplace_back(tcp::v6(), port);
        endpoints.emplace_back(tcp::v4(), port);
    } else {
        endpoints.emplace_back(asio::ip::make_address(host), port);
    }
    std::string errors;
    for (auto ep : endpoints) {
        if (impl_->port != 0) ep.port(impl_->port);
        beast::error_code ec;
        tcp::acceptor a(impl_->io);
        a.open(ep.protocol(), ec);
        if (!ec && ep.address().is_v6()) a.set_option(asio::ip::v6_only(true), ec);
        if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
        if (!ec) a.bind(ep, ec);
        if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
        if (ec) {
            errors += (errors.empty() ? "" : "; ") + ep.address().to_string() + ": " + ec.message();
            continue;
        }
        impl_->port = a.local_endpoint().port();
        impl_->acceptors.push_back(std::move(a));
        impl_->accept(impl_->acceptors.back());
    }
    return impl_->acceptors.empty() ? errors : "";
}

void HttpServer::stop() {
    for (auto& a : impl_->acceptors) {
        beast::error_code ec;
        a.close(ec);
    }
}

uint16_t HttpServer::port() const { return impl_->port; }

}  // namespace sluice::net
