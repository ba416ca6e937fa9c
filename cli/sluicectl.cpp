// sluicectl: the admin tool. It talks to a running sluiced through the
// management HTTP API (net/management_api*.cpp), as rabbitmqadmin does to
// RabbitMQ: `sluicectl [--url URL] [--user U] [--password P] COMMAND ...`.
//
// Exit status: 0 done; 1 the server refused (HTTP 4xx/5xx) or could not be
// reached; 2 a usage error. Errors are one line on stderr.
#include <chrono>
#include <iostream>
#include <optional>
#include <span>

#include "cli/ctl/api_client.hpp"
#include "cli/ctl/command_table.hpp"
#include "cli/ctl/http_client.hpp"
#include "cli/ctl/settings.hpp"

namespace ctl = sluice::ctl;

namespace {

int run(int argc, char** argv) {
    ctl::Arguments args = ctl::parse_arguments(std::span<char* const>(argv + 1, size_t(argc > 0 ? argc - 1 : 0)),
                                               ctl::all_options());
    std::vector<std::string> words = args.words;
    bool help = args.flag("help");
    if (!words.empty() && words[0] == "help") {
        help = true;
        words.erase(words.begin());
    }
    if (help) {
        ctl::print_help(std::cout, words);
        return 0;
    }
    ctl::FoundCommand found = ctl::find_command(args);
    ctl::Settings settings = ctl::resolve_settings(args, ctl::process_environment);
    std::optional<ctl::HttpClient> http;
    try {
        http.emplace(settings.url, settings.user, settings.password, std::chrono::seconds(settings.timeout_seconds));
    } catch (const ctl::TransportError& e) {
        throw ctl::UsageError(e.what());  // a URL it cannot use
    }
    ctl::ApiClient api(*http);
    ctl::Context context{*found.command, args, std::move(found.operands), settings, api, std::cout, std::cin};
    found.command->run(context);
    std::cout.flush();
    if (!std::cout) throw std::runtime_error("cannot write the output");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::ios::sync_with_stdio(false);
    try {
        return run(argc, argv);
    } catch (const ctl::UsageError& e) {
        std::cerr << "sluicectl: " << e.what() << std::endl;
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "sluicectl: " << e.what() << std::endl;
        return 1;
    }
}
