#include "cli/ctl/api_client.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace sluice::ctl {

namespace json = boost::json;

std::string error_line(const HttpReply& reply) {
    std::string line = std::to_string(reply.status);
    if (!reply.reason.empty()) line += " " + reply.reason;
    std::string detail;
    boost::system::error_code ec;
    json::value v = json::parse(reply.body, ec);
    if (!ec && v.is_object()) {
        const json::object& o = v.get_object();
        auto text = [&](const char* key) -> std::string {
            auto it = o.find(key);
            return it != o.end() && it->value().is_string() ? std::string(it->value().get_string()) : "";
        };
        detail = text("reason");
        if (detail.empty()) detail = text("error");
    } else {
        detail = reply.body.substr(0, reply.body.find('\n'));
        if (detail.size() > 200) detail = detail.substr(0, 200) + "...";
    }
    // Keep it one line whatever the server wrote.
    for (char& c : detail)
        if (c == '\n' || c == '\r') c = ' ';
    if (!detail.empty()) line += ": " + detail;
    return line;
}

json::value ApiClient::parse(const HttpReply& reply) {
    if (reply.body.empty()) return nullptr;
    boost::system::error_code ec;
    json::value v = json::parse(reply.body, ec);
    if (ec) throw ApiError(reply.status, "the server's answer is not JSON: " + ec.message());
    return v;
}

HttpReply ApiClient::checked(HttpReply reply) {
    if (reply.status >= 300) throw ApiError(reply.status, error_line(reply));
    return reply;
}

json::value ApiClient::get(std::string_view path) { return parse(checked(http_.request("GET", path))); }

HttpReply ApiClient::send(std::string_view method, std::string_view path, const json::value* body,
                          const std::vector<std::pair<std::string, std::string>>& headers) {
    std::string text = body ? json::serialize(*body) : std::string();
    return checked(http_.request(method, path, text, headers));
}

HttpReply ApiClient::send_text(std::string_view method, std::string_view path, std::string_view body) {
    return checked(http_.request(method, path, body));
}

}  // namespace sluice::ctl
