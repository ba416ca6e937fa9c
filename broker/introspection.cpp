#include "broker/introspection.hpp"

#include "broker/broker.hpp"
#include "broker/channel.hpp"
#include "broker/queue.hpp"
#include "broker/session.hpp"
#include "broker/vhost.hpp"

namespace sluice::broker {

namespace {

ConnectionSummary summarize(const Session& s) {
    ConnectionSummary c;
    c.id = s.id();
    c.name = s.info().peer;
    c.vhost = s.vhost() ? s.vhost()->name() : std::string();
    c.user = s.user();
    c.state = s.closed() ? "closed" : s.flow_paused() ? "blocked" : s.user().empty() ? "starting" : "running";
    for (const auto& ch : s.channels())
        if (ch) ++c.channels;
    c.tls = s.info().tls;
    c.tls_protocol = s.info().tls_protocol;
    c.frame_max = s.frame_max();
    c.channel_max = s.channel_max();
    c.heartbeat = s.heartbeat();
    c.client_properties = s.client_properties();
    return c;
}

ChannelSummary summarize(const Session& s, const Channel& ch) {
    ChannelSummary c;
    c.connection = s.info().peer;
    c.number = ch.id();
    c.vhost = ch.vhost().name();
    c.user = s.user();
    c.consumers = ch.consumers().size();
    c.unacked = ch.unacked_count();
    c.prefetch_count = ch.prefetch_count();
    c.global_prefetch_count = ch.global_prefetch_count();
    c.confirm = ch.confirm_mode();
    c.transactional = ch.tx_mode();
    c.closing = ch.closing();
    return c;
}

ConsumerSummary summarize(const Channel& ch, const Consumer& k) {
    ConsumerSummary c;
    c.tag = k.tag;
    c.vhost = ch.vhost().name();
    if (k.channel) {
        const Session& s = k.channel->session();
        c.on_channel = true;
        c.connection = s.info().peer;
        c.channel = k.channel->id();
        c.user = s.user();
    }
    if (k.queue) {
        c.on_queue = true;
        c.queue = k.queue->name();
        c.queue_vhost = k.queue->vhost().name();
        const Consumer* active = k.queue->active_consumer();
        c.active = !active || active == &k;
    }
    c.ack_required = !k.no_ack;
    c.exclusive = k.exclusive;
    c.prefetch = k.prefetch;
    c.priority = k.priority;
    c.arguments = k.arguments;
    return c;
}

}  // namespace

std::string channel_name(std::string_view connection, uint16_t number) {
    return std::string(connection) + " (" + std::to_string(number) + ")";
}

std::vector<ConnectionSummary> list_connections(const Broker& broker) {
    std::vector<ConnectionSummary> out;
    out.reserve(broker.sessions().size());
    for (const Session* s : broker.sessions()) out.push_back(summarize(*s));
    return out;
}

bool find_connection(const Broker& broker, std::string_view name, ConnectionSummary& out) {
    for (const Session* s : broker.sessions())
        if (s->info().peer == name) {
            out = summarize(*s);
            return true;
        }
    return false;
}

std::unordered_map<uint64_t, std::string> connection_names(const Broker& broker) {
    std::unordered_map<uint64_t, std::string> names;
    for (const Session* s : broker.sessions()) names.emplace(s->id(), s->info().peer);
    return names;
}

std::vector<ChannelSummary> list_channels(const Broker& broker, std::string_view connection) {
    std::vector<ChannelSummary> out;
    for (const Session* s : broker.sessions()) {
        if (!connection.empty() && s->info().peer != connection) continue;
        for (const auto& ch : s->channels())
            if (ch) out.push_back(summarize(*s, *ch));
    }
    return out;
}

std::vector<ConsumerSummary> list_consumers(const Broker& broker) {
    std::vector<ConsumerSummary> out;
    for (const Session* s : broker.sessions())
        for (const auto& ch : s->channels())
            if (ch)
                for (const ConsumerPtr& k : ch->consumers()) out.push_back(summarize(*ch, *k));
    return out;
}

}  // namespace sluice::broker
