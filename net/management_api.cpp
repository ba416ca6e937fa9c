// The management API: request decoding, basic auth, routing by path, and the
// node-level resources (overview, nodes, vhosts, users, permissions, health
// checks, aliveness test), and the rate sampler. Queues, exchanges and
// bindings are in management_api_queues.cpp; connections, channels and
// consumers in management_api_connections.cpp; definitions in
// management_api_definitions.cpp; responses and request bodies in
// management_api_http.cpp; JSON ⇄ AMQP values in management_api_json.cpp;
// broker objects as JSON in management_api_objects.cpp.
#include "net/management_api.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <memory>
#include <thread>
#include <tuple>

#include "broker/broker.hpp"
#include "broker/vhost.hpp"
#include "net/management_api_internal.hpp"

namespace sluice::net {

namespace mgmt {

// --- request decoding -------------------------------------------------------------

namespace {

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

// Percent-decoding; '+' is a space only in a query.
bool percent_decode(std::string_view in, std::string& out, bool plus_is_space) {
    out.clear();
    for (size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= in.size()) return false;
            int hi = hex_digit(in[i + 1]);
            int lo = hex_digit(in[i + 2]);
            if (hi < 0 || lo < 0) return false;
            out.push_back(char(hi * 16 + lo));
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out.push_back(' ');
        } else {
            out.push_back(c);
        }
    }
    return true;
}

namespace {

// "/api/queues/%2F/q?x=1" → path {"queues", "/", "q"}, query {x: 1}.
bool decode_target(std::string_view target, Request& r, std::string& error) {
    size_t q = target.find('?');
    std::string_view path = target.substr(0, q);
    std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
    if (path.substr(0, 4) != "/api") {
        error = "not an API path";
        return false;
    }
    path.remove_prefix(4);
    if (!path.empty() && path.front() == '/') path.remove_prefix(1);
    if (!path.empty() && path.back() == '/') path.remove_suffix(1);
    while (!path.empty()) {
        size_t slash = path.find('/');
        std::string seg;
        if (!percent_decode(path.substr(0, slash), seg, false)) {
            error = "bad percent-encoding in the path";
            return false;
        }
        r.path.push_back(std::move(seg));
        if (slash == std::string_view::npos) break;
        path.remove_prefix(slash + 1);
        if (path.empty()) r.path.emplace_back();
    }
    while (!query.empty()) {
        size_t amp = query.find('&');
        std::string_view kv = query.substr(0, amp);
        size_t eq = kv.find('=');
        std::string k, v;
        if (!percent_decode(kv.substr(0, eq), k, true) ||
            !percent_decode(eq == std::string_view::npos ? std::string_view() : kv.substr(eq + 1), v, true)) {
            error = "bad percent-encoding in the query";
            return false;
        }
        if (!k.empty()) r.query.emplace_back(std::move(k), std::move(v));
        if (amp == std::string_view::npos) break;
        query.remove_prefix(amp + 1);
    }
    return true;
}

// "Basic dXNlcjpwYXNz" → user, password.
bool parse_basic(std::string_view header, std::string& user, std::string& password) {
    while (!header.empty() && header.front() == ' ') header.remove_prefix(1);
    if (header.size() < 6) return false;
    std::string scheme(header.substr(0, 6));
    for (char& c : scheme) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (scheme != "basic ") return false;
    std::string decoded;
    if (!base64_decode(header.substr(6), decoded)) return false;
    size_t colon = decoded.find(':');
    if (colon == std::string::npos) return false;
    user = decoded.substr(0, colon);
    password = decoded.substr(colon + 1);
    return true;
}

// A request that changes state must not come from another site's page (CSRF:
// a browser that holds basic-auth credentials for the API would send them
// along). Browsers say where a request comes from (Origin, Sec-Fetch-Site);
// clients that are not browsers (rabbitmqadmin, curl, sluicectl) send
// neither and are not affected.
bool cross_origin(const HttpRequest& request) {
    if (request.method == "GET" || request.method == "HEAD") return false;
    if (!request.fetch_site.empty() && request.fetch_site != "same-origin" && request.fetch_site != "none") return true;
    if (request.origin.empty()) return false;
    std::string_view o = request.origin;
    for (std::string_view scheme : {"http://", "https://"})
        if (o.substr(0, scheme.size()) == scheme) return o.substr(scheme.size()) != request.host;
    return true;  // "null" (a sandboxed page, a file) or anything else
}

HttpResponse unauthorized(bool ajax) {
    HttpResponse r = error_response(401, "not_authorised", "Login failed");
    // A browser shows its own login box for "Basic": the dashboard (which
    // sends X-Requested-With) gets another scheme name and asks itself.
    r.headers.emplace_back("WWW-Authenticate", ajax ? "SluiceBasic realm=\"Sluice Management\""
                                                    : "Basic realm=\"Sluice Management\"");
    return r;
}

std::string hostname() {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost";
    return buf;
}

// --- node-level resources -----------------------------------------------------------

json::array alarms_json(State& s) {
    // RabbitMQ's shape: one entry per alarm in effect.
    json::array a;
    for (auto [alarm, resource, reason] : {std::tuple{broker::Alarm::memory, "memory", "low on memory"},
                                           std::tuple{broker::Alarm::disk, "disk", "low on disk"}}) {
        if (!s.broker.alarm_active(alarm)) continue;
        json::object o;
        o["node"] = s.node;
        o["resource"] = resource;
        o["reason"] = reason;
        a.push_back(std::move(o));
    }
    return a;
}

HttpResponse overview(State& s, const Request& req) {
    broker::Broker& b = s.broker;
    const broker::BrokerStats& st = b.stats();
    const RateSampler& r = s.rates;
    using S = broker::BrokerStats;
    // Administrators and monitoring users see the node's totals; a
    // management user sees only the vhosts it has permissions in and its own
    // connections, as RabbitMQ filters them.
    const bool everything = req.administrator || req.monitoring;
    json::object ms;
    auto stat = [&](const char* name, uint64_t value, double rate) {
        ms[name] = value;
        ms[std::string(name) + "_details"] = rate_json(rate);
    };
    uint64_t ready = 0, unacked = 0, consumers = 0, queues = 0, exchanges = 0;
    uint64_t q_publish = 0, q_deliver = 0, q_redeliver = 0, q_ack = 0;
    double q_publish_rate = 0, q_deliver_rate = 0, q_redeliver_rate = 0, q_ack_rate = 0, q_messages_rate = 0;
    for (broker::VHost* v : b.vhosts()) {
        if (!everything && !sees_vhost(s, req, v->name())) continue;
        for (const auto& [name, q] : v->queues()) {
            ready += q->ready_count();
            unacked += q->unacked_count();
            consumers += q->consumer_count();
            if (everything) continue;
            q_publish += q->counters.published;
            q_deliver += q->counters.delivered;
            q_redeliver += q->counters.redelivered;
            q_ack += q->counters.acked;
            if (const RateSampler::QueueSample* qs = r.queue(q->id())) {
                q_publish_rate += qs->publish_rate;
                q_deliver_rate += qs->deliver_rate;
                q_redeliver_rate += qs->redeliver_rate;
                q_ack_rate += qs->ack_rate;
                q_messages_rate += qs->messages_rate;
            }
        }
        queues += v->queues().size();
        exchanges += v->exchanges().size();
    }
    if (everything) {
        stat("publish", st.messages_published, r.node_rate(&S::messages_published));
        stat("deliver_get", st.messages_delivered, r.node_rate(&S::messages_delivered));
        stat("redeliver", st.messages_redelivered, r.node_rate(&S::messages_redelivered));
        stat("ack", st.messages_acked, r.node_rate(&S::messages_acked));
        stat("confirm", st.messages_confirmed, r.node_rate(&S::messages_confirmed));
        stat("return_unroutable", st.messages_returned, r.node_rate(&S::messages_returned));
        uint64_t dropped =
            st.messages_unroutable > st.messages_returned ? st.messages_unroutable - st.messages_returned : 0;
        stat("drop_unroutable", dropped,
             std::max(0.0, r.node_rate(&S::messages_unroutable) - r.node_rate(&S::messages_returned)));
    } else {
        // The queues' own counters in the vhosts it sees.
        stat("publish", q_publish, q_publish_rate);
        stat("deliver_get", q_deliver, q_deliver_rate);
        stat("redeliver", q_redeliver, q_redeliver_rate);
        stat("ack", q_ack, q_ack_rate);
    }
    uint64_t channels = 0, connections = 0;
    for (const broker::ConnectionSummary& c : broker::list_connections(b)) {
        if (!sees_connection(req, c.user)) continue;
        ++connections;
        channels += c.channels;
    }

    json::object qt;
    qt["messages"] = ready + unacked;
    qt["messages_details"] = rate_json(everything ? r.ready_rate() + r.unacked_rate() : q_messages_rate);
    qt["messages_ready"] = ready;
    qt["messages_ready_details"] = rate_json(everything ? r.ready_rate() : 0);
    qt["messages_unacknowledged"] = unacked;
    qt["messages_unacknowledged_details"] = rate_json(everything ? r.unacked_rate() : 0);
    json::object ot;
    ot["connections"] = connections;
    ot["channels"] = channels;
    ot["consumers"] = consumers;
    ot["queues"] = queues;
    ot["exchanges"] = exchanges;

    json::object o;
    o["management_version"] = SLUICE_VERSION;
    o["rates_mode"] = "basic";
    o["product_name"] = "Sluice";
    o["product_version"] = SLUICE_VERSION;
    o["node"] = s.node;
    o["cluster_name"] = "sluice";
    o["message_stats"] = std::move(ms);
    o["queue_totals"] = std::move(qt);
    o["object_totals"] = std::move(ot);
    o["alarms"] = alarms_json(s);
    o["sample_interval"] = double(s.sample_interval.count()) / 1000.0;
    json::array types;
    for (const char* t : {"direct", "fanout", "topic", "headers", "x-consistent-hash", "x-delayed-message",
                          "x-message-deduplication"}) {
        json::object e;
        e["name"] = t;
        e["enabled"] = true;
        types.push_back(std::move(e));
    }
    o["exchange_types"] = std::move(types);
    return json_response(200, o);
}

uint64_t rss_bytes() {
    std::ifstream f("/proc/self/statm");
    uint64_t size = 0, resident = 0;
    if (!(f >> size >> resident)) return 0;
    return resident * uint64_t(sysconf(_SC_PAGESIZE));
}

uint64_t open_fds() {
    uint64_t n = 0;
    if (DIR* d = opendir("/proc/self/fd")) {
        while (readdir(d)) ++n;
        closedir(d);
        n = n >= 3 ? n - 3 : 0;  // ".", ".." and the directory's own descriptor
    }
    return n;
}

json::object node_json(State& s);

// Cluster mode: one object per node, this one with its own figures; every
// one named sluice@<node id>, with its role, ISR membership and lag.
std::vector<json::object> cluster_nodes_json(State& s) {
    std::vector<json::object> out;
    for (const auto& n : s.cluster()) {
        json::object o;
        if (n.role == "leader") {
            o = node_json(s);  // the API is served by the leader
        } else {
            o["type"] = "disc";
            o["running"] = n.alive;
        }
        o["name"] = "sluice@" + n.node;
        o["node_id"] = n.node;
        o["role"] = n.role;
        o["in_sync"] = n.in_sync;
        o["host"] = n.host;
        o["amqp_port"] = n.amqp_port;
        o["http_port"] = n.http_port;
        o["replication_port"] = n.replication_port;
        o["replication_state"] = n.state;
        o["log_index"] = n.index;
        o["lag_batches"] = n.lag_batches;
        o["lag_bytes"] = n.lag_bytes;
        o["lag_ms"] = n.lag_ms;
        o["epoch"] = n.epoch;
        out.push_back(std::move(o));
    }
    if (out.empty()) out.push_back(node_json(s));
    return out;
}

json::object node_json(State& s) {
    broker::Broker& b = s.broker;
    json::object o;
    o["name"] = s.node;
    o["type"] = "disc";
    o["running"] = true;
    o["os_pid"] = std::to_string(getpid());
    o["uptime"] = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - s.started).count();
    const broker::ResourceReadings& res = b.resources();
    o["mem_used"] = rss_bytes();
    o["mem_limit"] = res.memory_limit;
    o["mem_alarm"] = b.alarm_active(broker::Alarm::memory);
    o["disk_free"] = res.disk_free;
    o["disk_free_limit"] = res.disk_free_limit;
    o["disk_free_alarm"] = b.alarm_active(broker::Alarm::disk);
    o["message_memory"] = b.message_memory();
    o["message_memory_limit"] = b.config().message_memory_limit;
    o["fd_used"] = open_fds();
    rlimit rl{};
    o["fd_total"] = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? uint64_t(rl.rlim_cur) : 0;
    o["sockets_used"] = b.sessions().size();
    o["processors"] = std::thread::hardware_concurrency();
    o["rates_mode"] = "basic";
    o["partitions"] = json::array();
    o["alarms"] = alarms_json(s);
    return o;
}

void aliveness(State& s, const std::string& vhost_name, const Reply& reply) {
    broker::VHost* v = s.broker.find_vhost(vhost_name);
    if (!v) return reply(not_found("no vhost '" + vhost_name + "'"));
    auto failed = [&](std::string reason) {
        json::object o;
        o["status"] = "failed";
        o["reason"] = utf8(reason);
        reply(json_response(503, o));
    };
    // As RabbitMQ: declare "aliveness-test", publish to it, get it back.
    const std::string name = "aliveness-test";
    bool created = false;
    auto r = v->declare_queue(name, broker::QueueOptions{}, 0, created);
    if (auto* e = std::get_if<broker::AmqpError>(&r)) return failed(e->reply_text());
    broker::QueuePtr q = std::get<broker::QueuePtr>(r);
    const broker::Exchange* ex = v->find_exchange("");
    bool stored = false;
    if (!ex || !publish_message(*v, *ex, name, std::string(), "test_message", stored))
        return failed("the test message was not routed");
    auto got = q->get(true);
    if (!got || got->message->body() != "test_message") return failed("the test message did not come back");
    json::object o;
    o["status"] = "ok";
    reply(json_response(200, o));
}

void route(State& s, const Request& r, const Reply& reply) {
    const auto& p = r.path;
    const std::string& m = r.method;
    const bool get = m == "GET" || m == "HEAD";
    if (p.empty()) return reply(not_found("Not Found"));
    const std::string& what = p[0];
    if (what == "queues") return handle_queues(s, r, reply);
    if (what == "exchanges") return handle_exchanges(s, r, reply);
    if (what == "bindings") return handle_bindings(s, r, reply);
    if (what == "connections") return handle_connections(s, r, reply);
    if (what == "channels") return handle_channels(s, r, reply);
    if (what == "consumers") return handle_consumers(s, r, reply);
    if (what == "definitions") return handle_definitions(s, r, reply);
    if (what == "parameters") return handle_parameters(s, r, reply);
    if (what == "shovels") return handle_shovels(s, r, reply);
    if (what == "users") return handle_users(s, r, reply);
    if (what == "vhosts") return handle_vhosts(s, r, reply);
    if (what == "permissions") return handle_permissions(s, r, reply);
    if (what == "vhost-limits") return handle_vhost_limits(s, r, reply);
    if (what == "overview" && p.size() == 1) return reply(get ? overview(s, r) : method_not_allowed("GET, HEAD"));
    if (!get) {
        // Everything below is read-only.
        bool known = what == "nodes" || what == "whoami" || what == "health" || what == "aliveness-test" ||
                     what == "extensions";
        return reply(known ? method_not_allowed("GET, HEAD") : not_found("Not Found"));
    }
    if (what == "nodes") {
        if (p.size() == 1) {
            json::array a;
            if (s.cluster) {
                for (auto& o : cluster_nodes_json(s)) a.push_back(std::move(o));
            } else {
                a.push_back(node_json(s));
            }
            return reply(list_response(r, std::move(a)));
        }
        if (p.size() == 2 && s.cluster)
            for (auto& o : cluster_nodes_json(s))
                if (o.at("name").as_string() == p[1]) return reply(json_response(200, o));
        if (p.size() == 2 && p[1] == s.node) return reply(json_response(200, node_json(s)));
        return reply(not_found("no node '" + (p.size() > 1 ? p[1] : "") + "'"));
    }
    if (what == "whoami" && p.size() == 1) {
        json::object o;
        o["name"] = utf8(r.user);
        json::array tags;
        if (const broker::User* u = s.broker.access_control().find_user(r.user))
            for (const auto& t : u->tags) tags.push_back(utf8(t));
        o["tags"] = std::move(tags);
        return reply(json_response(200, o));
    }
    if (what == "health" && p.size() == 3 && p[1] == "checks" && (p[2] == "alarms" || p[2] == "local-alarms")) {
        json::object o;
        json::array alarms = alarms_json(s);
        if (alarms.empty()) {
            o["status"] = "ok";
            return reply(json_response(200, o));
        }
        o["status"] = "failed";
        o["reason"] = "resource alarm(s) in effect in the cluster";
        o["alarms"] = std::move(alarms);
        return reply(json_response(503, o));
    }
    if (what == "aliveness-test" && p.size() == 2) return aliveness(s, p[1], reply);
    if (what == "extensions" && p.size() == 1) return reply(json_response(200, json::array()));
    return reply(not_found("Not Found"));
}

}  // namespace

