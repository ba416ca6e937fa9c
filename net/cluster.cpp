#include "net/cluster.hpp"

#include <pthread.h>
#include <boost/json.hpp>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "net/etcd_client.hpp"
#include "net/replication.hpp"
#include "net/tcp_proxy.hpp"

namespace sluice::net {

namespace fs = std::filesystem;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;
using storage::Store;

namespace {

constexpr auto kTick = std::chrono::milliseconds(100);

std::string random_id() {
    std::random_device rd;
    std::mt19937_64 g((uint64_t(rd()) << 32) ^ rd());
    char buf[33];
    snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(g()),
             static_cast<unsigned long long>(g()));
    return buf;
}

// The data dir's record of the cluster it belongs to (cluster.json).
struct Identity {
    std::string cluster, cluster_id, node, instance;
};

bool read_identity(const fs::path& file, Identity& id) {
    std::ifstream in(file);
    if (!in) return false;
    std::stringstream ss;
    ss << in.rdbuf();
    boost::system::error_code ec;
    json::value v = json::parse(ss.str(), ec);
    if (ec || !v.is_object()) return false;
    auto get = [&](const char* k) {
        const json::value* f = v.as_object().if_contains(k);
        return f && f->is_string() ? std::string(f->as_string()) : std::string();
    };
    id = {get("cluster"), get("cluster_id"), get("node"), get("instance")};
    return true;
}

bool write_identity(const fs::path& file, const Identity& id) {
    json::object o{{"cluster", id.cluster}, {"cluster_id", id.cluster_id}, {"node", id.node}, {"instance", id.instance}};
    const fs::path tmp = file.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << json::serialize(o) << "\n";
        out.flush();
        if (!out) return false;
    }
    std::error_code ec;
    fs::rename(tmp, file, ec);
    return !ec;
}

struct Address {
    std::string node, host, instance;
    uint16_t amqp = 0, http = 0, repl = 0;
};

std::string address_json(const Address& a, const std::string& role) {
    json::object o{{"node", a.node}, {"host", a.host}, {"amqp", a.amqp}, {"http", a.http},
                   {"replication", a.repl}, {"instance", a.instance}, {"role", role}};
    return json::serialize(o);
}

bool parse_address(const std::string& text, Address& a, std::string* role = nullptr) {
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec || !v.is_object()) return false;
    const auto& o = v.as_object();
    auto str = [&](const char* k) {
        const json::value* f = o.if_contains(k);
        return f && f->is_string() ? std::string(f->as_string()) : std::string();
    };
    auto num = [&](const char* k) -> uint16_t {
        const json::value* f = o.if_contains(k);
        return f && f->is_int64() ? static_cast<uint16_t>(f->as_int64()) : 0;
    };
    a.node = str("node");
    a.host = str("host");
    a.instance = str("instance");
    a.amqp = num("amqp");
    a.http = num("http");
    a.repl = num("replication");
    if (role) *role = str("role");
    return !a.node.empty();
}

bool store_has_data(Store& store) {
    bool any = false;
    store.scan(storage::Column::meta, "", "", [&](std::string_view, std::string_view) {
        any = true;
        return false;
    });
    return any || store.log_position().index > 0;
}

// The in-sync replica set as etcd has it, and its key's mod_revision.
struct Isr {
    std::set<std::string> members;
    int64_t revision = 0;
};

}  // namespace

struct ClusterNode::Impl {
    ClusterConfig cfg;
    std::string prefix;  // /sluice/<name>/
    EtcdClient etcd;
    EtcdClient etcd_for_watchdog;  // its own connection: the coordinator's may be blocked
    Identity identity;
    Address me;

    // Lease: the coordinator thread only.
    int64_t lease = 0;
    int64_t lease_ttl = 0;
    Clock::time_point lease_sent{};   // when the last successful grant/keepalive was sent
    Clock::time_point next_keepalive{};

    mutable std::mutex mu;  // guards what other threads read: view, leader
    std::vector<ClusterNodeStatus> view;
    Address leader;
    uint64_t leader_epoch = 0;
    std::atomic<bool> stopping{false};
    bool stopped = false;  // stop() ran

