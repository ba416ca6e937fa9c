#include "cli/ctl/table.hpp"

#include <boost/json/serialize.hpp>
#include <cmath>
#include <cstdio>

#include "cli/ctl/arguments.hpp"

namespace sluice::ctl {

namespace json = boost::json;

namespace {

// Characters, not bytes: UTF-8 continuation bytes do not count.
size_t display_width(std::string_view s) {
    size_t n = 0;
    for (unsigned char c : s)
        if ((c & 0xC0) != 0x80) ++n;
    return n;
}

std::string escaped(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (unsigned char c : s) {
        if (c == '\n') out += "\\n";
        else if (c == '\t') out += "\\t";
        else if (c == '\r') out += "\\r";
        else if (c < 0x20 || c == 0x7F) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02X", c);
            out += buf;
        } else {
            out.push_back(char(c));
        }
    }
    return out;
}

std::string number_text(double d) {
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 1e15) return std::to_string(int64_t(d));
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", d);
    return buf;
}

void pad(std::ostream& out, size_t width) {
    for (size_t i = 0; i < width; ++i) out.put(' ');
}

}  // namespace

const json::value* field_at(const json::object& o, std::string_view dotted) {
    const json::object* cur = &o;
    while (true) {
        size_t dot = dotted.find('.');
        auto it = cur->find(dotted.substr(0, dot));
        if (it == cur->end()) return nullptr;
        if (dot == std::string_view::npos) return &it->value();
        if (!it->value().is_object()) return nullptr;
        cur = &it->value().get_object();
        dotted.remove_prefix(dot + 1);
    }
}

std::string cell_text(const json::value* v) {
    if (!v || v->is_null()) return "";
    switch (v->kind()) {
        case json::kind::string: return escaped(v->get_string());
        case json::kind::bool_: return v->get_bool() ? "true" : "false";
        case json::kind::int64: return std::to_string(v->get_int64());
        case json::kind::uint64: return std::to_string(v->get_uint64());
        case json::kind::double_: return number_text(v->get_double());
        case json::kind::array: {
            std::string out;
            for (const json::value& item : v->get_array()) {
                if (!out.empty()) out += ',';
                out += item.is_structured() ? escaped(json::serialize(item)) : cell_text(&item);
            }
            return out;
        }
        default: return escaped(json::serialize(*v));
    }
}

std::vector<std::string> split_columns(std::string_view spec) {
    std::vector<std::string> out;
    while (true) {
        size_t comma = spec.find(',');
        std::string_view name = spec.substr(0, comma);
        while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
        while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
        if (name.empty()) throw UsageError("--columns takes names separated by commas, like name,messages");
        out.emplace_back(name);
        if (comma == std::string_view::npos) return out;
        spec.remove_prefix(comma + 1);
    }
}

void write_table(std::ostream& out, const std::vector<std::string>& columns, const json::array& rows, bool header) {
    std::vector<std::vector<std::string>> cells;
    cells.reserve(rows.size() + 1);
    if (header) cells.emplace_back(columns.begin(), columns.end());
    for (const json::value& row : rows) {
        std::vector<std::string> line;
        line.reserve(columns.size());
        for (const std::string& c : columns)
            line.push_back(row.is_object() ? cell_text(field_at(row.get_object(), c)) : "");
        cells.push_back(std::move(line));
    }
    std::vector<size_t> widths(columns.size(), 0);
    for (const auto& line : cells)
        for (size_t i = 0; i < line.size(); ++i) widths[i] = std::max(widths[i], display_width(line[i]));
    for (const auto& line : cells) {
        // Trailing padding is left out: the last cell ends the line.
        size_t last = line.size();
        while (last > 0 && line[last - 1].empty()) --last;
        for (size_t i = 0; i < last; ++i) {
            out << line[i];
            if (i + 1 < last) pad(out, widths[i] - display_width(line[i]) + 2);
        }
        out << '\n';
    }
}

void write_pairs(std::ostream& out, const std::vector<std::pair<std::string, std::string>>& pairs) {
    size_t width = 0;
    for (const auto& [k, v] : pairs) width = std::max(width, display_width(k));
    for (const auto& [k, v] : pairs) {
        out << k;
        pad(out, width - display_width(k) + 2);
        out << v << '\n';
    }
}

}  // namespace sluice::ctl