// --- rate sampler ----------------------------------------------------------------------

double RateSampler::per_second(uint64_t now, uint64_t before) const {
    if (samples_ < 2 || dt_ <= 0) return 0;
    return (double(now) - double(before)) / dt_;
}

double RateSampler::node_rate(uint64_t broker::BrokerStats::*field) const {
    return std::max(0.0, per_second(cur_.stats.*field, prev_.stats.*field));
}
double RateSampler::ready_rate() const { return per_second(cur_.ready, prev_.ready); }
double RateSampler::unacked_rate() const { return per_second(cur_.unacked, prev_.unacked); }

const RateSampler::QueueSample* RateSampler::queue(uint64_t queue_id) const {
    auto it = queues_.find(queue_id);
    return it == queues_.end() ? nullptr : &it->second;
}

void RateSampler::sample(broker::Broker& broker) {
    auto now = std::chrono::steady_clock::now();
    if (samples_ > 0) {
        prev_ = cur_;
        dt_ = std::chrono::duration<double>(now - cur_time_).count();
    }
    cur_time_ = now;
    samples_ = std::min(samples_ + 1, 2);
    cur_.stats = broker.stats();
    cur_.ready = cur_.unacked = 0;
    for (broker::VHost* v : broker.vhosts())
        for (const auto& [name, q] : v->queues()) {
            cur_.ready += q->ready_count();
            cur_.unacked += q->unacked_count();
        }
    // Per-queue samples only while someone uses the API: an unwatched broker
    // with 100k queues keeps no per-queue state.
    if (watched(now)) sample_queues(broker);
    else queues_.clear();
}

