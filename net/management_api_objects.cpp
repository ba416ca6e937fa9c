// Broker objects as RabbitMQ's management API shows them: queues, exchanges,
// bindings, connections, channels and consumers, with its field names.
#include <cmath>

#include "broker/broker.hpp"
#include "broker/delayed_messages.hpp"
#include "broker/queue.hpp"
#include "broker/vhost.hpp"
#include "net/management_api_internal.hpp"

namespace sluice::net::mgmt {

// --- broker objects -------------------------------------------------------------------

namespace {

// "127.0.0.1:5432" / "[::1]:5432" → host, port.
void split_peer(const std::string& peer, std::string& host, int& port) {
    size_t colon = peer.rfind(':');
    host = peer.substr(0, colon);
    port = 0;
    if (colon != std::string::npos)
        for (char c : peer.substr(colon + 1))
            if (c >= '0' && c <= '9') port = port * 10 + (c - '0');
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
}

}  // namespace

json::object queue_json(State& s, const broker::Queue& q) {
    json::object o;
    o["name"] = utf8(q.name());
    o["vhost"] = utf8(q.vhost().name());
    o["type"] = broker::queue_type_name(q.features().type);
    o["durable"] = q.durable();
    o["auto_delete"] = q.auto_delete();
    o["exclusive"] = q.exclusive();
    o["arguments"] = table_json(q.arguments());
    const size_t ready = q.ready_count(), unacked = q.unacked_count();
    o["messages"] = ready + unacked;
    o["messages_ready"] = ready;
    o["messages_unacknowledged"] = unacked;
    o["messages_ram"] = ready - q.paged_count();
    o["messages_paged_out"] = q.paged_count();
    o["message_bytes_ram"] = q.memory_bytes();
    // Body bytes of the ready messages (a stream: the bytes it stores).
    o["message_bytes"] = q.ready_bytes();
    o["message_bytes_ready"] = q.ready_bytes();
    o["memory"] = sizeof(broker::Queue) + q.memory_bytes();
    o["consumers"] = q.consumer_count();
    o["state"] = "running";
    o["node"] = s.node;
    if (q.exclusive() && q.owner() != 0) {
        if (!s.connection_names) s.connection_names = broker::connection_names(s.broker);
        auto it = s.connection_names->find(q.owner());
        if (it != s.connection_names->end()) {
            json::object owner;
            std::string host;
            int port;
            split_peer(it->second, host, port);
            owner["name"] = utf8(it->second);
            owner["peer_host"] = host;
            owner["peer_port"] = port;
            o["owner_pid_details"] = std::move(owner);
        }
    }
    const RateSampler::QueueSample* r = s.rates.queue(q.id());
    const auto& c = q.counters;
    json::object stats;
    stats["publish"] = c.published;
    stats["publish_details"] = rate_json(r ? r->publish_rate : 0);
    stats["deliver_get"] = c.delivered;
    stats["deliver_get_details"] = rate_json(r ? r->deliver_rate : 0);
    stats["redeliver"] = c.redelivered;
    stats["redeliver_details"] = rate_json(r ? r->redeliver_rate : 0);
    stats["ack"] = c.acked;
    stats["ack_details"] = rate_json(r ? r->ack_rate : 0);
    o["message_stats"] = std::move(stats);
    o["messages_details"] = rate_json(r ? r->messages_rate : 0);
    o["capacity"] = capacity_json(q.capacity(broker::flow_clock_ms(), s.sample_interval.count()));
    return o;
}

json::object capacity_json(const broker::QueueCapacity& c) {
    // null before two samples (rates unknown), and for a drain time or wait
    // that is never at the present rates; "sampled" tells the two apart.
    auto number = [&](const std::optional<double>& v) -> json::value {
        if (!c.known || !v) return nullptr;
        return std::round(*v * 1000.0) / 1000.0;
    };
    json::object o;
    o["sampled"] = c.known;
    o["publish_rate"] = number(c.publish_rate);
    o["consume_rate"] = number(c.consume_rate);
    o["net_drain_rate"] = number(c.net_drain_rate);
    o["drain_seconds"] = number(c.drain_seconds);
    o["expected_wait_seconds"] = number(c.expected_wait_seconds);
    return o;
}

json::object exchange_json(const broker::VHost& v, const broker::Exchange& e) {
    json::object o;
    o["name"] = utf8(e.name());
    o["vhost"] = utf8(v.name());
    o["type"] = std::string(broker::exchange_type_name(e.type()));
    o["durable"] = e.durable();
    o["auto_delete"] = e.auto_delete();
    o["internal"] = e.internal();
    o["arguments"] = table_json(e.arguments());
    // As the delayed-message plugin reports it.
    if (const broker::DelayedMessages* d = e.delayed()) o["messages_delayed"] = d->count();
    return o;
}

namespace {
// RabbitMQ's quote_binding: mochiweb's quote_plus (every byte but A-Z a-z
// 0-9 . - ~ _ as %XX, upper-case; a space as '+'), then '~' as %7E, so the
// '~' that separates key and arguments hash is unambiguous. "a.#" → "a.%23".
std::string quote_binding(std::string_view s) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(s.size());
    for (unsigned char c : s) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
            c == '_') {
            out.push_back(char(c));
        } else if (c == ' ') {
            out.push_back('+');
        } else {
            out.push_back('%');
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        }
    }
    return out;
}
}  // namespace

