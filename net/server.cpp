#include "net/server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdlib>
#include <sched.h>
#include <unistd.h>
#include <iostream>
#include <ctime>
#include <list>

#include "broker/broker.hpp"
#include "broker/executor.hpp"
#include "net/amqp_connection.hpp"
#include "net/http_server.hpp"
#include "net/listener.hpp"
#include "net/resource_monitor.hpp"
#include "net/shovels.hpp"
#include "net/spin_window.hpp"

namespace sluice::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// How long a shutdown waits for clients to answer connection.close.
constexpr auto kShutdownWait = std::chrono::seconds(5);

class IoExecutor final : public broker::Executor {
public:
    explicit IoExecutor(asio::io_context& io) : io_(io) {}
    void post(std::function<void()> fn) override { asio::post(io_, std::move(fn)); }

private:
    asio::io_context& io_;
};

struct Server::Impl {
    Impl(broker::Broker& b, ServerConfig c)
        : broker(b),
          config(std::move(c)),
          signals(io, SIGINT, SIGTERM),
          reload_signal(io, SIGHUP),
          resources(ResourceLimits{config.memory_limit, config.disk_path, config.disk_free_limit}) {}

    broker::Broker& broker;
    ServerConfig config;
    asio::io_context io{1};
    IoExecutor executor{io};
    asio::signal_set signals;
    asio::signal_set reload_signal;
    std::function<void()> on_reload;
    ResourceMonitor resources;
    std::unique_ptr<TlsContext> tls;  // when a TLS listener is on
    std::list<tcp::acceptor> acceptors;
    std::list<tcp::acceptor> tls_acceptors;
    std::list<std::weak_ptr<AmqpConnection>> connections;
    std::unique_ptr<HttpServer> http;
    std::unique_ptr<HttpServer> prometheus;
    std::unique_ptr<Shovels> shovels;  // after the AMQP listener: a shovel may connect to it
    std::function<std::vector<ClusterNodeStatus>()> cluster_view;  // for the HTTP server made by listen()
    uint16_t amqp_port = 0;
    uint16_t amqps_port = 0;
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
    size_t open_connections = 0;
    bool shutting_down = false;
    asio::steady_timer shutdown_deadline{io};

    // Once a second: the broker's coarse clock (and consumer timeouts), and
    // the resource alarms.
    void on_second() {
        broker.tick(static_cast<uint32_t>(std::time(nullptr)));
        resources.check(broker);
        disk_timer.expires_after(std::chrono::seconds(1));
        disk_timer.async_wait([this](const boost::system::error_code& ec) {
            if (!ec) on_second();
        });
    }

    void wait_for_reload() {
        reload_signal.async_wait([this](const boost::system::error_code& ec, int) {
            if (ec) return;
            if (on_reload) on_reload();
            resources.check(broker);  // new thresholds take effect now
            wait_for_reload();
        });
    }

    void accept(tcp::acceptor& a, TlsContext* tls_context) {
        a.async_accept([this, &a, tls_context](const boost::system::error_code& ec, tcp::socket socket) {
            if (ec == asio::error::operation_aborted || !a.is_open()) return;
            if (ec) {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: the pending connection stays
                // in the backlog and would fail again at once. Accepting again
                // right away spins a core; wait for descriptors to free up.
                accept_after_backoff(a, tls_context, ec);
                return;
            }
            if (config.max_handshaking_connections != 0 && handshaking >= config.max_handshaking_connections) {
                ++refused_handshaking;  // the socket closes as it goes out of scope
            } else {
                ++open_connections;
                ++handshaking;
                auto counted = std::make_shared<bool>(true);  // still counted in `handshaking`
                auto done_handshaking = [this, counted] {
                    if (*counted) --handshaking, *counted = false;
                };
                auto c = std::make_shared<AmqpConnection>(
                    std::move(socket), broker,
                    [this, done_handshaking] {
                        done_handshaking();
                        on_connection_closed();
                    },
                    std::chrono::milliseconds(config.handshake_timeout_ms), tls_context);
                c->on_opened(done_handshaking);
                c->start();
                connections.push_back(c);
                if (connections.size() % 64 == 0) connections.remove_if([](auto& w) { return w.expired(); });
            }
            accept(a, tls_context);
        });
    }