    // Leading.
    std::unique_ptr<ReplicationLeader> replication;
    std::thread thread;
    // The watchdog steps down on time even while the coordinator thread is
    // blocked in an etcd call (each may take its timeout per endpoint).
    std::thread watchdog;
    std::atomic<int64_t> safe_until_ns{0};  // lease_safe_until(), for the watchdog
    std::atomic<bool> stepped_down{false};
    std::function<void(const std::string&)> lost;
    uint64_t epoch = 0;
    Store* leading_store = nullptr;
    // The ISR as this leader last saw it in etcd (this node included) and
    // that key's mod_revision; proposals whose answer was lost (a timeout)
    // and that may still apply while the key keeps the revision they
    // compared. Confirms wait for all of them (waiting_set()).
    Isr isr;
    struct Ambiguous {
        int64_t compared;
        std::set<std::string> proposed;
    };
    std::vector<Ambiguous> ambiguous;

    explicit Impl(ClusterConfig c)
        : cfg(std::move(c)), prefix("/sluice/" + cfg.name + "/"),
          etcd(cfg.etcd_endpoints, std::chrono::milliseconds(std::max<uint32_t>(cfg.lease_ttl_s * 1000 / 5, 500))),
          etcd_for_watchdog(cfg.etcd_endpoints, std::chrono::milliseconds(500)) {
        me.node = cfg.node_id;
        me.host = cfg.advertise_host;
        me.amqp = cfg.amqp_port;
        me.http = cfg.http_port;
        me.repl = cfg.replication_port;
    }

    std::string key(const std::string& k) const { return prefix + k; }

    // Retries `call` once a second, one log line per failed attempt, until it
    // succeeds or stop().
    bool retry(const char* what, const std::function<bool()>& call) {
        for (int attempt = 1;; ++attempt) {
            if (call()) return true;
            if (stopping) return false;
            std::cerr << "sluiced: cluster: " << what << ": etcd: " << etcd.error() << " (attempt " << attempt
                      << ", retrying in 1 s)" << std::endl;
            for (int i = 0; i < 10 && !stopping; ++i) std::this_thread::sleep_for(kTick);
            if (stopping) return false;
        }
    }

    bool grant_lease() {
        int64_t id = 0, ttl = 0;
        Clock::time_point sent = Clock::now();
        if (!etcd.lease_grant(cfg.lease_ttl_s, id, ttl)) return false;
        lease = id;
        lease_ttl = ttl > 0 ? ttl : cfg.lease_ttl_s;
        lease_sent = sent;
        next_keepalive = sent + std::chrono::milliseconds(lease_ttl * 1000 / 3);
        publish_safe_until();
        return true;
    }

    void publish_safe_until() {
        safe_until_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(lease_safe_until().time_since_epoch()).count();
    }

    // The lease is safe to act on until this point: the others see it
    // expire no sooner than TTL after the last renewal reached etcd, which
    // is after we sent it. The margin covers stopping (the watchdog's 20 ms
    // and the 320s going out) and clock-rate slack.
    Clock::time_point lease_safe_until() const {
        auto ttl = std::chrono::milliseconds(lease_ttl * 1000);
        auto margin = std::max<std::chrono::milliseconds>(std::chrono::milliseconds(250), ttl / 5);
        return lease_sent + ttl - margin;
    }

    // Renews when due (every third of the TTL: two chances to renew before
    // lease_safe_until, and a dead leader's lease runs out 2/3 to 3/3 of
    // the TTL after it died). False once the lease is gone.
    bool keep_lease_alive() {
        if (Clock::now() < next_keepalive) return true;
        Clock::time_point sent = Clock::now();
        int64_t ttl_left = 0;
        if (etcd.lease_keepalive(lease, ttl_left)) {
            if (ttl_left <= 0) return false;
            lease_sent = sent;
            next_keepalive = sent + std::chrono::milliseconds(lease_ttl * 1000 / 3);
            publish_safe_until();
            return true;
        }
        next_keepalive = Clock::now() + std::chrono::milliseconds(200);  // etcd unreachable: try again soon
        return Clock::now() < lease_safe_until();
    }

