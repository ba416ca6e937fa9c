// Where sluicectl connects and as whom: the API's URL, the user and
// password, the vhost and the timeout. Each comes from, in order of
// precedence: the command-line option (--url, --user, --password, --vhost,
// --timeout), the environment (SLUICECTL_URL, SLUICECTL_USER,
// SLUICECTL_PASSWORD, SLUICECTL_VHOST), the config file, and the default
// (http://localhost:15672, guest, guest, "/", 30 s).
//
// The config file is --config FILE if given (it must exist), else
// $XDG_CONFIG_HOME/sluice/sluicectl.conf or ~/.config/sluice/sluicectl.conf
// if it exists: `key = value` lines (url, user, password, vhost, timeout),
// blank lines and `#` comments.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "cli/ctl/arguments.hpp"

namespace sluice::ctl {

struct Settings {
    std::string url = "http://localhost:15672";
    std::string user = "guest";
    std::string password = "guest";
    std::string vhost = "/";
    bool vhost_given = false;  // set by an option, the environment or the file
    int timeout_seconds = 30;
};

// The options above, for every command.
extern const Option kSettingsOptions[6];

using Environment = std::function<std::optional<std::string>(const char*)>;

// The process environment (std::getenv).
std::optional<std::string> process_environment(const char* name);

// Throws UsageError for an unreadable --config file, a bad line or value.
Settings resolve_settings(const Arguments& args, const Environment& env);

}  // namespace sluice::ctl
