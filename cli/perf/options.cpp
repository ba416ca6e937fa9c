#include "cli/perf/options.hpp"

#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "cli/perf/message_stamp.hpp"

namespace po = boost::program_options;

namespace sluice::perf {

std::vector<std::string> PerfOptions::queue_names() const {
    std::vector<std::string> names;
    for (int i = 1; i <= queues; ++i) {
        char buf[512];
        std::snprintf(buf, sizeof buf, queue_pattern.c_str(), i);
        names.emplace_back(buf);
    }
    return names;
}

int PerfOptions::deliveries_per_message() const {
    if (rpc) return 1;
    if (stream) return consumers;  // every reader reads every message
    if (exchange_type == ExchangeType::fanout) return queues;
    // every queue is bound with the one routing key, so each message reaches all
    if (routing_key && !exchange.empty()) return queues;
    return 1;
}

const char* PerfOptions::exchange_type_name() const {
    switch (exchange_type) {
    case ExchangeType::direct: return "direct";
    case ExchangeType::fanout: return "fanout";
    case ExchangeType::topic: return "topic";
    }
    return "direct";
}

namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool percent_decode(const std::string& in, std::string& out) {
    out.clear();
    for (size_t i = 0; i < in.size(); ++i) {
        if (in[i] != '%') {
            out.push_back(in[i]);
            continue;
        }
        if (i + 2 >= in.size()) return false;
        int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
        if (hi < 0 || lo < 0) return false;
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
    }
    return true;
}

// A pattern is used with snprintf: exactly one %d and no other conversion.
bool valid_queue_pattern(const std::string& p) {
    int conversions = 0;
    for (size_t i = 0; i < p.size(); ++i) {
        if (p[i] != '%') continue;
        if (i + 1 < p.size() && p[i + 1] == '%') { ++i; continue; }
        if (i + 1 < p.size() && p[i + 1] == 'd') { ++conversions; ++i; continue; }
        return false;
    }
    return conversions <= 1;
}

}  // namespace

bool parse_amqp_uri(const std::string& uri, BrokerAddress& out, std::string& error) {
    const std::string scheme = "amqp://";
    if (uri.compare(0, scheme.size(), scheme) != 0) {
        error = "only amqp:// URIs are supported";
        return false;
    }
    std::string rest = uri.substr(scheme.size());
    std::string path;
    if (auto slash = rest.find('/'); slash != std::string::npos) {
        path = rest.substr(slash + 1);
        rest.resize(slash);
    }
    if (auto at = rest.rfind('@'); at != std::string::npos) {
        std::string userinfo = rest.substr(0, at);
        rest = rest.substr(at + 1);
        std::string user = userinfo, pass;
        if (auto colon = userinfo.find(':'); colon != std::string::npos) {
            user = userinfo.substr(0, colon);
            pass = userinfo.substr(colon + 1);
        }
        if (!percent_decode(user, out.user) || !percent_decode(pass, out.password)) {
            error = "bad percent-encoding in user info";
            return false;
        }
    }
    std::string host = rest;
    if (!rest.empty() && rest[0] == '[') {  // [v6]:port
        auto close = rest.find(']');
        if (close == std::string::npos) { error = "unterminated IPv6 address"; return false; }
        host = rest.substr(1, close - 1);
        rest = rest.substr(close + 1);
        if (!rest.empty() && rest[0] != ':') { error = "junk after IPv6 address"; return false; }
        if (!rest.empty()) rest = rest.substr(1); else rest.clear();
        if (!rest.empty()) {
            try { out.port = static_cast<uint16_t>(std::stoul(rest)); } catch (...) { error = "bad port"; return false; }
        }
    } else if (auto colon = rest.rfind(':'); colon != std::string::npos) {
        host = rest.substr(0, colon);
        try {
            unsigned long p = std::stoul(rest.substr(colon + 1));
            if (p == 0 || p > 65535) throw std::out_of_range("port");
            out.port = static_cast<uint16_t>(p);
        } catch (...) {
            error = "bad port in URI";
            return false;
        }
    }
    if (!host.empty()) out.host = host;
    std::string vhost;
    if (!percent_decode(path, vhost)) {
        error = "bad percent-encoding in virtual host";
        return false;
    }
    out.vhost = vhost.empty() ? "/" : vhost;
    return true;
}