    std::string register_node(const std::string& role) {
        // Two processes with one node id: the second one must not start.
        // The first one's own key (same instance: a restart) is ours to take.
        for (auto deadline = Clock::now() + std::chrono::seconds(2 * cfg.lease_ttl_s + 2);;) {
            std::vector<EtcdKV> found;
            bool ok = false;
            const std::string value = address_json(me, role);
            if (!etcd.txn({EtcdCompare{key("nodes/" + me.node), EtcdCompare::Target::version, EtcdCompare::Result::equal, 0, ""}},
                          {EtcdOp{EtcdOp::Kind::put, key("nodes/" + me.node), value, "", lease}},
                          {EtcdOp{EtcdOp::Kind::range, key("nodes/" + me.node), "", "", 0}}, ok, nullptr)) {
                return "etcd: " + etcd.error();
            }
            if (ok) return "";
            std::vector<EtcdKV> held;
            if (!etcd.range(key("nodes/" + me.node), "", held)) return "etcd: " + etcd.error();
            Address other;
            if (!held.empty() && parse_address(held[0].value, other) && other.instance == me.instance) {
                if (!etcd.put(key("nodes/" + me.node), value, lease)) return "etcd: " + etcd.error();
                return "";
            }
            if (held.empty()) continue;
            if (Clock::now() >= deadline)
                return "node id '" + me.node + "' is in use by another live node (at " + other.host + ", amqp port " +
                       std::to_string(other.amqp) + "); give each node its own --node-id";
            std::cerr << "sluiced: cluster: node id '" << me.node << "' is held by another instance at " << other.host
                      << "; waiting for its lease to expire" << std::endl;
            std::this_thread::sleep_for(std::chrono::seconds(1));
            if (stopping) return "stopped";
        }
    }

    bool read_leader(Address& a, uint64_t& epoch_out, bool& present, int64_t* lease_out = nullptr) {
        std::vector<EtcdKV> kv;
        if (!etcd.range(key("leader"), "", kv)) return false;
        present = !kv.empty();
        if (present) {
            parse_address(kv[0].value, a);
            epoch_out = static_cast<uint64_t>(kv[0].create_revision);
            if (lease_out) *lease_out = kv[0].lease;
        }
        return true;
    }

    // The ISR is one key, `isr`: a JSON array of node ids. Every change is a
    // compare-and-swap on its mod_revision (and, by a leader, on its leader
    // key's create_revision): a change whose answer was lost can apply only
    // while the key still has the revision it compared, so a leader keeps
    // waiting for what it proposed until it sees a later revision. (With one
    // key per member, a timed-out add could commit later, unseen, and a
    // replica the leader no longer waited for could be elected: the Jepsen
    // helper's flickering partitions left the two views apart.)
    bool read_isr(Isr& out) {
        std::vector<EtcdKV> kv;
        if (!etcd.range(key("isr"), "", kv)) return false;
        out = isr_of(kv);
        return true;
    }

    // The ISR in a range's answer for its key (none: empty, revision 0).
    static Isr isr_of(const std::vector<EtcdKV>& kv) {
        Isr out;
        if (!kv.empty()) {
            out.members = parse_isr(kv[0].value);
            out.revision = kv[0].mod_revision;
        }
        return out;
    }

    static std::string isr_json(const std::set<std::string>& members) {
        json::array a;
        for (const auto& m : members) a.emplace_back(m);
        return json::serialize(a);
    }

    static std::set<std::string> parse_isr(const std::string& text) {
        std::set<std::string> out;
        boost::system::error_code ec;
        json::value v = json::parse(text, ec);
        if (!ec && v.is_array())
            for (const auto& e : v.as_array())
                if (e.is_string()) out.insert(std::string(e.as_string()));
        return out;
    }

