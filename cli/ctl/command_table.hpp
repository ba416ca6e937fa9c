// Every sluicectl command in one table: finding the one the command line
// names, checking its options and operands, and the help texts.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "cli/ctl/command.hpp"

namespace sluice::ctl {

const std::vector<Command>& all_commands();

// The settings options, --help, and every command's options (each name once).
const std::vector<Option>& all_options();

struct FoundCommand {
    const Command* command;
    std::vector<std::string> operands;  // the words after its name
};

// The command named by the first one or two words; UsageError if there is
// none, if an option given is not one of its own, or if its operands do not
// fit.
FoundCommand find_command(const Arguments& args);

// Help for what the words name: a command, a group ("list"), or (no words)
// every command. UsageError for words that name nothing.
void print_help(std::ostream& out, const std::vector<std::string>& words);

}  // namespace sluice::ctl
