// etcd v3's JSON gateway over one blocking HTTP/1.1 keep-alive connection.
// Shapes checked against etcd 3.4.23: int64 fields come back as JSON strings
// ("revision":"12") and zero/false fields are omitted; errors are non-200
// answers with {"error","message","code"}; lease/keepalive is a stream whose
// one answer is {"result":{...}} (or {"error":{...}}), chunked, with trailers.
#include "net/etcd_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <charconv>
#include <utility>

#include "net/base64.hpp"

namespace sluice::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;

namespace {

constexpr uint64_t kMaxBody = uint64_t(64) << 20;  // a range over the whole cluster state stays far below this

// --- JSON in the gateway's shapes -----------------------------------------------

json::string int_json(int64_t v) { return json::string(std::to_string(v)); }

// An int64 field, as a string or a number; absent is 0. False when malformed.
bool get_int(const json::object& o, std::string_view name, int64_t& out) {
    out = 0;
    const json::value* v = o.if_contains(name);
    if (!v) return true;
    if (const int64_t* i = v->if_int64()) {
        out = *i;
        return true;
    }
    if (const uint64_t* u = v->if_uint64()) {
        if (*u > uint64_t(INT64_MAX)) return false;
        out = int64_t(*u);
        return true;
    }
    if (const json::string* s = v->if_string()) {
        const char* end = s->data() + s->size();
        auto [p, ec] = std::from_chars(s->data(), end, out);
        return ec == std::errc() && p == end && !s->empty();
    }
    return false;
}

// A base64 bytes field; absent is "". False when malformed.
bool get_bytes(const json::object& o, std::string_view name, std::string& out) {
    out.clear();
    const json::value* v = o.if_contains(name);
    if (!v) return true;
    const json::string* s = v->if_string();
    return s && base64_decode(*s, out);
}

bool parse_kvs(const json::object& o, std::vector<EtcdKV>& out) {
    out.clear();
    const json::value* kvs = o.if_contains("kvs");
    if (!kvs) return true;
    const json::array* a = kvs->if_array();
    if (!a) return false;
    out.reserve(a->size());
    for (const json::value& v : *a) {
        const json::object* kv = v.if_object();
        if (!kv) return false;
        EtcdKV& e = out.emplace_back();
        if (!get_bytes(*kv, "key", e.key) || !get_bytes(*kv, "value", e.value) ||
            !get_int(*kv, "create_revision", e.create_revision) || !get_int(*kv, "mod_revision", e.mod_revision) ||
            !get_int(*kv, "version", e.version) || !get_int(*kv, "lease", e.lease))
            return false;
    }
    return true;
}

json::object range_json(const std::string& key, const std::string& range_end) {
    json::object o;
    o["key"] = base64_encode(key);
    if (!range_end.empty()) o["range_end"] = base64_encode(range_end);
    return o;
}

json::object put_json(const std::string& key, const std::string& value, int64_t lease) {
    json::object o;
    o["key"] = base64_encode(key);
    o["value"] = base64_encode(value);
    if (lease != 0) o["lease"] = int_json(lease);
    return o;
}

json::object op_json(const EtcdOp& op) {
    json::object o;
    switch (op.kind) {
    case EtcdOp::Kind::put: o["request_put"] = put_json(op.key, op.value, op.lease); break;
    case EtcdOp::Kind::del: o["request_delete_range"] = range_json(op.key, op.range_end); break;
    case EtcdOp::Kind::range: o["request_range"] = range_json(op.key, op.range_end); break;
    }
    return o;
}

json::object compare_json(const EtcdCompare& c) {
    json::object o;
    o["key"] = base64_encode(c.key);
    switch (c.result) {
    case EtcdCompare::Result::equal: o["result"] = "EQUAL"; break;
    case EtcdCompare::Result::greater: o["result"] = "GREATER"; break;
    case EtcdCompare::Result::less: o["result"] = "LESS"; break;
    case EtcdCompare::Result::not_equal: o["result"] = "NOT_EQUAL"; break;
    }
    const char* target = "VERSION";
    const char* field = "version";
    switch (c.target) {
    case EtcdCompare::Target::version: break;
    case EtcdCompare::Target::create: target = "CREATE", field = "create_revision"; break;
    case EtcdCompare::Target::mod: target = "MOD", field = "mod_revision"; break;
    case EtcdCompare::Target::value: target = "VALUE", field = "value"; break;
    case EtcdCompare::Target::lease: target = "LEASE", field = "lease"; break;
    }
    o["target"] = target;
    if (c.target == EtcdCompare::Target::value) o[field] = base64_encode(c.value);
    else o[field] = int_json(c.number);
    return o;
}

// "etcd ENDPOINT: MESSAGE (HTTP N)" from an error answer, whatever its shape.
std::string http_error(const std::string& endpoint, unsigned status, const std::string& body) {
    std::string what;
    json::error_code ec;
    json::value v = json::parse(body, ec);
    if (!ec && v.is_object()) {
        for (std::string_view field : {"message", "error"}) {
            const json::value* m = v.as_object().if_contains(field);
            if (m && m->is_string() && !m->as_string().empty()) {
                what = std::string(m->as_string());
                break;
            }
        }
    }
    if (what.empty()) {
        what = body.substr(0, 200);
        while (!what.empty() && (what.back() == '\n' || what.back() == '\r')) what.pop_back();
        if (what.empty()) what = "empty answer";
    }
    return "etcd " + endpoint + ": " + what + " (HTTP " + std::to_string(status) + ")";
}

bool parse_object(const std::string& endpoint, const std::string& body, json::object& out, std::string& error) {
    json::error_code ec;
    json::value v = json::parse(body, ec);
    if (ec || !v.is_object()) {
        error = "etcd " + endpoint + ": answer is not a JSON object: " + body.substr(0, 200);
        return false;
    }
    out = std::move(v.as_object());
    return true;
}

// Splits "host:port" / "[v6]:port"; false when malformed.
bool split_endpoint(const std::string& endpoint, std::string& host, uint16_t& port) {
    size_t colon;
    if (!endpoint.empty() && endpoint.front() == '[') {
        size_t close = endpoint.find(']');
        if (close == std::string::npos || close + 1 >= endpoint.size() || endpoint[close + 1] != ':') return false;
        host = endpoint.substr(1, close - 1);
        colon = close + 1;
    } else {
        colon = endpoint.rfind(':');
        if (colon == std::string::npos) return false;
        host = endpoint.substr(0, colon);
    }
    const char* first = endpoint.data() + colon + 1;
    const char* end = endpoint.data() + endpoint.size();
    auto [p, ec] = std::from_chars(first, end, port);
    return !host.empty() && ec == std::errc() && p == end && port != 0;
}

}  // namespace

