#include "net/metrics_text.hpp"

#include "broker/broker.hpp"

namespace sluice::net {

std::string metrics_text(broker::Broker& broker) {
    const auto& s = broker.stats();
    std::string out;
    auto counter = [&](const char* name, const char* help, uint64_t v) {
        out += "# HELP ";
        out += name;
        out += ' ';
        out += help;
        out += "\n# TYPE ";
        out += name;
        out += " counter\n";
        out += name;
        out += ' ';
        out += std::to_string(v);
        out += '\n';
    };
    counter("sluice_connections_opened_total", "AMQP connections opened.", s.connections_opened);
    counter("sluice_channels_opened_total", "AMQP channels opened.", s.channels_opened);
    counter("sluice_messages_published_total", "Messages published.", s.messages_published);
    counter("sluice_messages_routed_total", "Published messages routed to at least one queue.", s.messages_routed);
    counter("sluice_messages_unroutable_total", "Published messages routed to no queue.", s.messages_unroutable);
    counter("sluice_messages_delivered_total", "Messages delivered to consumers or by basic.get.",
            s.messages_delivered);
    counter("sluice_messages_redelivered_total", "Deliveries with the redelivered flag.", s.messages_redelivered);
    counter("sluice_messages_acked_total", "Deliveries acknowledged.", s.messages_acked);
    counter("sluice_messages_confirmed_total", "Publishes confirmed to publishers.", s.messages_confirmed);
    counter("sluice_messages_returned_total", "Messages returned to publishers (basic.return).",
            s.messages_returned);
    return out;
}

}  // namespace sluice::net
