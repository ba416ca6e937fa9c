#include "net/http_server.hpp"

#include <pthread.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <thread>
#include <type_traits>

#include "broker/broker.hpp"
#include "net/listener.hpp"
#include "net/dashboard_assets.hpp"
#include "net/management_api.hpp"
#include "net/metrics_text.hpp"
#include "net/tls_context.hpp"

namespace sluice::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kMaxRequestBody = 1 << 20;
constexpr auto kWriteTimeout = std::chrono::seconds(30);
constexpr auto kTlsHandshakeTimeout = std::chrono::seconds(10);

using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

class HttpConnection;

// Renders /metrics/per-object off the broker thread, one scrape at a time:
// with 100k queues the text takes over a second to build, which on the
// broker thread stalled every client (RPC p99 106 µs → 6.5 ms, calls/s
// 19,359 → 303 while scraping every second). Jobs only read their snapshot.
class RenderThread {
public:
    RenderThread() : thread_([this] {
        pthread_setname_np(pthread_self(), "http-render");
        run();
    }) {}
    ~RenderThread() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        wake_.notify_one();
        thread_.join();
    }
    void post(std::function<void()> job) {
        {
            std::lock_guard lock(mutex_);
            jobs_.push_back(std::move(job));
        }
        wake_.notify_one();
    }

private:
    void run() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock lock(mutex_);
                wake_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
                if (stop_) return;
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            job();
        }
    }
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::function<void()>> jobs_;
    bool stop_ = false;
    std::thread thread_;  // last: starts once the rest is built
};

// The open HTTP connections, oldest first, for the connection cap.
struct HttpSessions {
    std::list<HttpConnection*> live;
    size_t max = 1024;
    std::chrono::seconds request_timeout{20};
    std::chrono::milliseconds sample_interval = kDefaultCapacityInterval;  // the capacity series' rates
    PrometheusNaming naming;  // the names /metrics and /metrics/per-object carry
    std::function<std::vector<ClusterNodeStatus>()> cluster;  // cluster mode: /metrics adds the nodes' series
};

// What the connection cap sees of a connection, HTTP or HTTPS: it is listed
// in HttpSessions while open, and may be evicted while it waits for a request.
class HttpConnection {
public:
    // `sessions` is shared: pending handlers may outlive the server.
    explicit HttpConnection(std::shared_ptr<HttpSessions> sessions) : sessions_(std::move(sessions)) {
        place_ = sessions_->live.insert(sessions_->live.end(), this);
    }
    virtual ~HttpConnection() { unlist(); }

    // Waiting for (the rest of) a request rather than working on an answer.
    bool reading() const { return reading_; }
    std::chrono::steady_clock::time_point reading_since() const { return reading_since_; }
    // Make room for another connection: close this one now.
    void evict() {
        unlist();  // its descriptor is freed now, so it no longer counts
        reading_ = false;
        close_socket();  // the pending read completes with an error
    }

protected:
    virtual void close_socket() = 0;
    void unlist() {
        if (!listed_) return;
        listed_ = false;
        sessions_->live.erase(place_);
    }

    std::shared_ptr<HttpSessions> sessions_;
    std::list<HttpConnection*>::iterator place_;
    bool listed_ = true;
    bool reading_ = false;
    std::chrono::steady_clock::time_point reading_since_;
};

// One HTTP connection: reads a request, routes it, writes the answer (which
// the management API may give later, after a durable write syncs), repeats.
// Over plain TCP or TLS (Stream = PlainStream or TlsStream; HTTPS first runs
// the handshake).
//
// Routes on the management port: /metrics (the aggregated Prometheus text,
// no auth), /api/… (ManagementApi, basic auth), the dashboard's files at /
// (no auth: the page asks for credentials and sends them with each API
// call). On the Prometheus port: /metrics and /metrics/per-object only.
template <class Stream>
class HttpSession final : public HttpConnection, public std::enable_shared_from_this<HttpSession<Stream>> {
public:
    static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

