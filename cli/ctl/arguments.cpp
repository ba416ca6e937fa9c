#include "cli/ctl/arguments.hpp"

#include <algorithm>

namespace sluice::ctl {

namespace {

const Option* find_option(std::span<const Option> known, std::string_view name) {
    auto it = std::find_if(known.begin(), known.end(), [&](const Option& o) { return o.name == name; });
    return it == known.end() ? nullptr : &*it;
}

}  // namespace

bool parse_bool(std::string_view what, std::string_view text) {
    if (text == "true" || text == "yes" || text == "1" || text == "on") return true;
    if (text == "false" || text == "no" || text == "0" || text == "off") return false;
    throw UsageError(std::string(what) + " takes true or false, not '" + std::string(text) + "'");
}

bool Arguments::has(std::string_view name) const {
    return std::any_of(options.begin(), options.end(), [&](const auto& kv) { return kv.first == name; });
}

std::optional<std::string> Arguments::value(std::string_view name) const {
    std::optional<std::string> last;
    for (const auto& [k, v] : options)
        if (k == name) last = v;
    return last;
}

std::vector<std::string> Arguments::values(std::string_view name) const {
    std::vector<std::string> out;
    for (const auto& [k, v] : options)
        if (k == name) out.push_back(v);
    return out;
}

bool Arguments::flag(std::string_view name, bool fallback) const {
    auto v = value(name);
    return v ? *v == "true" : fallback;
}

Arguments parse_arguments(std::span<char* const> args, std::span<const Option> known) {
    Arguments out;
    bool only_words = false;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string_view arg = args[i];
        if (only_words || arg.size() < 2 || arg[0] != '-') {
            out.words.emplace_back(arg);
            continue;
        }
        if (arg == "--") {
            only_words = true;
            continue;
        }
        if (arg == "-h") {
            out.options.emplace_back("help", "true");
            continue;
        }
        if (arg.substr(0, 2) != "--") throw UsageError("unknown option '" + std::string(arg) + "'");
        arg.remove_prefix(2);
        size_t eq = arg.find('=');
        std::string name(arg.substr(0, eq));
        std::optional<std::string> inline_value;
        if (eq != std::string_view::npos) inline_value = std::string(arg.substr(eq + 1));

        const Option* opt = find_option(known, name);
        if (!opt && name.substr(0, 3) == "no-") {
            const Option* positive = find_option(known, std::string_view(name).substr(3));
            if (positive && positive->kind == OptionKind::flag) {
                if (inline_value) throw UsageError("option '--" + name + "' takes no value");
                out.options.emplace_back(std::string(positive->name), "false");
                continue;
            }
        }
        if (!opt) throw UsageError("unknown option '--" + name + "'");
        if (opt->kind == OptionKind::flag) {
            bool on = inline_value ? parse_bool("option '--" + name + "'", *inline_value) : true;
            out.options.emplace_back(name, on ? "true" : "false");
            continue;
        }
        if (!inline_value) {
            if (i + 1 >= args.size()) throw UsageError("option '--" + name + "' needs a value");
            inline_value = std::string(args[++i]);
        }
        out.options.emplace_back(name, std::move(*inline_value));
    }
    return out;
}

}  // namespace sluice::ctl
