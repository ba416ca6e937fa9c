// Prometheus text exposition of the broker's counters. A stand-in until the
// observability issue moves /metrics onto prometheus-cpp's registry.
#pragma once

#include <string>

namespace sluice::broker {
class Broker;
}

namespace sluice::net {
std::string metrics_text(broker::Broker& broker);
}