    // Campaigns once. Returns the epoch won, or 0.
    uint64_t campaign(const std::string& previous_leader, bool initialized, const Isr& seen) {
        bool won = false;
        const std::string value = address_json(me, "leader");
        const EtcdOp take{EtcdOp::Kind::put, key("leader"), value, "", lease};
        if (!initialized) {
            // Bootstrap: the first leader of a new cluster.
            if (!etcd.txn({EtcdCompare{key("initialized"), EtcdCompare::Target::version, EtcdCompare::Result::equal, 0, ""},
                           EtcdCompare{key("leader"), EtcdCompare::Target::version, EtcdCompare::Result::equal, 0, ""}},
                          {take, EtcdOp{EtcdOp::Kind::put, key("initialized"), "1", "", 0},
                           EtcdOp{EtcdOp::Kind::put, key("isr"), isr_json({me.node}), "", 0}},
                          {}, won, nullptr))
                return 0;
        } else {
            if (!seen.members.count(me.node)) return 0;
            // The previous leader lost its lease: it may hold batches nobody
            // else has, so it leaves the ISR until it has resynced.
            std::set<std::string> members = seen.members;
            if (!previous_leader.empty() && previous_leader != me.node) members.erase(previous_leader);
            if (!etcd.txn({EtcdCompare{key("leader"), EtcdCompare::Target::version, EtcdCompare::Result::equal, 0, ""},
                           EtcdCompare{key("isr"), EtcdCompare::Target::mod, EtcdCompare::Result::equal, seen.revision, ""}},
                          {take, EtcdOp{EtcdOp::Kind::put, key("isr"), isr_json(members), "", 0}}, {}, won, nullptr))
                return 0;
        }
        if (!won) return 0;
        Address a;
        uint64_t e = 0;
        bool present = false;
        if (!read_leader(a, e, present) || !present || a.node != me.node) return 0;
        return e;
    }

    // What confirms wait for: every member etcd may have, but this node.
    std::set<std::string> waiting_set() const {
        std::set<std::string> out = isr.members;
        for (const auto& a : ambiguous)
            if (a.compared == isr.revision) out.insert(a.proposed.begin(), a.proposed.end());
        out.erase(me.node);
        return out;
    }

    // The ISR key moved on: proposals that compared an older revision can
    // never apply.
    void saw_isr(const Isr& now) {
        isr = now;
        std::erase_if(ambiguous, [&](const Ambiguous& a) { return a.compared != isr.revision; });
    }

    // An ISR change, fenced by this leader's epoch and the key's revision.
    // True if it applied; on false the caller tries again later.
    bool change_isr(const std::string& node, bool add) {
        std::set<std::string> proposed = isr.members;
        if (add) proposed.insert(node);
        else proposed.erase(node);
        bool ok = false;
        std::vector<std::vector<EtcdKV>> got;
        const EtcdOp read{EtcdOp::Kind::range, key("isr"), "", "", 0};
        if (!etcd.txn({EtcdCompare{key("leader"), EtcdCompare::Target::create, EtcdCompare::Result::equal,
                                   static_cast<int64_t>(epoch), ""},
                       EtcdCompare{key("isr"), EtcdCompare::Target::mod, EtcdCompare::Result::equal, isr.revision, ""}},
                      {EtcdOp{EtcdOp::Kind::put, key("isr"), isr_json(proposed), "", 0}, read}, {read}, ok, &got)) {
            ambiguous.push_back({isr.revision, std::move(proposed)});  // it may yet apply
            return false;
        }
        saw_isr(got.empty() ? Isr{} : isr_of(got.back()));
        return ok;
    }

    // Every half second: the ISR as etcd has it now; a lost answer is
    // settled by moving the key on (a write of the same members), so a
    // proposal for a dead replica cannot hold confirms forever.
    void reconcile_isr() {
        Isr now;
        if (!read_isr(now)) return;
        saw_isr(now);
        if (!ambiguous.empty()) change_isr(me.node, true);  // same members, a new revision
    }

