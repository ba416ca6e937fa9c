// Runs one sluice-perf scenario: declares the topology, spreads the
// connections over the event-loop threads (one io_context each), starts the
// measured phase, prints progress every second, stops, cleans up and prints
// the summary. Backlog mode runs two phases: fill (producers only, with
// confirms) and drain (consumers only).
//
// Thread-safety: a Runner is driven by the main thread; the worker threads
// only run their io_contexts.
#pragma once

#include "cli/perf/options.hpp"

namespace sluice::perf {

// Returns the process exit code (0 ok, 1 the run failed).
int run_perf(const PerfOptions& o);

}  // namespace sluice::perf
