#include "cli/ctl/command_table.hpp"

#include <algorithm>
#include <ostream>
#include <stdexcept>

namespace sluice::ctl {

namespace {

const Option kHelp{"help", OptionKind::flag, "", "show this help (also -h)"};

std::string_view group_of(const Command& c) {
    size_t space = c.name.find(' ');
    return space == std::string_view::npos ? std::string_view() : c.name.substr(0, space);
}

std::string see_help(std::string_view name) { return " (see 'sluicectl " + std::string(name) + " --help')"; }

std::vector<const Command*> group_members(std::string_view group) {
    std::vector<const Command*> out;
    for (const Command& c : all_commands())
        if (group_of(c) == group) out.push_back(&c);
    return out;
}

std::string member_list(std::string_view group) {
    std::string out;
    for (const Command* c : group_members(group)) {
        if (!out.empty()) out += ", ";
        out += c->name.substr(group.size() + 1);
    }
    return out;
}

const Command* find_by_name(std::string_view name) {
    for (const Command& c : all_commands())
        if (c.name == name) return &c;
    return nullptr;
}

std::string synopsis(const Command& c) {
    std::string s = "sluicectl " + std::string(c.name);
    if (!c.operands.empty()) s += " " + std::string(c.operands);
    if (!c.options.empty()) s += " [options]";
    return s;
}

void print_options(std::ostream& out, std::string_view title, const std::vector<Option>& options) {
    if (options.empty()) return;
    out << '\n' << title << ":\n";
    size_t width = 0;
    auto label = [](const Option& o) {
        std::string l = "--" + std::string(o.name);
        if (!o.metavar.empty()) l += " " + std::string(o.metavar);
        return l;
    };
    for (const Option& o : options) width = std::max(width, label(o).size());
    for (const Option& o : options) {
        std::string l = label(o);
        out << "  " << l << std::string(width - l.size() + 2, ' ');
        // A help text's own line breaks continue under its first line.
        for (char ch : o.help) {
            out << ch;
            if (ch == '\n') out << std::string(width + 4, ' ');
        }
        out << '\n';
    }
}

std::vector<Option> connection_options() {
    std::vector<Option> v(std::begin(kSettingsOptions), std::end(kSettingsOptions));
    v.push_back(kHelp);
    return v;
}

void print_command_help(std::ostream& out, const Command& c) {
    out << "Usage: " << synopsis(c) << "\n\n" << c.summary << '\n';
    if (!c.details.empty()) out << '\n' << c.details << '\n';
    print_options(out, "Options", c.options);
    print_options(out, "Connection options", connection_options());
}

void print_overview(std::ostream& out) {
    out << "Usage: sluicectl [--url URL] [--user USER] [--password PASSWORD] [--vhost VHOST] COMMAND [options]\n\n"
           "sluicectl manages a running sluiced through its management HTTP API.\n\nCommands:\n";
    size_t width = 0;
    for (const Command& c : all_commands()) width = std::max(width, synopsis(c).size() - 10);
    for (const Command& c : all_commands()) {
        std::string s = synopsis(c).substr(10);  // without "sluicectl "
        out << "  " << s << std::string(width - s.size() + 2, ' ') << c.summary << '\n';
    }
    print_options(out, "Connection options (every command)", connection_options());
    out << "\nEach setting comes from its option, else the environment (SLUICECTL_URL, SLUICECTL_USER,\n"
           "SLUICECTL_PASSWORD, SLUICECTL_VHOST), else the config file (--config FILE, or\n"
           "~/.config/sluice/sluicectl.conf: 'key = value' lines with keys url, user, password, vhost,\n"
           "timeout), else the default.\n"
           "\nExit status: 0 done; 1 the server refused or could not be reached; 2 a usage error.\n"
           "'sluicectl COMMAND --help' shows a command's options.\n";
}

}  // namespace

const std::vector<Command>& all_commands() {
    static const std::vector<Command> commands = [] {
        std::vector<Command> all;
        for (auto family : {list_commands, object_commands, message_commands, admin_commands})
            for (Command& c : family()) all.push_back(std::move(c));
        // status and overview first: the help starts with the commands one runs first.
        std::stable_partition(all.begin(), all.end(),
                              [](const Command& c) { return c.name == "status" || c.name == "overview"; });
        return all;
    }();
    return commands;
}

const std::vector<Option>& all_options() {
    static const std::vector<Option> options = [] {
        std::vector<Option> all = connection_options();
        for (const Command& c : all_commands())
            for (const Option& o : c.options) {
                auto same = std::find_if(all.begin(), all.end(), [&](const Option& x) { return x.name == o.name; });
                if (same == all.end()) all.push_back(o);
                else if (same->kind != o.kind)
                    throw std::logic_error("option --" + std::string(o.name) + " has two kinds");
            }
        return all;
    }();
    return options;
}

FoundCommand find_command(const Arguments& args) {
    const auto& words = args.words;
    if (words.empty()) throw UsageError("no command given ('sluicectl --help' lists them)");
    const Command* found = nullptr;
    size_t used = 1;
    if (const Command* c = find_by_name(words[0]); c && group_of(*c).empty()) {
        found = c;
    } else if (!group_members(words[0]).empty()) {
        if (words.size() < 2)
            throw UsageError("'" + words[0] + "' what? One of: " + member_list(words[0]) + see_help(words[0]));
        found = find_by_name(words[0] + " " + words[1]);
        if (!found)
            throw UsageError("no command '" + words[0] + " " + words[1] + "'; '" + words[0] +
                             "' takes one of: " + member_list(words[0]));
        used = 2;
    } else {
        throw UsageError("unknown command '" + words[0] + "' ('sluicectl --help' lists them)");
    }
    const Command& c = *found;
    for (const auto& option : args.options) {
        const auto& name = option.first;  // a lambda may not capture a structured binding before C++20 in clang 14
        bool known = name == "help" ||
                     std::any_of(std::begin(kSettingsOptions), std::end(kSettingsOptions),
                                 [&](const Option& o) { return o.name == name; }) ||
                     std::any_of(c.options.begin(), c.options.end(), [&](const Option& o) { return o.name == name; });
        if (!known) throw UsageError("'" + std::string(c.name) + "' has no option --" + name + see_help(c.name));
    }
    std::vector<std::string> operands(words.begin() + long(used), words.end());
    if (operands.size() < c.min_operands || operands.size() > c.max_operands) {
        std::string takes = c.operands.empty() ? "no operands" : std::string(c.operands);
        std::string got = operands.size() > c.max_operands ? ", not '" + operands[c.max_operands] + "'" : "";
        throw UsageError("'" + std::string(c.name) + "' takes " + takes + got + see_help(c.name));
    }
    return {found, std::move(operands)};
}

void print_help(std::ostream& out, const std::vector<std::string>& words) {
    if (words.empty()) return print_overview(out);
    if (const Command* c = find_by_name(words[0]); c && group_of(*c).empty()) return print_command_help(out, *c);
    auto members = group_members(words[0]);
    if (members.empty()) throw UsageError("unknown command '" + words[0] + "' ('sluicectl --help' lists them)");
    if (words.size() >= 2)
        if (const Command* c = find_by_name(words[0] + " " + words[1])) return print_command_help(out, *c);
    out << "Usage: sluicectl " << words[0] << " (" << member_list(words[0]) << ") ...\n\nCommands:\n";
    size_t width = 0;
    for (const Command* c : members) width = std::max(width, synopsis(*c).size() - 10);
    for (const Command* c : members) {
        std::string s = synopsis(*c).substr(10);
        out << "  " << s << std::string(width - s.size() + 2, ' ') << c->summary << '\n';
    }
    out << "\n'sluicectl " << words[0] << " WHAT --help' shows a command's options.\n";
}

}  // namespace sluice::ctl
