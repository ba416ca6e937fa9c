// The management API's HTTP side: decoded requests' parameters, JSON
// responses and errors, list endpoints (filter, sort, page, columns), and
// JSON request bodies with typed fields.
#include <algorithm>
#include <cctype>
#include <limits>

#include "broker/broker.hpp"
#include "net/management_api_internal.hpp"

namespace sluice::net::mgmt {

// --- requests ------------------------------------------------------------------

const std::string* Request::param(std::string_view name) const {
    for (const auto& [k, v] : query)
        if (k == name) return &v;
    return nullptr;
}

bool Request::flag(std::string_view name) const {
    const std::string* v = param(name);
    return v && (*v == "true" || *v == "1");
}

// --- responses -----------------------------------------------------------------

HttpResponse json_response(unsigned status, const json::value& v) {
    HttpResponse r;
    r.status = status;
    r.body = json::serialize(v);
    r.body += '\n';
    return r;
}

HttpResponse no_content() {
    HttpResponse r;
    r.status = 204;
    r.content_type.clear();
    return r;
}

HttpResponse error_response(unsigned status, std::string_view error, std::string_view reason) {
    json::object o;
    o["error"] = utf8(error);
    o["reason"] = utf8(reason);
    return json_response(status, o);
}

HttpResponse not_found(std::string_view reason) { return error_response(404, "Object Not Found", reason); }
HttpResponse bad_request(std::string_view reason) { return error_response(400, "bad_request", reason); }

HttpResponse method_not_allowed(std::string_view allow) {
    HttpResponse r = error_response(405, "Method Not Allowed", "allowed: " + std::string(allow));
    r.headers.emplace_back("Allow", std::string(allow));
    return r;
}

HttpResponse from_amqp_error(const broker::AmqpError& e) {
    namespace code = broker::reply;
    switch (e.code) {
        case code::not_found: return not_found(e.text);
        case code::access_refused: return error_response(403, "access_refused", e.text);
        // RabbitMQ's management API answers a channel error it met with 400.
        case code::resource_locked: return error_response(400, "resource_locked", "RESOURCE_LOCKED - " + e.text);
        case code::precondition_failed: return error_response(400, "precondition_failed", e.text);
        case code::not_allowed: return error_response(400, "not_allowed", e.text);
        case code::command_invalid: return error_response(400, "command_invalid", e.text);
        case code::not_implemented: return error_response(501, "not_implemented", e.text);
        default: return error_response(500, broker::reply_name(e.code), e.text);
    }
}

void reply_when_synced(State& s, bool durable, HttpResponse response, const Reply& reply) {
    broker::Durability& d = s.broker.durability();
    if (!durable || !d.enabled()) {
        reply(std::move(response));
        return;
    }
    d.after_sync([reply, response = std::move(response)](bool ok) mutable {
        if (ok) reply(std::move(response));
        else reply(error_response(500, "internal_error", "a durable write failed"));
    });
}

namespace {

const json::value* at_path(const json::object& o, std::string_view path) {
    const json::object* cur = &o;
    while (true) {
        size_t dot = path.find('.');
        auto it = cur->find(path.substr(0, dot));
        if (it == cur->end()) return nullptr;
        if (dot == std::string_view::npos) return &it->value();
        if (!it->value().is_object()) return nullptr;
        cur = &it->value().get_object();
        path.remove_prefix(dot + 1);
    }
}

// Missing < numbers < strings < anything else; numbers by value.
int compare_values(const json::value* a, const json::value* b) {
    auto rank = [](const json::value* v) { return !v ? 0 : v->is_number() ? 1 : v->is_string() ? 2 : 3; };
    int ra = rank(a), rb = rank(b);
    if (ra != rb) return ra < rb ? -1 : 1;
    if (ra == 1) {
        double x = a->to_number<double>(), y = b->to_number<double>();
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (ra == 2) {
        int c = a->get_string().subview().compare(b->get_string().subview());
        return c < 0 ? -1 : c > 0 ? 1 : 0;
    }
    if (ra == 3 && a->is_bool() && b->is_bool()) return int(a->get_bool()) - int(b->get_bool());
    return 0;
}

bool contains_nocase(std::string_view hay, std::string_view needle) {
    auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end(), [](char x, char y) {
        return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
    });
    return it != hay.end();
}

void copy_path(const json::object& from, json::object& to, std::string_view path) {
    size_t dot = path.find('.');
    auto it = from.find(path.substr(0, dot));
    if (it == from.end()) return;
    if (dot == std::string_view::npos) {
        to[it->key()] = it->value();
        return;
    }
    if (!it->value().is_object()) return;
    json::value& sub = to[it->key()];
    if (!sub.is_object()) sub = json::object();
    copy_path(it->value().get_object(), sub.get_object(), path.substr(dot + 1));
}

bool parse_uint(const std::string& s, uint64_t& out) {
    if (s.empty() || s.size() > 9) return false;
    out = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        out = out * 10 + uint64_t(c - '0');
    }
    return true;
}

}  // namespace