// --- the connection -----------------------------------------------------------------

// One keep-alive connection; every operation is asynchronous on a private
// io_context that the calling thread runs until the operation completes, so
// tcp_stream's expiry bounds connect + write + read together.
struct EtcdClient::Connection {
    asio::io_context io;
    beast::tcp_stream stream{io};
    beast::flat_buffer buffer;
    size_t endpoint = SIZE_MAX;  // index of the endpoint it is open to; SIZE_MAX: closed

    void close() {
        beast::error_code ignored;
        stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream.close();
        buffer.clear();
        endpoint = SIZE_MAX;
    }

    void wait() {
        io.restart();
        io.run();
    }

    beast::error_code connect(const std::string& host, uint16_t port) {
        beast::error_code ec;
        asio::ip::address address = asio::ip::make_address(host, ec);
        if (!ec) {
            stream.async_connect(tcp::endpoint(address, port), [&ec](beast::error_code e) { ec = e; });
        } else {
            tcp::resolver resolver(io);
            auto results = resolver.resolve(host, std::to_string(port), ec);  // not bounded by the timeout
            if (ec) return ec;
            stream.async_connect(results, [&ec](beast::error_code e, const tcp::endpoint&) { ec = e; });
        }
        wait();
        if (!ec) stream.socket().set_option(tcp::no_delay(true), ec);
        return ec;
    }

    beast::error_code exchange(http::request<http::string_body>& request,
                               http::response_parser<http::string_body>& parser) {
        beast::error_code ec;
        http::async_write(stream, request, [&ec](beast::error_code e, size_t) { ec = e; });
        wait();
        if (ec) return ec;
        http::async_read(stream, buffer, parser, [&ec](beast::error_code e, size_t) { ec = e; });
        wait();
        return ec;
    }
};

