// A sluicectl command: its name ("list queues"), operands, options and help,
// and the function that runs it. Each family of commands lives in one file
// (commands_*.cpp) and hands its table to command_table.cpp, which finds the
// command named on the command line and prints help.
//
// A command prints what it did (or what it read) to Context::out and throws
// on failure: UsageError (exit 2), ApiError / TransportError (exit 1).
#pragma once

#include <initializer_list>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "cli/ctl/api_client.hpp"
#include "cli/ctl/arguments.hpp"
#include "cli/ctl/settings.hpp"

namespace sluice::ctl {

struct Command;

struct Context {
    const Command& command;
    const Arguments& args;
    std::vector<std::string> operands;  // the words after the command's name
    const Settings& settings;
    ApiClient& api;
    std::ostream& out;
    std::istream& in;
};

struct Command {
    std::string_view name;      // one or two words: "status", "list queues"
    std::string_view operands;  // for the synopsis: "NAME", "[FILE]"
    std::string_view summary;   // one line
    std::string_view details;   // more help, may be empty
    std::vector<Option> options;
    size_t min_operands = 0, max_operands = 0;
    void (*run)(Context&) = nullptr;
};

// Each family's commands.
std::vector<Command> list_commands();     // commands_list.cpp
std::vector<Command> object_commands();   // commands_objects.cpp: declare, delete, purge
std::vector<Command> message_commands();  // commands_messages.cpp: publish, get
std::vector<Command> admin_commands();    // commands_admin.cpp: status, nodes, close, export/import, users, vhosts

// --- shared by the command files ---------------------------------------------

// Options several commands take.
extern const Option kJsonOption;     // --json
extern const Option kColumnsOption;  // --columns A,B.C
extern const Option kNoHeadersOption;  // --no-headers

// "/api/queues/%2F/name": segments percent-encoded.
std::string api_path(std::initializer_list<std::string_view> segments);

// Prints a JSON value on one line.
void print_json(std::ostream& out, const boost::json::value& v);

// --arguments '{"x-max-length": 10}' → the object (UsageError otherwise).
boost::json::object json_object_option(const Arguments& args, std::string_view name);

}  // namespace sluice::ctl