HttpResponse list_response(const Request& r, json::array items) {
    const size_t total = items.size();
    if (const std::string* name = r.param("name"); name && !name->empty()) {
        json::array kept;
        for (auto& v : items) {
            const json::value* n = v.is_object() ? at_path(v.get_object(), "name") : nullptr;
            if (n && n->is_string() && contains_nocase(n->get_string().subview(), *name)) kept.push_back(std::move(v));
        }
        items = std::move(kept);
    }
    if (const std::string* sort = r.param("sort"); sort && !sort->empty()) {
        std::vector<json::value*> order;
        order.reserve(items.size());
        for (auto& v : items) order.push_back(&v);
        bool reverse = r.flag("sort_reverse");
        std::stable_sort(order.begin(), order.end(), [&](const json::value* a, const json::value* b) {
            const json::value* x = a->is_object() ? at_path(a->get_object(), *sort) : nullptr;
            const json::value* y = b->is_object() ? at_path(b->get_object(), *sort) : nullptr;
            int c = compare_values(x, y);
            return reverse ? c > 0 : c < 0;
        });
        json::array sorted;
        sorted.reserve(items.size());
        for (json::value* v : order) sorted.push_back(std::move(*v));
        items = std::move(sorted);
    }
    const size_t filtered = items.size();
    const std::string* page_param = r.param("page");
    uint64_t page = 1, page_size = 100;
    if (page_param) {
        if (!parse_uint(*page_param, page) || page == 0) return bad_request("page must be a positive integer");
        if (const std::string* ps = r.param("page_size")) {
            if (!parse_uint(*ps, page_size) || page_size == 0 || page_size > 500)
                return bad_request("page_size must be an integer from 1 to 500");
        }
        uint64_t page_count = filtered == 0 ? 1 : (filtered + page_size - 1) / page_size;
        if (page > page_count) return bad_request("page out of range");
        json::array slice;
        size_t from = size_t((page - 1) * page_size);
        for (size_t i = from; i < filtered && i < from + page_size; ++i) slice.push_back(std::move(items[i]));
        items = std::move(slice);
    }
    if (const std::string* columns = r.param("columns"); columns && !columns->empty()) {
        std::vector<std::string_view> cols;
        std::string_view rest = *columns;
        while (!rest.empty()) {
            size_t comma = rest.find(',');
            if (comma != 0) cols.push_back(rest.substr(0, comma));
            if (comma == std::string_view::npos) break;
            rest.remove_prefix(comma + 1);
        }
        for (auto& v : items) {
            if (!v.is_object()) continue;
            json::object picked;
            for (std::string_view c : cols) copy_path(v.get_object(), picked, c);
            v = std::move(picked);
        }
    }
    if (!page_param) return json_response(200, items);
    json::object o;
    o["filtered_count"] = filtered;
    o["item_count"] = items.size();
    o["page"] = page;
    o["page_count"] = filtered == 0 ? 1 : (filtered + page_size - 1) / page_size;
    o["page_size"] = page_size;
    o["total_count"] = total;
    o["items"] = std::move(items);
    return json_response(200, o);
}