EtcdClient::EtcdClient(std::vector<std::string> endpoints, std::chrono::milliseconds timeout)
    : endpoints_(std::move(endpoints)), timeout_(timeout), connection_(std::make_unique<Connection>()) {}

EtcdClient::~EtcdClient() {
    if (connection_->endpoint != SIZE_MAX) connection_->close();
}

const std::string& EtcdClient::endpoint() const {
    static const std::string none;
    return endpoints_.empty() ? none : endpoints_[last_];
}

bool EtcdClient::call(const char* path, const std::string& body, std::string& response) {
    if (endpoints_.empty()) {
        error_ = "etcd: no endpoints configured";
        return false;
    }
    Connection& c = *connection_;
    std::string failures;
    for (size_t tried = 0; tried < endpoints_.size(); ++tried, current_ = (current_ + 1) % endpoints_.size()) {
        const std::string& endpoint = endpoints_[current_];
        last_ = current_;
        std::string host;
        uint16_t port = 0;
        std::string failure;
        if (!split_endpoint(endpoint, host, port)) {
            failure = "etcd endpoint '" + endpoint + "' is not host:port";
        } else {
            if (c.endpoint != current_ && c.endpoint != SIZE_MAX) c.close();
            http::request<http::string_body> request{http::verb::post, path, 11};
            request.set(http::field::host, endpoint);
            request.set(http::field::content_type, "application/json");
            request.body() = body;
            request.prepare_payload();
            // A reused connection the server has closed meanwhile fails at once:
            // try once more on a fresh one before giving up on this endpoint.
            for (int round = 0; round < 2; ++round) {
                bool reused = c.endpoint == current_;
                c.stream.expires_after(timeout_);
                beast::error_code ec;
                bool connected = reused;
                if (!reused) {
                    ec = c.connect(host, port);
                    connected = !ec;
                    if (connected) c.endpoint = current_;
                }
                http::response_parser<http::string_body> parser;
                parser.body_limit(kMaxBody);
                if (!ec) ec = c.exchange(request, parser);
                c.stream.expires_never();
                if (!ec) {
                    auto& res = parser.get();
                    if (!res.keep_alive()) c.close();
                    if (res.result_int() == 200) {
                        response = std::move(res.body());
                        error_.clear();
                        return true;
                    }
                    failure = http_error(endpoint, res.result_int(), res.body());
                    if (res.result_int() != 503) {  // etcd's answer: another member would say the same
                        error_ = failure;
                        return false;
                    }
                    break;
                }
                c.close();
                if (ec == beast::error::timeout)
                    failure = "etcd " + endpoint + ": no answer within " + std::to_string(timeout_.count()) + " ms";
                else if (reused && round == 0)
                    continue;
                else
                    failure = "etcd " + endpoint + ": " + (connected ? "" : "cannot connect: ") + ec.message();
                break;
            }
        }
        if (!failures.empty()) failures += "; ";
        failures += failure;
    }
    error_ = failures;
    return false;
}

// --- leases ---------------------------------------------------------------------------

bool EtcdClient::lease_grant(int64_t ttl_s, int64_t& id, int64_t& granted_ttl) {
    json::object req;
    req["TTL"] = int_json(ttl_s);
    std::string body;
    json::object res;
    if (!call("/v3/lease/grant", json::serialize(req), body) || !parse_object(endpoint(), body, res, error_))
        return false;
    if (const json::value* e = res.if_contains("error"); e && e->is_string() && !e->as_string().empty()) {
        error_ = "etcd " + endpoint() + ": " + std::string(e->as_string());
        return false;
    }
    if (!get_int(res, "ID", id) || !get_int(res, "TTL", granted_ttl) || id == 0) {
        error_ = "etcd " + endpoint() + ": malformed lease grant answer: " + body.substr(0, 200);
        return false;
    }
    return true;
}

