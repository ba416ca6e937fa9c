#include "cli/ctl/command.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <ostream>

#include "cli/ctl/http_client.hpp"

namespace sluice::ctl {

const Option kJsonOption{"json", OptionKind::flag, "", "print the API's JSON answer instead of text"};
const Option kColumnsOption{"columns", OptionKind::value, "A,B.C",
                            "show these fields (a dotted name reaches into an object: message_stats.publish)"};

const Option kNoHeadersOption{"no-headers", OptionKind::flag, "", "leave out the line of column names"};

std::string api_path(std::initializer_list<std::string_view> segments) {
    std::string path = "/api";
    for (std::string_view s : segments) {
        path += '/';
        path += url_segment(s);
    }
    return path;
}

void print_json(std::ostream& out, const boost::json::value& v) { out << boost::json::serialize(v) << '\n'; }

boost::json::object json_object_option(const Arguments& args, std::string_view name) {
    auto text = args.value(name);
    if (!text) return {};
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(*text, ec);
    if (ec || !v.is_object())
        throw UsageError("--" + std::string(name) + " takes a JSON object, like '{\"x-max-length\": 1000}'");
    return std::move(v.get_object());
}

}  // namespace sluice::ctl