void RateSampler::sample_queues(broker::Broker& broker) {
    auto now = std::chrono::steady_clock::now();
    ++epoch_;
    size_t queue_count = 0;
    for (broker::VHost* v : broker.vhosts()) {
        for (const auto& [name, q] : v->queues()) {
            ++queue_count;
            QueueSample& qs = queues_[q->id()];
            const auto& c = q->counters;
            const uint64_t messages = q->ready_count() + q->unacked_count();
            const double dt = std::chrono::duration<double>(now - qs.time).count();
            const bool continued = qs.epoch == epoch_ - 1;
            if (continued && dt < min_gap_s_) {  // too close to the last one: keep its baseline
                qs.epoch = epoch_;
                continue;
            }
            if (continued) {
                auto r = [dt](uint64_t a, uint64_t b) { return a >= b ? double(a - b) / dt : 0.0; };
                qs.publish_rate = r(c.published, qs.published);
                qs.deliver_rate = r(c.delivered, qs.delivered);
                qs.redeliver_rate = r(c.redelivered, qs.redelivered);
                qs.ack_rate = r(c.acked, qs.acked);
                qs.messages_rate = (double(messages) - double(qs.messages)) / dt;
            } else {
                qs = QueueSample{};
            }
            qs.published = c.published;
            qs.delivered = c.delivered;
            qs.redelivered = c.redelivered;
            qs.acked = c.acked;
            qs.messages = messages;
            qs.time = now;
            qs.epoch = epoch_;
        }
    }
    if (queues_.size() > queue_count)
        std::erase_if(queues_, [this](const auto& kv) { return kv.second.epoch != epoch_; });
}

}  // namespace mgmt

