// The management API as sluicectl uses it: JSON in and out over HttpClient,
// and an HTTP error turned into one line — "404 Not Found: no queue 'x' in
// vhost '/'" — taken from the API's {"error", "reason"} body.
#pragma once

#include <boost/json/value.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cli/ctl/http_client.hpp"

namespace sluice::ctl {

// The server refused the request (HTTP 4xx/5xx) or answered with something
// that is not the JSON it should be: exit code 1.
class ApiError : public std::runtime_error {
public:
    ApiError(unsigned status, const std::string& line) : std::runtime_error(line), status_(status) {}
    unsigned status() const { return status_; }

private:
    unsigned status_;
};

// "404 Not Found: <reason>" (the reason from a JSON body, else its first line).
std::string error_line(const HttpReply& reply);

class ApiClient {
public:
    explicit ApiClient(HttpClient& http) : http_(http) {}

    // GET; the parsed JSON of a 2xx answer, else ApiError.
    boost::json::value get(std::string_view path);
    // Any method with an optional JSON body; the reply of a 2xx answer, else ApiError.
    HttpReply send(std::string_view method, std::string_view path, const boost::json::value* body = nullptr,
                   const std::vector<std::pair<std::string, std::string>>& headers = {});
    // Same, with a body sent as it is (already JSON text).
    HttpReply send_text(std::string_view method, std::string_view path, std::string_view body);

    // The JSON of a reply's body (null for an empty body); ApiError if it is not JSON.
    static boost::json::value parse(const HttpReply& reply);

private:
    HttpReply checked(HttpReply reply);
    HttpClient& http_;
};

}  // namespace sluice::ctl