bool EtcdClient::lease_keepalive(int64_t id, int64_t& ttl_left) {
    ttl_left = 0;
    json::object req;
    req["ID"] = int_json(id);
    std::string body;
    json::object res;
    if (!call("/v3/lease/keepalive", json::serialize(req), body) || !parse_object(endpoint(), body, res, error_))
        return false;
    if (const json::value* e = res.if_contains("error")) {  // an error inside the stream
        const json::object* eo = e->if_object();
        const json::value* m = eo ? eo->if_contains("message") : nullptr;
        error_ = "etcd " + endpoint() + ": " + (m && m->is_string() ? std::string(m->as_string()) : json::serialize(*e));
        return false;
    }
    const json::value* result = res.if_contains("result");
    if (!result || !result->is_object() || !get_int(result->as_object(), "TTL", ttl_left)) {
        error_ = "etcd " + endpoint() + ": malformed lease keepalive answer: " + body.substr(0, 200);
        return false;
    }
    return true;
}

bool EtcdClient::lease_revoke(int64_t id) {
    json::object req;
    req["ID"] = int_json(id);
    std::string body;
    return call("/v3/lease/revoke", json::serialize(req), body);
}

// --- keys -----------------------------------------------------------------------------

bool EtcdClient::range(const std::string& key, const std::string& range_end, std::vector<EtcdKV>& out,
                       int64_t* header_revision) {
    std::string body;
    json::object res;
    if (!call("/v3/kv/range", json::serialize(range_json(key, range_end)), body) ||
        !parse_object(endpoint(), body, res, error_))
        return false;
    bool ok = parse_kvs(res, out);
    if (ok && header_revision) {
        const json::value* h = res.if_contains("header");
        ok = h && h->is_object() && get_int(h->as_object(), "revision", *header_revision);
    }
    if (!ok) error_ = "etcd " + endpoint() + ": malformed range answer: " + body.substr(0, 200);
    return ok;
}

bool EtcdClient::put(const std::string& key, const std::string& value, int64_t lease) {
    std::string body;
    return call("/v3/kv/put", json::serialize(put_json(key, value, lease)), body);
}

bool EtcdClient::del(const std::string& key, const std::string& range_end) {
    std::string body;
    return call("/v3/kv/deleterange", json::serialize(range_json(key, range_end)), body);
}

bool EtcdClient::txn(const std::vector<EtcdCompare>& compare, const std::vector<EtcdOp>& success,
                     const std::vector<EtcdOp>& failure, bool& succeeded,
                     std::vector<std::vector<EtcdKV>>* range_results) {
    succeeded = false;
    json::object req;
    json::array& cmp = req["compare"].emplace_array();
    for (const EtcdCompare& c : compare) cmp.push_back(compare_json(c));
    json::array& yes = req["success"].emplace_array();
    for (const EtcdOp& op : success) yes.push_back(op_json(op));
    json::array& no = req["failure"].emplace_array();
    for (const EtcdOp& op : failure) no.push_back(op_json(op));

    std::string body;
    json::object res;
    if (!call("/v3/kv/txn", json::serialize(req), body) || !parse_object(endpoint(), body, res, error_)) return false;
    const json::value* s = res.if_contains("succeeded");
    succeeded = s && s->is_bool() && s->get_bool();
    if (!range_results) return true;
    range_results->clear();
    const json::value* responses = res.if_contains("responses");
    const size_t expected = (succeeded ? success : failure).size();
    bool ok = responses ? responses->is_array() && responses->as_array().size() == expected : expected == 0;
    if (ok && responses) {
        for (const json::value& r : responses->as_array()) {
            std::vector<EtcdKV>& kvs = range_results->emplace_back();
            const json::object* ro = r.if_object();
            const json::value* range = ro ? ro->if_contains("response_range") : nullptr;
            if (!ro || (range && (!range->is_object() || !parse_kvs(range->as_object(), kvs)))) {
                ok = false;
                break;
            }
        }
    }
    if (!ok) error_ = "etcd " + endpoint() + ": malformed txn answer: " + body.substr(0, 200);
    return ok;
}

std::string EtcdClient::prefix_end(std::string prefix) {
    while (!prefix.empty()) {
        unsigned char last = static_cast<unsigned char>(prefix.back());
        if (last < 0xff) {
            prefix.back() = static_cast<char>(last + 1);
            return prefix;
        }
        prefix.pop_back();
    }
    return std::string(1, '\0');
}

}  // namespace sluice::net