    // Args construct the stream: (socket) or (socket, ssl context).
    template <class... Args>
    // `api` is null on the Prometheus listener, which serves only /metrics
    // and /metrics/per-object.
    HttpSession(broker::Broker& broker, ManagementApi* api, RenderThread* renderer,
                std::shared_ptr<HttpSessions> sessions, Args&&... args)
        : HttpConnection(std::move(sessions)),
          stream_(std::forward<Args>(args)...),
          broker_(broker),
          api_(api),
          renderer_(renderer) {}

    void start() {
        beast::error_code ec;
        auto ep = socket().remote_endpoint(ec);
        loopback_ = !ec && (ep.address().is_loopback() ||
                            (ep.address().is_v6() && ep.address().to_v6().is_v4_mapped() &&
                             asio::ip::make_address_v4(asio::ip::v4_mapped, ep.address().to_v6()).is_loopback()));
        if constexpr (kTls) {
            beast::get_lowest_layer(stream_).expires_after(kTlsHandshakeTimeout);
            stream_.async_handshake(asio::ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code e) {
                if (e) {
                    self->close_socket();
                    return;
                }
                self->read();
            });
        } else {
            read();
        }
    }

private:
    tcp::socket& socket() { return beast::get_lowest_layer(stream_).socket(); }

    void close_socket() override {
        beast::error_code ec;
        socket().shutdown(tcp::socket::shutdown_both, ec);
        socket().close(ec);
    }

    // The end of a conversation: over TLS close_notify first (a peer that
    // does not answer it is cut off by the timeout).
    void close() {
        if constexpr (kTls) {
            beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
            stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) { self->close_socket(); });
        } else {
            beast::error_code ec;
            socket().shutdown(tcp::socket::shutdown_both, ec);
        }
    }

    void read() {
        parser_.emplace();
        parser_->body_limit(kMaxRequestBody);
        // The whole request must arrive in time: a slow (slowloris) or silent
        // client is dropped, however steadily it trickles bytes.
        beast::get_lowest_layer(stream_).expires_after(sessions_->request_timeout);
        reading_ = true;
        reading_since_ = std::chrono::steady_clock::now();
        http::async_read(stream_, buffer_, *parser_,
                         [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
    }

    void on_read(beast::error_code ec) {
        reading_ = false;
        if (ec == http::error::body_limit || ec == http::error::header_limit || ec == http::error::buffer_overflow) {
            // Say why, then close: the rest of the request is not read.
            keep_alive_ = false;
            head_ = false;
            version_ = 11;
            HttpResponse r;
            r.status = ec == http::error::body_limit ? 413 : 431;
            r.content_type = "text/plain";
            r.body = ec == http::error::body_limit ? "request body larger than 1 MiB\n" : "request header too large\n";
            send(std::move(r));
            return;
        }
        if (ec) {
            if (ec == http::error::end_of_stream) close();
            else close_socket();
            return;
        }
        auto req = parser_->release();
        version_ = req.version();
        keep_alive_ = req.keep_alive();
        head_ = req.method() == http::verb::head;
        beast::get_lowest_layer(stream_).expires_never();  // an answer may wait for a durable write

        std::string_view target(req.target().data(), req.target().size());
        std::string_view path = target.substr(0, target.find('?'));
        const bool get = req.method() == http::verb::get || head_;
        if (api_ && (path == "/api" || path.substr(0, 5) == "/api/")) {
            HttpRequest r;
            r.method = std::string(req.method_string());
            r.target = std::string(target);
            r.body = std::move(req.body());
            r.authorization = std::string(req[http::field::authorization]);
            r.reason = std::string(req["X-Reason"]);
            r.ajax = !req["X-Requested-With"].empty();
            r.host = std::string(req[http::field::host]);
            r.origin = std::string(req[http::field::origin]);
            r.fetch_site = std::string(req["Sec-Fetch-Site"]);
            r.from_loopback = loopback_;
            api_->handle(r, [self = this->shared_from_this()](HttpResponse resp) { self->send(std::move(resp)); });
            return;
        }
        HttpResponse r;
        r.content_type = "text/plain";
        // The dashboard and the API on the management port; the per-object
        // series (every vhost and queue name, O(queues) to render) only on
        // the Prometheus port, as RabbitMQ serves them.
        const DashboardAsset* asset = api_ ? find_dashboard_asset(path == "/" ? "/index.html" : path) : nullptr;
        const bool metrics = path == "/metrics" || (!api_ && path == "/metrics/per-object");
        if (metrics || asset) {
            if (!get) {
                r.status = 405;
                r.body = "method not allowed\n";
                r.headers.emplace_back("Allow", "GET, HEAD");
            } else if (asset) {
                r.content_type = std::string(asset->content_type);
                r.body = std::string(asset->body);
                r.headers.emplace_back("Cache-Control", "no-cache");
                if (asset->path == "/index.html")
                    r.headers.emplace_back("Content-Security-Policy",
                                           "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
            } else if (path == "/metrics/per-object" && renderer_) {
                // A copy of the counters here, the text on the render thread.
                auto snapshot = per_object_snapshot(broker_, sessions_->sample_interval, sessions_->naming);
                auto executor = socket().get_executor();
                renderer_->post([self = this->shared_from_this(), snapshot, executor] {
                    HttpResponse out;
                    out.content_type = kMetricsContentType;
                    out.body = render_per_object(*snapshot);
                    asio::post(executor, [self, out = std::move(out)]() mutable { self->send(std::move(out)); });
                });
                return;
            } else {
                r.content_type = kMetricsContentType;
                r.body = path == "/metrics"
                             ? metrics_text(broker_, sessions_->naming)
                             : per_object_metrics_text(broker_, sessions_->sample_interval, sessions_->naming);
                if (path == "/metrics" && sessions_->cluster && sessions_->naming.sluice())
                    r.body += cluster_metrics_text(sessions_->cluster());
            }
        } else {
            r.status = 404;
            r.body = "not found\n";
        }
        send(std::move(r));
    }

    void send(HttpResponse r) {
        response_ = {};
        response_.version(version_);
        response_.keep_alive(keep_alive_);
        response_.result(static_cast<http::status>(r.status));
        response_.set(http::field::server, "Sluice");
        response_.set("X-Content-Type-Options", "nosniff");
        if (!r.content_type.empty()) response_.set(http::field::content_type, r.content_type);
        for (auto& [name, value] : r.headers) response_.set(name, value);
        response_.body() = std::move(r.body);
        response_.prepare_payload();
        if (head_) response_.body().clear();  // Content-Length stays that of the GET
        beast::get_lowest_layer(stream_).expires_after(kWriteTimeout);
        http::async_write(stream_, response_, [self = this->shared_from_this()](beast::error_code e, size_t) {
            if (e) {
                self->close_socket();
                return;
            }
            if (!self->response_.keep_alive()) {
                self->close();
                return;
            }
            self->read();
        });
    }

    Stream stream_;
    broker::Broker& broker_;
    ManagementApi* api_;
    RenderThread* renderer_;  // on the Prometheus listener
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    http::response<http::string_body> response_;
    unsigned version_ = 11;
    bool keep_alive_ = true;
    bool head_ = false;
    bool loopback_ = false;
};

}  // namespace

struct HttpServer::Impl {
    Impl(asio::io_context& i, broker::Broker& b, bool prometheus_only)
        : io(i),
          broker(b),
          api(prometheus_only ? nullptr : std::make_unique<ManagementApi>(b)),
          renderer(prometheus_only ? std::make_unique<RenderThread>() : nullptr),
          sample_timer(i) {}
    std::shared_ptr<HttpSessions> sessions = std::make_shared<HttpSessions>();
    asio::io_context& io;
    broker::Broker& broker;
    std::unique_ptr<ManagementApi> api;  // null on the Prometheus listener
    std::unique_ptr<RenderThread> renderer;  // only on the Prometheus listener
    asio::steady_timer sample_timer;  // the API's rates
    std::list<tcp::acceptor> acceptors;
    std::list<tcp::acceptor> tls_acceptors;
    uint16_t port = 0;
    uint16_t tls_port = 0;

    void accept(tcp::acceptor& a, TlsContext* tls) {
        a.async_accept([this, &a, tls](beast::error_code ec, tcp::socket socket) {
            if (ec == asio::error::operation_aborted || !a.is_open()) return;
            if (ec) {  // out of descriptors (EMFILE, ENFILE …): back off instead of spinning
                auto t = std::make_shared<asio::steady_timer>(io, std::chrono::milliseconds(100));
                t->async_wait([this, &a, tls, t](beast::error_code e) {
                    if (!e && a.is_open()) accept(a, tls);
                });
                return;
            }
            if (make_room()) {
                if (tls)
                    std::make_shared<HttpSession<TlsStream>>(broker, api.get(), renderer.get(), sessions, std::move(socket), tls->context())
                        ->start();
                else
                    std::make_shared<HttpSession<PlainStream>>(broker, api.get(), renderer.get(), sessions, std::move(socket))->start();
            }
            accept(a, tls);  // a refused socket closes as it goes out of scope
        });
    }

    // At the cap: evict the connection that has waited longest for a
    // request. False when every connection is busy answering.
    bool make_room() {
        if (sessions->live.size() < sessions->max) return true;
        HttpConnection* oldest = nullptr;
        for (HttpConnection* s : sessions->live)
            if (s->reading() && (!oldest || s->reading_since() < oldest->reading_since())) oldest = s;
        if (!oldest) return false;
        oldest->evict();
        return true;
    }

    void schedule_sample() {
        sample_timer.expires_after(api->sample_interval());
        sample_timer.async_wait([this](beast::error_code ec) {
            if (ec) return;
            api->sample();
            schedule_sample();
        });
    }
};

HttpServer::HttpServer(asio::io_context& io, broker::Broker& broker, size_t max_connections,
                       std::chrono::seconds request_timeout, std::chrono::milliseconds sample_interval,
                       bool prometheus_only)
    : impl_(std::make_unique<Impl>(io, broker, prometheus_only)) {
    impl_->sessions->max = std::max<size_t>(1, max_connections);
    impl_->sessions->request_timeout = request_timeout;
    impl_->sessions->sample_interval = std::max(sample_interval, std::chrono::milliseconds(100));
    if (impl_->api) {
        impl_->api->set_sample_interval(sample_interval);
        impl_->schedule_sample();  // the rates are 0 until this timer has run twice
    }
}
HttpServer::~HttpServer() = default;

void HttpServer::set_prometheus_naming(PrometheusNaming naming) { impl_->sessions->naming = std::move(naming); }

std::string HttpServer::listen(const std::string& host, uint16_t port) {
    std::string err = bind_listeners(impl_->io, host, port, impl_->acceptors, impl_->port);
    if (!err.empty()) return err;
    for (auto& a : impl_->acceptors) impl_->accept(a, nullptr);
    return "";
}

std::string HttpServer::listen_tls(const std::string& host, uint16_t port, TlsContext& tls) {
    std::string err = bind_listeners(impl_->io, host, port, impl_->tls_acceptors, impl_->tls_port);
    if (!err.empty()) return err;
    for (auto& a : impl_->tls_acceptors) impl_->accept(a, &tls);
    return "";
}

void HttpServer::stop() {
    impl_->sample_timer.cancel();
    for (auto* list : {&impl_->acceptors, &impl_->tls_acceptors})
        for (auto& a : *list) {
            beast::error_code ec;
            a.close(ec);
        }
}

void HttpServer::set_cluster_view(std::function<std::vector<ClusterNodeStatus>()> view) {
    impl_->sessions->cluster = view;
    if (impl_->api) impl_->api->set_cluster_view(std::move(view));
}

void HttpServer::set_shovels(Shovels* shovels) {
    if (impl_->api) impl_->api->set_shovels(shovels);
}

uint16_t HttpServer::port() const { return impl_->port; }
uint16_t HttpServer::tls_port() const { return impl_->tls_port; }

}  // namespace sluice::net
