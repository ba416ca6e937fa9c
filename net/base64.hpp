// Base64 (RFC 4648), for the management API's payloads and Basic auth and
// for etcd's JSON gateway, which carries keys and values as base64.
#pragma once

#include <string>
#include <string_view>

namespace sluice::net {

std::string base64_encode(std::string_view in);
// Accepts the standard and the URL-safe alphabet, padding, and line breaks;
// false on anything else (or data after padding).
bool base64_decode(std::string_view in, std::string& out);

}  // namespace sluice::net
