#include "net/server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <sys/statvfs.h>
#include <iostream>
#include <ctime>
#include <list>

#include "broker/broker.hpp"
#include "broker/executor.hpp"
#include "net/amqp_connection.hpp"
#include "net/http_server.hpp"
#include "net/listener.hpp"

namespace sluice::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

class IoExecutor final : public broker::Executor {
public:
    explicit IoExecutor(asio::io_context& io) : io_(io) {}
    void post(std::function<void()> fn) override { asio::post(io_, std::move(fn)); }

private:
    asio::io_context& io_;
};

struct Server::Impl {
    Impl(broker::Broker& b, ServerConfig c) : broker(b), config(std::move(c)), signals(io, SIGINT, SIGTERM) {}

    broker::Broker& broker;
    ServerConfig config;
    asio::io_context io{1};
    IoExecutor executor{io};
    asio::signal_set signals;
    std::list<tcp::acceptor> acceptors;
    std::list<std::weak_ptr<AmqpConnection>> connections;
    std::unique_ptr<HttpServer> http;
    uint16_t amqp_port = 0;
    asio::steady_timer disk_timer{io};
    // Fires at the broker's earliest deadline (TTLs, queue expiry).
    asio::steady_timer deadline_timer{io};
    uint64_t armed_deadline_ms = 0;

    void arm_deadline(uint64_t deadline_ms) {
        if (deadline_ms == 0 || (armed_deadline_ms != 0 && armed_deadline_ms <= deadline_ms)) return;
        armed_deadline_ms = deadline_ms;
        uint64_t now = broker::Broker::system_now_ms();
        deadline_timer.expires_after(std::chrono::milliseconds(deadline_ms > now ? deadline_ms - now : 0));
        deadline_timer.async_wait([this](const boost::system::error_code& ec) {
            if (ec) return;
            armed_deadline_ms = 0;
            arm_deadline(broker.timers().run(broker.now_ms()));
        });
    }

    // Once a second: the broker's coarse clock, and (with a data dir) the disk.
    void on_second() {
        broker.tick(static_cast<uint32_t>(std::time(nullptr)));
        struct statvfs st {};
        if (!config.disk_path.empty() && statvfs(config.disk_path.c_str(), &st) == 0) {
            uint64_t free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
            bool low = free_bytes < config.disk_free_limit;
            if (low != broker.alarm_active())
                std::cerr << "sluiced: disk alarm " << (low ? "set" : "cleared") << ": " << free_bytes
                          << " bytes free, limit " << config.disk_free_limit << std::endl;
            broker.set_disk_alarm(low);
        }
        disk_timer.expires_after(std::chrono::seconds(1));
        disk_timer.async_wait([this](const boost::system::error_code& ec) {
            if (!ec) on_second();
        });
    }

    void accept(tcp::acceptor& a) {
        a.async_accept([this, &a](const boost::system::error_code& ec, tcp::socket socket) {
            if (ec == asio::error::operation_aborted) return;
            if (!ec) {
                auto c = std::make_shared<AmqpConnection>(std::move(socket), broker);
                c->start();
                connections.push_back(c);
                if (connections.size() % 64 == 0) connections.remove_if([](auto& w) { return w.expired(); });
            }
            accept(a);
        });
    }

    void stop() {
        disk_timer.cancel();
        deadline_timer.cancel();
        for (auto& a : acceptors) {
            boost::system::error_code ec;
            a.close(ec);
        }
        if (http) http->stop();
        for (auto& w : connections)
            if (auto c = w.lock()) c->abort();
        io.stop();
    }
};

Server::Server(broker::Broker& broker, ServerConfig config) : impl_(std::make_unique<Impl>(broker, std::move(config))) {}

Server::~Server() = default;

std::string Server::listen() {
    std::string err = bind_listeners(impl_->io, impl_->config.amqp_bind, impl_->config.amqp_port, impl_->acceptors, impl_->amqp_port);
    if (!err.empty()) return "AMQP listener: " + err;
    for (auto& a : impl_->acceptors) impl_->accept(a);
    if (impl_->config.http_port != 0 || !impl_->config.http_bind.empty()) {
        impl_->http = std::make_unique<HttpServer>(impl_->io, impl_->broker);
        err = impl_->http->listen(impl_->config.http_bind, impl_->config.http_port);
        if (!err.empty()) return "HTTP listener: " + err;
    }
    return "";
}

void Server::run() {
    impl_->broker.timers().on_earliest_changed([this](uint64_t deadline_ms) { impl_->arm_deadline(deadline_ms); });
    impl_->arm_deadline(impl_->broker.timers().next_deadline());
    impl_->on_second();
    impl_->signals.async_wait([this](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        std::cerr << "sluiced: signal " << sig << ", shutting down\n";
        impl_->stop();
    });
    impl_->io.run();
}

void Server::stop() {
    asio::post(impl_->io, [this] { impl_->stop(); });
}

broker::Executor& Server::executor() { return impl_->executor; }

uint16_t Server::amqp_port() const { return impl_->amqp_port; }
uint16_t Server::http_port() const { return impl_->http ? impl_->http->port() : 0; }

}  // namespace sluice::net