    void refresh_view(const std::string& my_role) {
        std::vector<EtcdKV> kv;
        if (!etcd.range(key("nodes/"), EtcdClient::prefix_end(key("nodes/")), kv)) return;
        Isr isr_seen;
        read_isr(isr_seen);
        const std::set<std::string>& isr_now = isr_seen.members;
        Address l;
        uint64_t e = 0;
        bool present = false;
        read_leader(l, e, present);
        std::vector<ClusterNodeStatus> out;
        std::set<std::string> seen;
        std::vector<ReplicaState> reps;
        if (replication) reps = replication->replicas();
        auto add = [&](const Address& a, bool alive, const std::string& role) {
            ClusterNodeStatus s;
            s.node = a.node;
            s.alive = alive;
            s.role = present && l.node == a.node ? "leader" : role;
            s.in_sync = isr_now.count(a.node) > 0;
            s.host = a.host;
            s.amqp_port = a.amqp;
            s.http_port = a.http;
            s.replication_port = a.repl;
            s.epoch = present ? e : 0;
            if (a.node == me.node && replication) s.index = replication->last_index();
            for (const auto& r : reps)
                if (r.node == a.node) {
                    s.state = r.state;
                    s.index = r.acked;
                    s.lag_batches = r.lag_batches;
                    s.lag_bytes = r.lag_bytes;
                    s.lag_ms = static_cast<uint64_t>(r.lag_time.count());
                }
            seen.insert(a.node);
            out.push_back(std::move(s));
        };
        for (const auto& e2 : kv) {
            Address a;
            std::string role;
            if (parse_address(e2.value, a, &role)) add(a, true, role == "leader" ? "follower" : role);
        }
        // Nodes whose lease ran out (dead, paused, cut off) but that are in
        // the ISR or that this leader has replicated to: still shown.
        std::set<std::string> known = isr_now;
        for (const auto& r : reps) known.insert(r.node);
        for (const auto& n : known)
            if (!seen.count(n)) {
                Address a;
                a.node = n;
                add(a, false, "follower");
            }
        if (!seen.count(me.node)) add(me, true, my_role);
        std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.node < b.node; });
        std::lock_guard lk(mu);
        view = std::move(out);
    }

    // ---- leading -------------------------------------------------------

    void step_down(const std::string& why) {
        if (stepped_down.exchange(true)) return;  // once, from whichever thread saw it first
        std::cerr << "sluiced: cluster: " << me.node << " stops leading: " << why << std::endl;
        if (leading_store) leading_store->fail_held("leadership lost: " + why);
        if (lost) {
            auto fn = std::move(lost);
            lost = nullptr;
            fn(why);
        }
    }

    // Runs beside lead_loop: the lease's deadline and the disk, checked
    // every 20 ms whatever etcd is doing.
    void watch() {
        while (!stopping && !stepped_down) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            const auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
            if (now >= safe_until_ns) return step_down("the lease could not be renewed in time");
            auto stalled = leading_store->write_stalled_for();
            if (stalled > std::chrono::milliseconds(cfg.lease_ttl_s * 1000 / 2)) {
                // It can confirm nothing; holding the lease would keep every
                // other node from serving (LavinMQ #2151). Give it up now.
                step_down("a disk write has not finished for " + std::to_string(stalled.count()) + " ms");
                etcd_for_watchdog.lease_revoke(lease);
                return;
            }
        }
    }

    void lead_loop() {
        auto next_check = Clock::now();
        auto next_view = Clock::now();
        while (!stopping && !stepped_down) {
            std::this_thread::sleep_for(kTick);
            if (stopping || stepped_down) return;
            if (!keep_lease_alive() || Clock::now() >= lease_safe_until())
                return step_down("the lease could not be renewed in time");
            if (Clock::now() >= next_check) {
                next_check = Clock::now() + std::chrono::milliseconds(500);
                Address l;
                uint64_t e = 0;
                bool present = false;
                if (read_leader(l, e, present) && (!present || e != epoch))
                    return step_down(present ? "node " + l.node + " leads epoch " + std::to_string(e) : "the leader key is gone");
                reconcile_isr();
                replication->set_in_sync(waiting_set());
            }
            // The ISR: a member too far behind leaves it (so it stops holding
            // confirms back); a replica that caught up joins it.
            for (const auto& r : replication->replicas()) {
                if (r.node == me.node) continue;
                if (isr.members.count(r.node)) {
                    const bool behind = r.lag_time > std::chrono::milliseconds(cfg.isr_max_lag_ms) ||
                                        r.lag_bytes > cfg.isr_max_lag_bytes;
                    if (!behind) continue;
                    // Confirms keep waiting for it until etcd no longer has it.
                    if (change_isr(r.node, false))
                        std::cerr << "sluiced: cluster: " << r.node << " left the ISR (" << r.lag_batches << " batches, "
                                  << r.lag_bytes << " bytes, " << r.lag_time.count() << " ms behind, " << r.state << ")"
                                  << std::endl;
                    replication->set_in_sync(waiting_set());
                } else if (r.state == "streaming" && r.lag_batches == 0) {
                    // Wait for it before it is a member: from now on confirms
                    // need it too, and it has everything confirmed so far.
                    auto add = waiting_set();
                    add.insert(r.node);
                    replication->set_in_sync(add);
                    if (change_isr(r.node, true))
                        std::cerr << "sluiced: cluster: " << r.node << " joined the ISR" << std::endl;
                    replication->set_in_sync(waiting_set());
                }
            }
            if (Clock::now() >= next_view) {
                next_view = Clock::now() + std::chrono::seconds(1);
                refresh_view("leader");
            }
        }
    }
};

