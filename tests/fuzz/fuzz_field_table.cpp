// libFuzzer target: the field-table parser (net/amqp/field_table) and what the
// broker reads out of tables (headers-exchange matching), over arbitrary bytes.
//
// Input: a length-prefixed table A, optionally followed by a length-prefixed
// table B (seeds: client_properties, server_properties, declare/bind/consume
// arguments and message headers from real client traffic; pairs of binding
// arguments and message headers). When A does not decode, the input is tried
// as one typed field value instead.
//
// Properties, besides "no crash, no UB, no leak":
//   - tables and single values round-trip through encode/decode (table_checks.hpp);
//   - find(name) is the first entry of that name; as_int / as_string / as_bool
//     answer exactly for their wire types;
//   - headers_match(binding, B) holds for binding = x-match all (or any) plus
//     B's own entries (last occurrence of each name, as RabbitMQ folds headers
//     into a map), leaving out names starting with "x-", timestamps (routed as
//     milliseconds, so T never matches itself) and NaN floats; and it fails
//     once the binding also asks for a header B lacks.
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>

#include "broker/headers_match.hpp"
#include "net/amqp/field_table.hpp"
#include "tests/fuzz/table_checks.hpp"

namespace amqp = sluice::amqp;
using sluice::fuzz::check_table;
using sluice::fuzz::has_nan;

namespace {

void check_accessors(const amqp::FieldTable& t) {
    for (size_t i = 0; i < t.entries.size(); ++i) {
        const auto& [name, value] = t.entries[i];
        const amqp::FieldValue* found = t.find(name);
        size_t first = 0;
        while (t.entries[first].first != name) ++first;
        CHECK(found == &t.entries[first].second);
        const char code = value.type_code();
        CHECK(value.as_int().has_value() == (std::string_view("bBsuIil").find(code) != std::string_view::npos));
        CHECK(value.as_string().has_value() == (code == 'S' || code == 'x'));
        CHECK(value.as_bool().has_value() == (code == 't'));
        CHECK((value.as_table() != nullptr) == (code == 'F'));
        CHECK((value.as_array() != nullptr) == (code == 'A'));
        if (const amqp::FieldTable* nested = value.as_table()) check_accessors(*nested);
    }
}

// A binding made of the headers themselves must match them.
void check_headers_match(const amqp::FieldTable& headers) {
    sluice::broker::validate_headers_binding(headers);
    sluice::broker::headers_match(headers, nullptr);
    sluice::broker::headers_match(headers, &headers);
    if (has_nan(headers)) return;

    amqp::FieldTable all, any;
    all.entries.emplace_back("x-match", amqp::FieldValue(std::string("all")));
    any.entries.emplace_back("x-match", amqp::FieldValue(std::string("any")));
    std::unordered_set<std::string_view> seen;
    for (auto it = headers.entries.rbegin(); it != headers.entries.rend(); ++it) {
        const auto& [name, value] = *it;
        if (!seen.insert(name).second) continue;  // an earlier occurrence: the last one counts
        if (name.substr(0, 2) == "x-" || value.type_code() == 'T') continue;
        all.entries.emplace_back(name, value);
        if (any.entries.size() == 1) any.entries.emplace_back(name, value);
    }
    CHECK(sluice::broker::validate_headers_binding(all).empty());
    CHECK(sluice::broker::headers_match(all, &headers));
    if (any.entries.size() > 1) CHECK(sluice::broker::headers_match(any, &headers));

    // Ask for one more header, one that B does not have: "all" fails now.
    std::string missing = "missing";
    while (headers.find(missing)) missing += '_';
    all.entries.emplace_back(missing, amqp::FieldValue(amqp::Void{}));
    CHECK(!sluice::broker::headers_match(all, &headers));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    amqp::FieldTable a;
    if (!check_table(input, a)) {
        std::string_view in = input;
        amqp::FieldValue v;
        if (amqp::decode_value(in, v) == amqp::TableError::none) {
            CHECK(in.size() < input.size());
            std::string enc;
            amqp::encode_value(enc, v);
            CHECK(enc.size() == input.size() - in.size());
            std::string_view view = enc;
            amqp::FieldValue again;
            CHECK(amqp::decode_value(view, again) == amqp::TableError::none && view.empty());
            if (!has_nan(v)) CHECK(v == again);
            std::string second;
            amqp::encode_value(second, again);
            CHECK(enc == second);
        }
        return 0;
    }
    check_accessors(a);

    // What follows A: the message headers to match A against, if any.
    std::string_view rest = input;
    amqp::FieldTable skipped;
    amqp::decode_table(rest, skipped);
    amqp::FieldTable b;
    const bool have_b = !rest.empty() && check_table(rest, b);
    sluice::broker::validate_headers_binding(a);
    sluice::broker::headers_match(a, have_b ? &b : nullptr);
    if (have_b) {
        check_accessors(b);
        check_headers_match(b);
    } else {
        check_headers_match(a);
    }
    return 0;
}
