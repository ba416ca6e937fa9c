// A small blocking HTTP/1.1 client for the management API: one request per
// call on a fresh connection, basic auth, a deadline for the whole exchange.
// Asio and Beast stay inside http_client.cpp.
//
// Thread-safety: one thread at a time.
#pragma once

#include <chrono>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::ctl {

// The server could not be reached or did not answer (refused, unresolvable,
// timed out, malformed answer), or the URL is not one this client can use.
class TransportError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct HttpReply {
    unsigned status = 0;
    std::string reason;  // "Not Found"
    std::string body;
};

class HttpClient {
public:
    // `url`: http://HOST[:PORT][/PREFIX]; throws TransportError for another
    // scheme or a malformed URL.
    HttpClient(std::string_view url, std::string user, std::string password, std::chrono::seconds timeout);

    // `path` starts with "/" and is appended to the URL's prefix. Throws
    // TransportError; any HTTP status is a reply.
    HttpReply request(std::string_view method, std::string_view path, std::string_view body = {},
                      const std::vector<std::pair<std::string, std::string>>& headers = {});

    const std::string& url() const { return url_; }

private:
    std::string url_, host_, port_, prefix_, authorization_;
    std::chrono::seconds timeout_;
};

// Percent-encodes one path segment: every byte but A-Z a-z 0-9 - _ . ~
// ("/" becomes "%2F").
std::string url_segment(std::string_view s);

}  // namespace sluice::ctl