ClusterNode::ClusterNode(ClusterConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}

ClusterNode::~ClusterNode() { stop(); }

void ClusterNode::stop() {
    if (impl_->stopped) return;
    impl_->stopped = true;
    impl_->stopping = true;
    if (impl_->thread.joinable()) impl_->thread.join();
    if (impl_->watchdog.joinable()) impl_->watchdog.join();
    if (impl_->replication) impl_->replication->stop();
    if (impl_->lease) impl_->etcd.lease_revoke(impl_->lease);  // its keys go now: a successor need not wait
}

void ClusterNode::request_stop() noexcept { impl_->stopping = true; }

std::string ClusterNode::join(Store& store) {
    Impl& d = *impl_;
    const fs::path id_file = fs::path(d.cfg.data_dir) / "cluster.json";
    const bool have_identity = read_identity(id_file, d.identity);
    // The cluster's id: created by the first node that asks.
    std::string cluster_id;
    if (!d.retry("reading the cluster id", [&] {
            bool created = false;
            const std::string fresh = random_id();
            if (!d.etcd.txn({EtcdCompare{d.key("cluster-id"), EtcdCompare::Target::version, EtcdCompare::Result::equal, 0, ""}},
                            {EtcdOp{EtcdOp::Kind::put, d.key("cluster-id"), fresh, "", 0}}, {}, created, nullptr))
                return false;
            std::vector<EtcdKV> kv;
            if (!d.etcd.range(d.key("cluster-id"), "", kv) || kv.empty()) return false;
            cluster_id = kv[0].value;
            return true;
        }))
        return "stopped";
    if (have_identity && d.identity.cluster_id != cluster_id)
        return "the data dir " + d.cfg.data_dir + " belongs to cluster '" + d.identity.cluster + "' (id " +
               d.identity.cluster_id + "), not to '" + d.cfg.name + "' (id " + cluster_id +
               ") at these etcd endpoints; point --data-dir at this cluster's data or an empty directory";
    if (have_identity && d.identity.node != d.cfg.node_id)
        return "the data dir " + d.cfg.data_dir + " is node '" + d.identity.node + "''s, not '" + d.cfg.node_id + "'s";
    if (!have_identity) {
        bool initialized = false;
        if (!d.retry("reading the cluster state", [&] {
                std::vector<EtcdKV> kv;
                if (!d.etcd.range(d.key("initialized"), "", kv)) return false;
                initialized = !kv.empty();
                return true;
            }))
            return "stopped";
        // Data of no cluster joining a running one would be replaced by a
        // snapshot: refuse rather than drop it silently.
        if (initialized && store_has_data(store))
            return "the data dir " + d.cfg.data_dir + " holds data but belongs to no cluster, and cluster '" +
                   d.cfg.name + "' is already running: start this node with an empty data dir (it copies the "
                   "leader's), or move the data away";
        d.identity = {d.cfg.name, cluster_id, d.cfg.node_id, random_id()};
        if (!write_identity(id_file, d.identity)) return "cannot write " + id_file.string();
    }
    d.me.instance = d.identity.instance;
    if (!d.retry("granting a lease", [&] { return d.grant_lease(); })) return "stopped";
    std::string error;
    if (!d.retry("registering this node", [&] {
            error = d.register_node("follower");
            return error.rfind("etcd: ", 0) != 0;
        }))
        return "stopped";
    if (!error.empty()) return error;
    std::cerr << "sluiced: cluster: node " << d.me.node << " joined cluster '" << d.cfg.name << "' (id " << cluster_id
              << ") through etcd at " << d.etcd.endpoint() << std::endl;
    return "";
}

