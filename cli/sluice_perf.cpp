// sluice-perf: an AMQP 0-9-1 load generator and benchmark client, modelled on
// RabbitMQ's PerfTest. A plain client: it works against RabbitMQ exactly as
// against Sluice.
//
//   sluice-perf [--uri amqp://guest:guest@127.0.0.1:5672/] [--producers N] [--consumers N]
//               [--size BYTES] [--time S | --pmessages N] [--confirm WINDOW] [--persistent]
//               [--rpc | --rpc-direct | --backlog N] [--json] [--broker-pid PID] ...
//
// See `sluice-perf --help` and cli/perf/ for how it works.
#include <csignal>

#include "cli/perf/options.hpp"
#include "cli/perf/runner.hpp"

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    int code = 0;
    auto opts = sluice::perf::parse_options(argc, argv, code);
    if (!opts) return code;
    return sluice::perf::run_perf(*opts);
}
