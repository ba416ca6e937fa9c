// The only sluicectl file that includes Asio and Beast (compiled once in
// net/asio_impl.cpp, linked through the sluice_asio object library).
#include "cli/ctl/http_client.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <exception>

namespace sluice::ctl {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr uint64_t kMaxBody = uint64_t(1) << 30;  // a definitions export of 100k queues is ~50 MiB

std::string base64(std::string_view in) {
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    size_t i = 0;
    for (; i + 3 <= in.size(); i += 3) {
        unsigned v = unsigned((unsigned char)in[i]) << 16 | unsigned((unsigned char)in[i + 1]) << 8 |
                     (unsigned char)in[i + 2];
        for (int shift : {18, 12, 6, 0}) out.push_back(kAlphabet[(v >> shift) & 63]);
    }
    if (size_t rest = in.size() - i) {
        unsigned v = unsigned((unsigned char)in[i]) << 16 | (rest == 2 ? unsigned((unsigned char)in[i + 1]) << 8 : 0);
        out.push_back(kAlphabet[(v >> 18) & 63]);
        out.push_back(kAlphabet[(v >> 12) & 63]);
        out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
        out.push_back('=');
    }
    return out;
}

// Runs one request/response exchange; throws boost::system::system_error.
asio::awaitable<void> exchange(std::string host, std::string port, std::chrono::seconds timeout,
                               http::request<http::string_body>& request,
                               http::response_parser<http::string_body>& parser) {
    auto executor = co_await asio::this_coro::executor;
    tcp::resolver resolver(executor);
    beast::tcp_stream stream(executor);
    auto endpoints = co_await resolver.async_resolve(host, port, asio::use_awaitable);
    stream.expires_after(timeout);
    co_await stream.async_connect(endpoints, asio::use_awaitable);
    co_await http::async_write(stream, request, asio::use_awaitable);
    beast::flat_buffer buffer;
    co_await http::async_read(stream, buffer, parser, asio::use_awaitable);
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

}  // namespace

std::string url_segment(std::string_view s) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
            c == '.' || c == '~') {
            out.push_back(char(c));
        } else {
            out.push_back('%');
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        }
    }
    return out;
}

HttpClient::HttpClient(std::string_view url, std::string user, std::string password, std::chrono::seconds timeout)
    : url_(url), authorization_("Basic " + base64(user + ":" + password)), timeout_(timeout) {
    constexpr std::string_view kScheme = "http://";
    if (url.substr(0, kScheme.size()) != kScheme) {
        if (url.substr(0, 8) == "https://") throw TransportError("https is not supported yet: use an http:// URL");
        throw TransportError("URL '" + url_ + "' does not start with http://");
    }
    std::string_view rest = url.substr(kScheme.size());
    size_t slash = rest.find('/');
    std::string_view authority = rest.substr(0, slash);
    prefix_ = slash == std::string_view::npos ? "" : std::string(rest.substr(slash));
    while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
    if (authority.find('@') != std::string_view::npos)
        throw TransportError("URL '" + url_ + "': give the user with --user, not in the URL");
    std::string_view port = "80";
    if (!authority.empty() && authority.front() == '[') {  // [::1]:15672
        size_t close = authority.find(']');
        if (close == std::string_view::npos) throw TransportError("URL '" + url_ + "': unclosed '['");
        host_ = std::string(authority.substr(1, close - 1));
        std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') throw TransportError("URL '" + url_ + "': bad port");
            port = after.substr(1);
        }
    } else {
        size_t colon = authority.rfind(':');
        host_ = std::string(authority.substr(0, colon));
        if (colon != std::string_view::npos) port = authority.substr(colon + 1);
    }
    if (host_.empty()) throw TransportError("URL '" + url_ + "' has no host");
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos)
        throw TransportError("URL '" + url_ + "': bad port '" + std::string(port) + "'");
    port_ = std::string(port);
}

HttpReply HttpClient::request(std::string_view method, std::string_view path, std::string_view body,
                              const std::vector<std::pair<std::string, std::string>>& headers) {
    http::request<http::string_body> req;
    req.method_string(method);
    req.target(prefix_ + std::string(path));
    req.version(11);
    bool v6 = host_.find(':') != std::string::npos;
    req.set(http::field::host, (v6 ? "[" + host_ + "]" : host_) + ":" + port_);
    req.set(http::field::user_agent, "sluicectl");
    req.set(http::field::authorization, authorization_);
    req.set(http::field::accept, "application/json");
    req.set(http::field::connection, "close");
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!body.empty() || method == "PUT" || method == "POST") {
        req.set(http::field::content_type, "application/json");
        req.body() = std::string(body);
        req.prepare_payload();
    }

    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxBody);
    asio::io_context io;
    std::exception_ptr failure;
    asio::co_spawn(io, exchange(host_, port_, timeout_, req, parser),
                   [&failure](std::exception_ptr e) { failure = e; });
    io.run();
    if (failure) {
        try {
            std::rethrow_exception(failure);
        } catch (const boost::system::system_error& e) {
            const auto& code = e.code();
            if (code == beast::error::timeout)
                throw TransportError("no answer from " + url_ + " within " + std::to_string(timeout_.count()) + " s");
            if (code == asio::error::host_not_found || code == asio::error::host_not_found_try_again ||
                code == asio::error::no_data)
                throw TransportError("cannot resolve host '" + host_ + "' in " + url_);
            if (code == asio::error::connection_refused)
                throw TransportError("cannot connect to " + url_ + ": connection refused (is sluiced running?)");
            throw TransportError("cannot talk to " + url_ + ": " + code.message());
        }
    }
    auto& res = parser.get();
    HttpReply reply;
    reply.status = res.result_int();
    reply.reason = std::string(res.reason());
    if (reply.reason.empty()) reply.reason = std::string(http::obsolete_reason(res.result()));
    reply.body = std::move(res.body());
    return reply;
}

}  // namespace sluice::ctl