    void accept_after_backoff(tcp::acceptor& a, TlsContext* tls_context, const boost::system::error_code& ec) {
        if (accept_errors++ % 100 == 0)
            std::cerr << "sluiced: accept failed (" << ec.message() << "); retrying in "
                      << kAcceptBackoff.count() << " ms" << std::endl;
        auto t = std::make_shared<asio::steady_timer>(io, kAcceptBackoff);
        t->async_wait([this, &a, tls_context, t](const boost::system::error_code& e) {
            if (!e && !shutting_down && a.is_open()) accept(a, tls_context);
        });
    }
    static constexpr std::chrono::milliseconds kAcceptBackoff{100};
    size_t handshaking = 0;          // AMQP connections before connection.open
    uint64_t refused_handshaking = 0;
    uint64_t accept_errors = 0;

    void on_signal(int sig) {
        if (shutting_down) {
            // The operator insists: go now. Every confirm already went out
            // after its sync, so nothing confirmed is lost; the rest is.
            std::cerr << "sluiced: second signal " << sig << ", exiting now" << std::endl;
            std::_Exit(128 + sig);
        }
        std::cerr << "sluiced: signal " << sig << ", shutting down (a second signal exits at once)" << std::endl;
        signals.async_wait([this](const boost::system::error_code& ec, int s) {
            if (!ec) on_signal(s);
        });
        shut_down();
    }

    // Graceful stop: no new connections, connection.close 320 to every AMQP
    // connection, then stop once they are all closed or kShutdownWait has
    // passed. The store finishes syncing after run() returns
    // (Durability::shutdown).
    void shut_down() {
        if (shutting_down) return;
        shutting_down = true;
        disk_timer.cancel();
        deadline_timer.cancel();
        boost::system::error_code ignored;
        reload_signal.cancel(ignored);
        for (auto* list : {&acceptors, &tls_acceptors})
            for (auto& a : *list) {
                boost::system::error_code ec;
                a.close(ec);
            }
        if (shovels) shovels->stop();  // before the connections close: no reconnecting
        if (http) http->stop();
        if (prometheus) prometheus->stop();
        connections.remove_if([](auto& w) { return w.expired(); });
        if (!connections.empty())
            std::cerr << "sluiced: closing " << open_connections << " connections" << std::endl;
        for (auto& w : connections)
            if (auto c = w.lock()) c->close_for_shutdown(kShutdownWait);
        shutdown_deadline.expires_after(kShutdownWait);
        shutdown_deadline.async_wait([this](const boost::system::error_code& ec) {
            if (ec) return;
            std::cerr << "sluiced: " << open_connections << " connections did not close within "
                      << kShutdownWait.count() << " s; dropping them" << std::endl;
            for (auto& w : connections)
                if (auto c = w.lock()) c->abort();
            io.stop();
        });
        if (open_connections == 0) finish();
    }

    void on_connection_closed() {
        --open_connections;
        if (shutting_down && open_connections == 0) finish();
    }

    void finish() {
        shutdown_deadline.cancel();
        io.stop();
    }
};

namespace {

std::string local_host_name() {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost";
    return buf;
}

// The event loop with a busy-poll (see spin_window.hpp): once a pass over the
// sockets finds nothing to do, keep polling — a non-blocking epoll_wait per
// pass, then sched_yield so a task sharing this core runs first — for up to
// the window before blocking in epoll_wait.
void run_busy_polling(asio::io_context& io, SpinWindow window) {
    using clock = std::chrono::steady_clock;
    auto last_work = clock::now();
    while (!io.stopped()) {
        if (io.poll() > 0) {
            last_work = clock::now();
            continue;
        }
        if (io.stopped()) break;
        if (clock::now() - last_work < window.current()) {
            sched_yield();
            continue;
        }
        io.run_one();  // sleep until the next event
        window.on_slept(clock::now() - last_work);
        last_work = clock::now();
    }
}

}  // namespace

Server::Server(broker::Broker& broker, ServerConfig config) : impl_(std::make_unique<Impl>(broker, std::move(config))) {}

Server::~Server() = default;