// --- request bodies --------------------------------------------------------------

bool parse_body(const Request& r, json::object& out, HttpResponse& error) {
    std::string_view body = r.raw->body;
    if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) {
        out = {};
        return true;
    }
    json::parse_options opts;
    opts.max_depth = 32;  // hostile nesting cannot exhaust the stack
    json::stream_parser p({}, opts);
    boost::system::error_code ec;
    size_t n = p.write_some(body.data(), body.size(), ec);
    if (!ec) p.finish(ec);
    if (ec) {
        error = bad_request("malformed JSON body at byte " + std::to_string(n) + ": " + ec.message());
        return false;
    }
    json::value v = p.release();
    if (!v.is_object()) {
        error = bad_request("the body must be a JSON object");
        return false;
    }
    out = std::move(v.get_object());
    return true;
}

bool get_bool(const json::object& o, std::string_view key, bool& out, HttpResponse& error) {
    auto it = o.find(key);
    if (it == o.end() || it->value().is_null()) return true;
    if (it->value().is_bool()) {
        out = it->value().get_bool();
        return true;
    }
    if (it->value().is_string()) {  // RabbitMQ's UI sends "true"/"false"
        auto s = it->value().get_string().subview();
        if (s == "true" || s == "false") {
            out = s == "true";
            return true;
        }
    }
    error = bad_request("'" + std::string(key) + "' must be a boolean");
    return false;
}

bool get_string(const json::object& o, std::string_view key, std::string& out, HttpResponse& error) {
    auto it = o.find(key);
    if (it == o.end() || it->value().is_null()) return true;
    if (!it->value().is_string()) {
        error = bad_request("'" + std::string(key) + "' must be a string");
        return false;
    }
    out = it->value().get_string().subview();
    return true;
}

bool get_int(const json::object& o, std::string_view key, int64_t& out, HttpResponse& error) {
    auto it = o.find(key);
    if (it == o.end() || it->value().is_null()) return true;
    const json::value& v = it->value();
    if (v.is_int64()) {
        out = v.get_int64();
        return true;
    }
    if (v.is_uint64() && v.get_uint64() <= uint64_t(std::numeric_limits<int64_t>::max())) {
        out = int64_t(v.get_uint64());
        return true;
    }
    if (v.is_string()) {  // RabbitMQ's UI sends numbers as strings
        auto s = v.get_string().subview();
        int64_t x = 0;
        bool neg = !s.empty() && s[0] == '-';
        size_t i = neg ? 1 : 0;
        bool ok = s.size() > i && s.size() - i <= 18;
        for (; ok && i < s.size(); ++i) {
            if (s[i] < '0' || s[i] > '9') ok = false;
            else x = x * 10 + (s[i] - '0');
        }
        if (ok) {
            out = neg ? -x : x;
            return true;
        }
    }
    error = bad_request("'" + std::string(key) + "' must be an integer");
    return false;
}

bool get_table(const json::object& o, std::string_view key, amqp::FieldTable& out, HttpResponse& error) {
    auto it = o.find(key);
    if (it == o.end() || it->value().is_null()) return true;
    std::string why;
    if (!json_table(it->value(), out, why)) {
        error = bad_request("'" + std::string(key) + "': " + why);
        return false;
    }
    return true;
}

bool check_short(std::string_view what, std::string_view s, HttpResponse& error) {
    if (s.size() <= 255) return true;
    error = bad_request(std::string(what) + " is longer than 255 bytes");
    return false;
}

}  // namespace sluice::net::mgmt