uint64_t ClusterNode::run_follower(std::unique_ptr<Store>& store, const storage::StoreOptions& store_options) {
    Impl& d = *impl_;
    // Replicating while following; stopped (the store idle) to campaign.
    std::unique_ptr<ReplicationFollower> follower;
    TcpProxy proxy;
    auto target = [&d](bool amqp) {
        return [&d, amqp]() -> std::pair<std::string, uint16_t> {
            std::lock_guard lk(d.mu);
            if (d.leader.node.empty() || d.leader.node == d.me.node) return {"", 0};
            return {d.leader.host, amqp ? d.leader.amqp : d.leader.http};
        };
    };
    std::string err = proxy.listen(d.cfg.bind_host.empty() ? "" : d.cfg.bind_host, d.cfg.amqp_port, target(true));
    if (err.empty() && d.cfg.http_port) err = proxy.listen(d.cfg.bind_host, d.cfg.http_port, target(false));
    if (!err.empty()) std::cerr << "sluiced: cluster: forwarding to the leader: " << err << std::endl;
    proxy.start();
    std::string previous;  // the last leader followed
    uint64_t revoked_epoch = 0;  // the epoch whose leader's lease this node revoked
    auto next_view = Clock::now();
    bool said_waiting = false;
    while (!d.stopping) {
        if (!d.keep_lease_alive()) {
            // Our lease is gone (etcd was unreachable too long): a new one.
            if (!d.grant_lease()) {
                std::this_thread::sleep_for(std::chrono::milliseconds(500));
                continue;
            }
            d.register_node("follower");
        }
        Address l;
        uint64_t e = 0;
        bool present = false;
        int64_t leader_lease = 0;
        if (d.read_leader(l, e, present, &leader_lease)) {
            if (present && l.node != d.me.node && follower && e == revoked_epoch) {
                // Revoked already; the key goes with the lease.
            } else if (present && l.node != d.me.node && follower && d.leader_epoch == e) {
                // A leader killed (kill -9, a crash) leaves its lease to run for
                // up to the TTL. Its host answering our reconnects with resets
                // means no process serves its replication port: it is gone
                // (a partitioned or hung one would time out instead). Revoke
                // its lease so an in-sync node takes over now; should it be
                // alive after all, it finds its key gone and steps down, and
                // it can confirm nothing meanwhile without the ISR's acks.
                auto st = follower->status();
                if (st.streamed_from_leader && st.refused >= 3 && leader_lease) {
                    std::cerr << "sluiced: cluster: " << l.node << "'s replication port refuses connections (" << st.refused
                              << " in a row): its process is gone; revoking its lease" << std::endl;
                    d.etcd.lease_revoke(leader_lease);
                    revoked_epoch = e;
                }
            }
            if (present && l.node != d.me.node) {
                bool changed;
                {
                    std::lock_guard lk(d.mu);
                    changed = d.leader.node != l.node || d.leader_epoch != e;
                    d.leader = l;
                    d.leader_epoch = e;
                }
                if (changed) {
                    std::cerr << "sluiced: cluster: following " << l.node << " (epoch " << e << ") at " << l.host
                              << std::endl;
                    proxy.close_connections();
                    previous = l.node;
                }
                if (!follower)
                    follower = std::make_unique<ReplicationFollower>(
                        store, ReplicationFollower::Options{d.identity.cluster_id, d.me.node, store_options});
                follower->follow(l.host, l.repl, e);
                said_waiting = false;
            } else if (!present) {
                bool initialized = true;
                std::vector<EtcdKV> kv;
                Isr seen;
                if (d.etcd.range(d.key("initialized"), "", kv)) initialized = !kv.empty();
                if (d.read_isr(seen) && (seen.members.count(d.me.node) || !initialized)) {
                    // Stop applying before the store changes hands.
                    follower.reset();
                    if (uint64_t won = d.campaign(previous, initialized, seen)) {
                        proxy.stop();
                        {
                            std::lock_guard lk(d.mu);
                            d.leader = d.me;
                            d.leader_epoch = won;
                        }
                        std::cerr << "sluiced: cluster: " << d.me.node << " is the leader (epoch " << won << ")"
                                  << std::endl;
                        return won;
                    }
                    // Lost the race: follow whoever won (next round).
                } else if (!said_waiting) {
                    std::cerr << "sluiced: cluster: no leader, and " << d.me.node
                              << " is not in the ISR: waiting for an in-sync node to lead" << std::endl;
                    said_waiting = true;
                }
            }
        }
        if (Clock::now() >= next_view) {
            next_view = Clock::now() + std::chrono::seconds(1);
            d.refresh_view("follower");
        }
        std::this_thread::sleep_for(kTick);
    }
    return 0;
}