ManagementApi::State::State(broker::Broker& b)
    : broker(b), node("sluice@" + mgmt::hostname()), started(std::chrono::steady_clock::now()) {}

ManagementApi::ManagementApi(broker::Broker& broker) : state_(std::make_unique<State>(broker)) { sample(); }

ManagementApi::~ManagementApi() = default;

void ManagementApi::set_shovels(Shovels* shovels) { state_->shovels = shovels; }
void ManagementApi::set_cluster_view(ClusterView view) { state_->cluster = std::move(view); }

void ManagementApi::sample() { state_->rates.sample(state_->broker); }

std::chrono::milliseconds ManagementApi::sample_interval() const { return state_->sample_interval; }

void ManagementApi::set_sample_interval(std::chrono::milliseconds interval) {
    state_->sample_interval = std::max(interval, std::chrono::milliseconds(100));
    state_->rates.set_interval(state_->sample_interval);
}

void ManagementApi::handle(const HttpRequest& request, std::function<void(HttpResponse)> reply) {
    using namespace mgmt;
    State& s = *state_;
    if (s.rates.touch()) s.rates.sample_queues(s.broker);  // rates from the next sample on
    // Whatever a handler does, the client gets exactly one answer.
    auto answered = std::make_shared<bool>(false);
    Reply once = [answered, reply = std::move(reply)](HttpResponse r) {
        if (*answered) return;
        *answered = true;
        reply(std::move(r));
    };
    if (cross_origin(request))
        return once(error_response(403, "not_authorised", "cross-origin request refused (Origin '" + request.origin +
                                                              "', Host '" + request.host + "')"));
    Request r;
    r.method = request.method;
    r.raw = &request;
    std::string user, password;
    if (!parse_basic(request.authorization, user, password) ||
        !s.broker.authenticate(user, password, request.from_loopback))
        return once(unauthorized(request.ajax));
    const broker::User* u = s.broker.access_control().find_user(user);
    if (!u || !u->management_user()) {
        HttpResponse r = unauthorized(request.ajax);
        r.body = json::serialize(json::object{{"error", "not_authorised"}, {"reason", "Not management user"}});
        return once(std::move(r));
    }
    r.user = user;
    r.administrator = u->has_tag("administrator");
    r.monitoring = u->has_tag("monitoring");
    r.policymaker = r.administrator || u->has_tag("policymaker");
    std::string error;
    if (!decode_target(request.target, r, error)) return once(bad_request(error));
    if (auto refused = authorize(s, r)) return once(std::move(*refused));
    s.connection_names.reset();
    try {
        route(s, r, once);
    } catch (const std::exception& e) {
        once(error_response(500, "internal_error", e.what()));
    }
    if (!*answered && !s.broker.durability().enabled()) once(error_response(500, "internal_error", "no answer"));
}

}  // namespace sluice::net
