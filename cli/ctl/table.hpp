// JSON objects as an aligned text table: one line per object, one column per
// field (a dotted name like "message_stats.publish" reaches into nested
// objects), a header line with the column names, columns separated by two
// spaces and padded to the widest cell (counted in characters, not bytes).
//
// A cell shows a string as it is (control characters escaped, so a row stays
// one line), a number, true/false, an array's items joined with ",", an
// object as compact JSON, and nothing for null or a missing field.
#pragma once

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::ctl {

// The field at a dotted path, or nullptr.
const boost::json::value* field_at(const boost::json::object& o, std::string_view dotted);

std::string cell_text(const boost::json::value* v);

// "a,b.c" → {"a", "b.c"}; UsageError for an empty name.
std::vector<std::string> split_columns(std::string_view spec);

// Rows that are not objects show as empty cells.
void write_table(std::ostream& out, const std::vector<std::string>& columns, const boost::json::array& rows,
                 bool header = true);

// "key   value" lines, keys padded to the widest.
void write_pairs(std::ostream& out, const std::vector<std::pair<std::string, std::string>>& pairs);

}  // namespace sluice::ctl