std::string ClusterNode::lead(Store& store, uint64_t epoch, std::function<void(const std::string&)> lost) {
    Impl& d = *impl_;
    d.epoch = epoch;
    d.leading_store = &store;
    d.lost = std::move(lost);
    ReplicationLeader::Options ro;
    ro.bind_host = d.cfg.bind_host;
    ro.port = d.cfg.replication_port;
    ro.cluster_id = d.identity.cluster_id;
    ro.epoch = epoch;
    ro.ring_bytes = d.cfg.ring_bytes;
    ro.snapshot_dir = (fs::path(d.cfg.data_dir) / "snapshots").string();
    d.replication = std::make_unique<ReplicationLeader>(store, ro);
    if (!d.read_isr(d.isr)) return "reading the ISR: " + d.etcd.error();
    d.ambiguous.clear();
    // Not itself: its own commit callbacks are held for the replicas only
    // after its own sync.
    d.replication->set_in_sync(d.waiting_set());
    std::string err = d.replication->start();
    if (!err.empty()) return err;
    d.etcd.put(d.key("nodes/" + d.me.node), address_json(d.me, "leader"), d.lease);
    {
        // Not the view it had as a follower: itself as leader until the
        // coordinator's first refresh (at once, on its thread).
        ClusterNodeStatus self;
        self.node = d.me.node;
        self.role = "leader";
        self.alive = true;
        self.in_sync = true;
        self.host = d.me.host;
        self.amqp_port = d.me.amqp;
        self.http_port = d.me.http;
        self.replication_port = d.me.repl;
        self.epoch = epoch;
        std::lock_guard lk(d.mu);
        d.view = {self};
    }
    d.publish_safe_until();
    d.thread = std::thread([&d] {
        pthread_setname_np(pthread_self(), "cluster-lead");
        d.lead_loop();
    });
    d.watchdog = std::thread([&d] {
        pthread_setname_np(pthread_self(), "cluster-watch");
        d.watch();
    });
    return "";
}

std::vector<ClusterNodeStatus> ClusterNode::nodes() const {
    std::lock_guard lk(impl_->mu);
    return impl_->view;
}

}  // namespace sluice::net