std::string properties_key(std::string_view key, const amqp::FieldTable& args) {
    if (args.empty()) return key.empty() ? "~" : quote_binding(key);
    std::string encoded;
    amqp::encode_table(encoded, args);
    uint64_t h = 1469598103934665603ull;  // FNV-1a: stable across restarts
    for (unsigned char c : encoded) h = (h ^ c) * 1099511628211ull;
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out = quote_binding(key);
    out += '~';
    for (int i = 60; i >= 0; i -= 4) out.push_back(kHex[(h >> i) & 15]);
    return out;
}

json::object binding_json(const broker::VHost& v, const broker::Exchange& source, const broker::Binding& b) {
    json::object o;
    o["source"] = utf8(source.name());
    o["vhost"] = utf8(v.name());
    if (b.destination.queue) {
        o["destination"] = utf8(b.destination.queue->name());
        o["destination_type"] = "queue";
    } else {
        o["destination"] = utf8(b.destination.exchange->name());
        o["destination_type"] = "exchange";
    }
    o["routing_key"] = utf8(b.key);
    o["arguments"] = table_json(b.arguments);
    o["properties_key"] = utf8(properties_key(b.key, b.arguments));
    return o;
}

json::object default_binding_json(const broker::VHost& v, const broker::Queue& q) {
    json::object o;
    o["source"] = "";
    o["vhost"] = utf8(v.name());
    o["destination"] = utf8(q.name());
    o["destination_type"] = "queue";
    o["routing_key"] = utf8(q.name());
    o["arguments"] = json::object();
    o["properties_key"] = utf8(properties_key(q.name(), {}));
    return o;
}

json::object connection_json(State& s, const broker::ConnectionSummary& c) {
    json::object o;
    std::string host;
    int port;
    split_peer(c.name, host, port);
    o["name"] = utf8(c.name);
    o["node"] = s.node;
    o["vhost"] = utf8(c.vhost);
    o["user"] = utf8(c.user);
    o["state"] = c.state;
    o["channels"] = c.channels;
    o["peer_host"] = host;
    o["peer_port"] = port;
    o["protocol"] = "AMQP 0-9-1";
    o["type"] = "network";
    o["ssl"] = c.tls;
    if (c.tls) o["ssl_protocol"] = c.tls_protocol;
    o["frame_max"] = c.frame_max;
    o["channel_max"] = c.channel_max;
    o["timeout"] = c.heartbeat;
    o["client_properties"] = table_json(c.client_properties);
    if (const amqp::FieldValue* n = c.client_properties.find("connection_name"))
        if (auto str = n->as_string()) o["user_provided_name"] = utf8(*str);
    return o;
}

json::object channel_json(State& s, const broker::ChannelSummary& c) {
    json::object o;
    std::string host;
    int port;
    split_peer(c.connection, host, port);
    o["name"] = utf8(broker::channel_name(c.connection, c.number));
    o["number"] = c.number;
    o["node"] = s.node;
    o["vhost"] = utf8(c.vhost);
    o["user"] = utf8(c.user);
    json::object conn;
    conn["name"] = utf8(c.connection);
    conn["peer_host"] = host;
    conn["peer_port"] = port;
    o["connection_details"] = std::move(conn);
    o["consumer_count"] = c.consumers;
    o["messages_unacknowledged"] = c.unacked;
    o["prefetch_count"] = c.prefetch_count;
    o["global_prefetch_count"] = c.global_prefetch_count;
    o["confirm"] = c.confirm;
    o["transactional"] = c.transactional;
    o["state"] = c.closing ? "closing" : "running";
    return o;
}

json::object consumer_json(const broker::ConsumerSummary& c) {
    json::object o;
    o["consumer_tag"] = utf8(c.tag);
    if (c.on_channel) {
        std::string host;
        int port;
        split_peer(c.connection, host, port);
        json::object ch;
        ch["name"] = utf8(broker::channel_name(c.connection, c.channel));
        ch["number"] = c.channel;
        ch["connection_name"] = utf8(c.connection);
        ch["peer_host"] = host;
        ch["peer_port"] = port;
        ch["user"] = utf8(c.user);
        o["channel_details"] = std::move(ch);
    }
    if (c.on_queue) {
        json::object q;
        q["name"] = utf8(c.queue);
        q["vhost"] = utf8(c.queue_vhost);
        o["queue"] = std::move(q);
    }
    o["ack_required"] = c.ack_required;
    o["exclusive"] = c.exclusive;
    o["prefetch_count"] = c.prefetch;
    o["priority"] = c.priority;
    o["arguments"] = table_json(c.arguments);
    // On a single-active-consumer queue only the active one is "up"; the
    // others wait (RabbitMQ: active false, activity_status "waiting").
    const bool is_active = c.active;
    o["active"] = is_active;
    o["activity_status"] = is_active ? "up" : "waiting";
    return o;
}

}  // namespace sluice::net::mgmt