std::string Server::listen() {
    Impl& m = *impl_;
    const ServerConfig& c = m.config;
    std::string err;
    if (c.amqps_port != 0 || c.https_port != 0) {
        m.tls = TlsContext::load(c.tls, err);
        if (!m.tls) return err;
    }
    err = bind_listeners(m.io, c.amqp_bind, c.amqp_port, m.acceptors, m.amqp_port);
    if (!err.empty()) return "AMQP listener: " + err;
    for (auto& a : m.acceptors) m.accept(a, nullptr);
    if (c.amqps_port != 0) {
        err = bind_listeners(m.io, c.amqp_bind, c.amqps_port, m.tls_acceptors, m.amqps_port);
        if (!err.empty()) return "AMQPS listener: " + err;
        for (auto& a : m.tls_acceptors) m.accept(a, m.tls.get());
    }
    LocalBroker local;
    local.host = c.amqp_bind.empty() || c.amqp_bind == "0.0.0.0" ? "127.0.0.1" : c.amqp_bind == "::" ? "::1" : c.amqp_bind;
    local.port = m.amqp_port;
    local.default_user = m.broker.config().default_user;
    local.default_password = m.broker.config().default_password;
    local.node = "sluice@" + local_host_name();
    m.shovels = std::make_unique<Shovels>(m.io, m.broker, std::move(local));
    const bool plain_http = c.http_port != 0 || !c.http_bind.empty();
    if (plain_http || c.https_port != 0)
        m.http = std::make_unique<HttpServer>(m.io, m.broker, c.http_max_connections,
                                              std::chrono::seconds(c.http_request_timeout_s),
                                              std::chrono::milliseconds(c.stats_interval_ms));
    if (m.http) m.http->set_shovels(m.shovels.get());
    if (m.http && m.cluster_view) m.http->set_cluster_view(m.cluster_view);
    if (plain_http) {
        err = m.http->listen(c.http_bind, c.http_port);
        if (!err.empty()) return "HTTP listener: " + err;
    }
    if (c.https_port != 0) {
        err = m.http->listen_tls(c.http_bind, c.https_port, *m.tls);
        if (!err.empty()) return "HTTPS listener: " + err;
    }
    if (c.prometheus_port != 0) {
        m.prometheus = std::make_unique<HttpServer>(m.io, m.broker, 64, std::chrono::seconds(c.http_request_timeout_s),
                                                    std::chrono::milliseconds(c.stats_interval_ms), true);
        m.prometheus->set_prometheus_naming({c.prometheus_names, "sluice@" + local_host_name()});
        if (m.cluster_view) m.prometheus->set_cluster_view(m.cluster_view);
        err = m.prometheus->listen(c.http_bind, c.prometheus_port);
        if (!err.empty()) return "Prometheus listener (--prometheus-port): " + err;
    }
    return "";
}

void Server::run() {
    impl_->broker.timers().on_earliest_changed([this](uint64_t deadline_ms) { impl_->arm_deadline(deadline_ms); });
    impl_->arm_deadline(impl_->broker.timers().next_deadline());
    impl_->on_second();
    if (impl_->shovels) impl_->shovels->start();
    impl_->wait_for_reload();
    impl_->signals.async_wait([this](const boost::system::error_code& ec, int sig) {
        if (!ec) impl_->on_signal(sig);
    });
    const uint32_t spin_us = impl_->config.busy_poll_us;
    if (spin_us == 0) {
        impl_->io.run();
        return;
    }
    run_busy_polling(impl_->io, SpinWindow(std::chrono::microseconds(spin_us)));
}

void Server::stop() {
    asio::post(impl_->io, [this] { impl_->shut_down(); });
}

broker::Executor& Server::executor() { return impl_->executor; }

void Server::set_cluster_view(std::function<std::vector<ClusterNodeStatus>()> view) {
    impl_->cluster_view = view;
    if (impl_->prometheus) impl_->prometheus->set_cluster_view(view);
    if (impl_->http) impl_->http->set_cluster_view(std::move(view));
}

void Server::on_reload(std::function<void()> fn) { impl_->on_reload = std::move(fn); }

void Server::set_resource_limits(uint64_t memory_limit, uint64_t disk_free_limit) {
    impl_->resources.set_limits(memory_limit, disk_free_limit);
}

uint16_t Server::amqp_port() const { return impl_->amqp_port; }
uint16_t Server::amqps_port() const { return impl_->amqps_port; }
uint16_t Server::http_port() const { return impl_->http ? impl_->http->port() : 0; }
uint16_t Server::prometheus_port() const { return impl_->prometheus ? impl_->prometheus->port() : 0; }
uint16_t Server::https_port() const { return impl_->http ? impl_->http->tls_port() : 0; }

}  // namespace sluice::net
