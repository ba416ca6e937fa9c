// sluicectl's command line: words (the command and its operands) and long
// options, which may come anywhere (`sluicectl list queues --json` and
// `sluicectl --json list queues` are the same).
//
// Every option name has one kind across all commands, so the whole command
// line is parsed before the command is known; the command then checks that
// each option given is one of its own (Command::check in command.hpp).
//
//   --name VALUE, --name=VALUE     a value option (`repeated`: may be given again)
//   --name, --name=BOOL, --no-name a flag (BOOL: true/false, yes/no, 1/0, on/off)
//   -h                             --help
//   --                             everything after it is a word
//
// Errors are UsageError (sluicectl exits 2).
#pragma once

#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::ctl {

// A mistake in the command line or the settings: exit code 2.
class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

enum class OptionKind { flag, value, repeated };

struct Option {
    std::string_view name;     // without the leading "--"
    OptionKind kind;
    std::string_view metavar;  // "NAME" in "--queue NAME"; empty for flags
    std::string_view help;
};

class Arguments {
public:
    std::vector<std::string> words;
    // In command-line order; a flag's value is "true" or "false".
    std::vector<std::pair<std::string, std::string>> options;

    bool has(std::string_view name) const;
    // The last value given, if any.
    std::optional<std::string> value(std::string_view name) const;
    std::vector<std::string> values(std::string_view name) const;
    // A flag's value, `fallback` when it was not given.
    bool flag(std::string_view name, bool fallback = false) const;
};

// Parses argv[1..]; `known` names every option of every command.
Arguments parse_arguments(std::span<char* const> args, std::span<const Option> known);

// "true"/"yes"/"1"/"on" and their opposites; UsageError naming `what` otherwise.
bool parse_bool(std::string_view what, std::string_view text);

}  // namespace sluice::ctl
