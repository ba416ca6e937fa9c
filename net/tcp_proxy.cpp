#include "net/tcp_proxy.hpp"

#include <pthread.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <array>
#include <list>
#include <set>
#include <thread>

#include "net/listener.hpp"

namespace sluice::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// One forwarded connection: two sockets and a pump each way.
struct Pipe : std::enable_shared_from_this<Pipe> {
    Pipe(asio::io_context& io, tcp::socket client) : client(std::move(client)), upstream(io), resolver(io) {}
    tcp::socket client, upstream;
    tcp::resolver resolver;
    std::array<char, 64 * 1024> up_buf{}, down_buf{};
    bool closed = false;
    std::function<void(Pipe*)> on_close;

    void start(const std::string& host, uint16_t port) {
        resolver.async_resolve(host, std::to_string(port), [self = shared_from_this()](auto ec, auto results) {
            if (ec) return self->close();
            asio::async_connect(self->upstream, results, [self](auto ec2, const auto&) {
                if (ec2) return self->close();
                boost::system::error_code ignored;
                self->upstream.set_option(tcp::no_delay(true), ignored);
                self->client.set_option(tcp::no_delay(true), ignored);
                self->pump(self->client, self->upstream, self->up_buf);
                self->pump(self->upstream, self->client, self->down_buf);
            });
        });
    }
    void pump(tcp::socket& from, tcp::socket& to, std::array<char, 64 * 1024>& buf) {
        from.async_read_some(asio::buffer(buf), [self = shared_from_this(), &from, &to, &buf](auto ec, size_t n) {
            if (ec) return self->close();
            asio::async_write(to, asio::buffer(buf.data(), n), [self, &from, &to, &buf](auto ec2, size_t) {
                if (ec2) return self->close();
                self->pump(from, to, buf);
            });
        });
    }
    void close() {
        if (closed) return;
        closed = true;
        boost::system::error_code ignored;
        client.shutdown(tcp::socket::shutdown_both, ignored);
        upstream.shutdown(tcp::socket::shutdown_both, ignored);
        client.close(ignored);
        upstream.close(ignored);
        resolver.cancel();
        if (on_close) on_close(this);
    }
};

}  // namespace

struct TcpProxy::Impl {
    asio::io_context io;
    std::list<tcp::acceptor> acceptors;
    std::list<Target> targets;  // one per listen() call; acceptors refer to them
    std::set<std::shared_ptr<Pipe>> pipes;
    std::thread thread;
    bool started = false;

    void accept(tcp::acceptor& a, const Target& target) {
        a.async_accept([this, &a, &target](boost::system::error_code ec, tcp::socket s) {
            if (ec == asio::error::operation_aborted) return;
            if (!ec) {
                auto [host, port] = target();
                if (host.empty() || port == 0) {
                    boost::system::error_code ignored;
                    s.close(ignored);  // no leader yet: the client retries
                } else {
                    auto p = std::make_shared<Pipe>(io, std::move(s));
                    p->on_close = [this](Pipe* done) {
                        for (auto it = pipes.begin(); it != pipes.end(); ++it)
                            if (it->get() == done) {
                                // Erased after the handler that closed it returns.
                                asio::post(io, [keep = *it] {});
                                pipes.erase(it);
                                break;
                            }
                    };
                    pipes.insert(p);
                    p->start(host, port);
                }
            }
            accept(a, target);
        });
    }
    void close_all() {
        auto copy = pipes;
        for (auto& p : copy) p->close();
    }
};

TcpProxy::TcpProxy() : impl_(std::make_unique<Impl>()) {}
TcpProxy::~TcpProxy() { stop(); }

std::string TcpProxy::listen(const std::string& host, uint16_t port, Target target) {
    std::list<tcp::acceptor> made;
    uint16_t bound = 0;
    std::string error = bind_listeners(impl_->io, host, port, made, bound);
    if (!error.empty()) return error;
    impl_->targets.push_back(std::move(target));
    const Target& t = impl_->targets.back();
    for (auto& a : made) {
        impl_->acceptors.push_back(std::move(a));
        impl_->accept(impl_->acceptors.back(), t);
    }
    return "";
}

void TcpProxy::start() {
    if (impl_->started) return;
    impl_->started = true;
    impl_->thread = std::thread([d = impl_.get()] {
        pthread_setname_np(pthread_self(), "tcp-proxy");
        auto guard = asio::make_work_guard(d->io);
        d->io.run();
    });
}

void TcpProxy::close_connections() {
    asio::post(impl_->io, [d = impl_.get()] { d->close_all(); });
}

void TcpProxy::stop() {
    if (!impl_) return;
    if (impl_->started) {
        asio::post(impl_->io, [d = impl_.get()] {
            boost::system::error_code ignored;
            for (auto& a : d->acceptors) a.close(ignored);
            d->close_all();
            d->io.stop();
        });
        if (impl_->thread.joinable()) impl_->thread.join();
        impl_->started = false;
    }
    boost::system::error_code ignored;
    for (auto& a : impl_->acceptors) a.close(ignored);
    impl_->acceptors.clear();
}

}  // namespace sluice::net