std::optional<PerfOptions> parse_options(int argc, char** argv, int& exit_code) {
    PerfOptions o;
    std::string uri, exchange_type = "direct", host;
    int port = 0;
    int fanout_queues = 0;
    po::options_description desc(
        "sluice-perf: an AMQP 0-9-1 load generator (works against any RabbitMQ-compatible broker)\n\n"
        "Options");
    desc.add_options()
        ("help,h", "show this help")
        ("uri", po::value(&uri), "broker URI, amqp://user:pass@host:port/vhost (default amqp://guest:guest@127.0.0.1:5672/)")
        ("host", po::value(&host), "broker host (overrides the URI's)")
        ("port", po::value(&port), "broker port (overrides the URI's)")
        ("producers,x", po::value(&o.producers)->default_value(1), "producer connections (RPC: clients)")
        ("consumers,y", po::value(&o.consumers)->default_value(1), "consumer connections (RPC: servers)")
        ("queues", po::value(&o.queues)->default_value(1), "number of queues")
        ("queue-pattern", po::value(&o.queue_pattern)->default_value(o.queue_pattern), "queue name pattern, %d = 1..queues")
        ("size,s", po::value(&o.size)->default_value(16), "message body size, bytes (at least 16: timestamp, producer id, sequence)")
        ("time,z", po::value(&o.time_s), "run for this many seconds (default 10 unless --pmessages or --backlog)")
        ("pmessages,C", po::value(&o.pmessages), "messages (RPC: calls) per producer, then stop")
        ("rate,r", po::value(&o.rate)->default_value(0), "publish rate limit per producer, msg/s (0 = unlimited)")
        ("consumer-rate,R", po::value(&o.consumer_rate)->default_value(0),
         "consume rate limit per consumer, msg/s (0 = unlimited): it reads no faster, so a faster producer's "
         "queue grows")
        ("confirm,c", po::value(&o.confirm)->default_value(0), "publisher confirms with at most this many outstanding (0 = off)")
        ("persistent", po::bool_switch(&o.persistent), "durable queues and exchange, delivery_mode 2")
        ("prefetch,q", po::value(&o.prefetch)->default_value(0), "consumer prefetch (basic.qos), 0 = unlimited")
        ("autoack,a", po::bool_switch(&o.autoack), "consume with no_ack")
        ("multi-ack-every,A", po::value(&o.multi_ack_every)->default_value(0), "ack with multiple=true every N deliveries (0 = ack each)")
        ("exchange,e", po::value(&o.exchange)->default_value(o.exchange), "exchange name (\"\" = the default exchange)")
        ("exchange-type,t", po::value(&exchange_type)->default_value("direct"), "direct, fanout or topic")
        ("routing-key,k", po::value<std::string>(), "routing key (and binding key of every queue); default: the queue's name")
        ("fanout-queues", po::value(&fanout_queues), "bind N queues to one fanout exchange (sets --exchange-type fanout --queues N)")
        ("rpc", po::bool_switch(&o.rpc), "request/reply: producers are clients waiting for each reply, consumers are servers")
        ("rpc-direct", po::bool_switch(&o.rpc_direct), "RPC with direct reply-to (amq.rabbitmq.reply-to); implies --rpc")
        ("rpc-queue-per-call", po::bool_switch(&o.rpc_queue_per_call),
         "RPC where every call declares its own exclusive, auto-delete reply queue and cancels its consumer "
         "(which deletes the queue) once the reply is in; implies --rpc")
        ("dedup-keys", po::value(&o.dedup_keys)->default_value(0),
         "each message carries the header x-deduplication-header, a 16-hex-digit key: producer id and sequence "
         "mod N (N distinct keys per producer; 0 = no header)")
        ("dedup-cache", po::value(&o.dedup_cache)->default_value(0),
         "declare the exchange with x-message-deduplication and x-cache-size N (0 = no deduplication)")
        ("backlog", po::value(&o.backlog)->default_value(0), "fill this many messages (with confirms, no consumer), then drain them")
        ("stream", po::bool_switch(&o.stream),
         "the queues are streams (x-queue-type stream, durable): every consumer reads every message of every "
         "queue from --stream-offset (needs --prefetch; with --backlog: a replay)")
        ("stream-offset", po::value(&o.stream_offset)->default_value(o.stream_offset),
         "x-stream-offset of stream consumers: first, last, next or an offset")
        ("consumer-delay", po::value(&o.consumer_delay_s)->default_value(0),
         "consumers start this many seconds after the producers: a head start that makes the queues deep "
         "(consume rate counts from their start)")
        ("threads", po::value(&o.threads)->default_value(1), "event-loop threads (one io_context each)")
        ("broker-pid", po::value(&o.broker_pid)->default_value(0), "broker process id: report its CPU per message and memory")
        ("no-cleanup", "keep the queues and exchange at the end")
        ("json", po::bool_switch(&o.json), "print the final summary as one JSON line")
        ("quiet", po::bool_switch(&o.quiet), "no progress lines or human-readable summary");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, desc), vm);
        po::notify(vm);
    } catch (const std::exception& e) {
        std::cerr << "sluice-perf: " << e.what() << "\n(try --help)\n";
        exit_code = 2;
        return std::nullopt;
    }
    if (vm.count("help")) {
        std::cout << desc << "\n";
        exit_code = 0;
        return std::nullopt;
    }
    auto fail = [&](const std::string& msg) -> std::optional<PerfOptions> {
        std::cerr << "sluice-perf: " << msg << "\n";
        exit_code = 2;
        return std::nullopt;
    };
    if (!uri.empty()) {
        std::string err;
        if (!parse_amqp_uri(uri, o.broker, err)) return fail("--uri: " + err);
    }
    if (!host.empty()) o.broker.host = host;
    if (port != 0) {
        if (port < 1 || port > 65535) return fail("--port out of range");
        o.broker.port = static_cast<uint16_t>(port);
    }
    if (vm.count("routing-key")) o.routing_key = vm["routing-key"].as<std::string>();
    if (vm.count("no-cleanup")) o.cleanup = false;
    if (exchange_type == "direct") o.exchange_type = ExchangeType::direct;
    else if (exchange_type == "fanout") o.exchange_type = ExchangeType::fanout;
    else if (exchange_type == "topic") o.exchange_type = ExchangeType::topic;
    else return fail("--exchange-type must be direct, fanout or topic");
    if (fanout_queues > 0) {
        o.exchange_type = ExchangeType::fanout;
        o.queues = fanout_queues;
    }
    if (o.rpc_direct || o.rpc_queue_per_call) o.rpc = true;
    if (o.rpc_direct && o.rpc_queue_per_call) return fail("--rpc-direct and --rpc-queue-per-call exclude each other");
    if (o.producers < 0 || o.consumers < 0) return fail("--producers and --consumers must be >= 0");
    if (o.queues < 1) return fail("--queues must be >= 1");
    if (o.threads < 1 || o.threads > 256) return fail("--threads must be 1..256");
    if (o.size < kBodyStampSize)
        return fail("--size must be at least " + std::to_string(kBodyStampSize) +
                    " (the body carries a send timestamp, producer id and sequence)");
    if (o.rate < 0) return fail("--rate must be >= 0");
    if (o.consumer_rate < 0) return fail("--consumer-rate must be >= 0");
    if (o.consumer_rate > 0 && o.rpc) return fail("--consumer-rate is not for --rpc");
    if (o.time_s < 0) return fail("--time must be >= 0");
    if (!valid_queue_pattern(o.queue_pattern)) return fail("--queue-pattern may hold one %d and no other conversion");
    if (o.exchange.empty() && o.exchange_type != ExchangeType::direct)
        return fail("the default exchange (--exchange \"\") is direct");
    if (o.exchange.rfind("amq.", 0) == 0)
        return fail("--exchange: amq.* names are reserved by the broker");
    if (o.rpc && o.backlog) return fail("--rpc and --backlog are different modes");
    if (o.consumer_delay_s < 0) return fail("--consumer-delay must be >= 0");
    if (o.consumer_delay_s > 0 && (o.rpc || o.backlog))
        return fail("--consumer-delay is for producer/consumer runs (not --rpc or --backlog)");
    if (o.rpc && (o.producers < 1 || o.consumers < 1))
        return fail("--rpc needs at least one producer (client) and one consumer (server)");
    if (o.backlog) {
        if (o.producers < 1 || o.consumers < 1) return fail("--backlog needs producers and consumers");
        if (o.confirm == 0) o.confirm = 1000;
    }
    if (o.stream) {
        if (o.rpc || o.autoack || o.prefetch == 0)
            return fail("--stream needs consumers with --prefetch and manual acks (no --autoack, no --rpc)");
        if (o.exchange_type == ExchangeType::fanout || (o.routing_key && !o.exchange.empty()))
            return fail("--stream: one queue per producer's routing key (no fanout or shared routing key)");
        o.persistent = true;  // a stream is durable
    }
    if (o.time_s == 0 && o.pmessages == 0 && o.backlog == 0) o.time_s = 10;
    if (o.consumer_delay_s > 0 && o.time_s > 0 && o.consumer_delay_s >= o.time_s)
        return fail("--consumer-delay must be shorter than --time");
    if (!o.autoack && o.prefetch > 0 && o.multi_ack_every > o.prefetch) {
        std::cerr << "sluice-perf: --multi-ack-every " << o.multi_ack_every << " > --prefetch " << o.prefetch
                  << " would stall; using " << o.prefetch << "\n";
        o.multi_ack_every = o.prefetch;
    }
    exit_code = 0;
    return o;
}

}  // namespace sluice::perf
