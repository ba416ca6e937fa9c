#include "cli/ctl/settings.hpp"

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <map>

namespace sluice::ctl {

const Option kSettingsOptions[6] = {
    {"url", OptionKind::value, "URL", "the management API (default http://localhost:15672; env SLUICECTL_URL)"},
    {"user", OptionKind::value, "USER", "user name (default guest; env SLUICECTL_USER)"},
    {"password", OptionKind::value, "PASSWORD", "password (default guest; env SLUICECTL_PASSWORD)"},
    {"vhost", OptionKind::value, "VHOST", "virtual host (default /; env SLUICECTL_VHOST)"},
    {"timeout", OptionKind::value, "SECONDS", "give up on an answer after this long (default 30)"},
    {"config", OptionKind::value, "FILE",
     "read settings from FILE (default ~/.config/sluice/sluicectl.conf if it exists)"},
};

namespace {

constexpr const char* kKeys[] = {"url", "user", "password", "vhost", "timeout"};

std::string trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return std::string(s);
}

std::optional<std::string> default_config_path(const Environment& env) {
    if (auto xdg = env("XDG_CONFIG_HOME"); xdg && !xdg->empty()) return *xdg + "/sluice/sluicectl.conf";
    if (auto home = env("HOME"); home && !home->empty()) return *home + "/.config/sluice/sluicectl.conf";
    return std::nullopt;
}

// key → value from the file; an explicitly named file must exist.
std::map<std::string, std::string> read_config(const std::string& path, bool must_exist) {
    std::map<std::string, std::string> out;
    std::ifstream in(path);
    if (!in) {
        if (must_exist) throw UsageError("cannot read config file '" + path + "'");
        return out;
    }
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
        std::string text = trim(line);
        if (text.empty() || text[0] == '#') continue;
        size_t eq = text.find('=');
        std::string where = path + ":" + std::to_string(number) + ": ";
        if (eq == std::string::npos) throw UsageError(where + "expected 'key = value'");
        std::string key = trim(std::string_view(text).substr(0, eq));
        bool known = false;
        for (const char* k : kKeys) known = known || key == k;
        if (!known) throw UsageError(where + "unknown key '" + key + "' (url, user, password, vhost, timeout)");
        out[key] = trim(std::string_view(text).substr(eq + 1));
    }
    return out;
}

int parse_timeout(const std::string& text) {
    int v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v < 1)
        throw UsageError("timeout must be a whole number of seconds, at least 1, not '" + text + "'");
    return v;
}

}  // namespace

std::optional<std::string> process_environment(const char* name) {
    const char* v = std::getenv(name);
    return v ? std::optional<std::string>(v) : std::nullopt;
}

Settings resolve_settings(const Arguments& args, const Environment& env) {
    std::map<std::string, std::string> file;
    if (auto path = args.value("config")) file = read_config(*path, true);
    else if (auto path = default_config_path(env)) file = read_config(*path, false);

    Settings s;
    // Option, then environment, then file; the default stays otherwise.
    auto pick = [&](const char* key, const char* env_name, std::string& out) {
        if (auto v = args.value(key)) out = *v;
        else if (auto e = env_name ? env(env_name) : std::nullopt) out = *e;
        else if (auto it = file.find(key); it != file.end()) out = it->second;
        else return false;
        return true;
    };
    pick("url", "SLUICECTL_URL", s.url);
    pick("user", "SLUICECTL_USER", s.user);
    pick("password", "SLUICECTL_PASSWORD", s.password);
    s.vhost_given = pick("vhost", "SLUICECTL_VHOST", s.vhost);
    std::string timeout;
    if (pick("timeout", nullptr, timeout)) s.timeout_seconds = parse_timeout(timeout);
    if (s.vhost.empty()) throw UsageError("the vhost name is empty");
    return s;
}

}  // namespace sluice::ctl
