#include "broker/broker.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "broker/random_bytes.hpp"
#include "broker/session.hpp"
#include "net/amqp/wire.hpp"
#include "storage/store.hpp"

namespace sluice::broker {

uint64_t Broker::system_now_ms() {
    using namespace std::chrono;
    return static_cast<uint64_t>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

namespace {

std::string vhost_key(std::string_view name) {
    std::string k = "v";
    k.append(name);
    return k;
}

void put_i64(std::string& out, int64_t v) { amqp::put_u64(out, static_cast<uint64_t>(v)); }

}  // namespace

Broker::Broker(BrokerConfig config) : config_(std::move(config)) {
    create_defaults();
    durability_.set_backlog_limit(config_.store_backlog_limit, [this] { on_store_caught_up(); });
}

void Broker::on_store_caught_up() {
    std::vector<Session*> paused;
    paused.swap(store_paused_);
    for (Session* s : paused) s->on_store_caught_up();  // unregister_session keeps the list current
}

Broker::~Broker() = default;

void Broker::unregister_session(Session* s) {
    auto it = std::find(sessions_.begin(), sessions_.end(), s);
    if (it != sessions_.end()) {
        *it = sessions_.back();
        sessions_.pop_back();
    }
    store_paused_.erase(std::remove(store_paused_.begin(), store_paused_.end(), s), store_paused_.end());
}

void Broker::set_alarm(Alarm alarm, bool on) {
    const bool was_active = alarm_active();
    const auto bit = static_cast<uint8_t>(alarm);
    alarms_ = on ? (alarms_ | bit) : (alarms_ & ~bit);
    if (alarm_active() == was_active) return;  // blocked stays blocked; the reason is sent once
    std::vector<Session*> sessions = sessions_;  // a session may go away meanwhile
    for (Session* s : sessions)
        if (std::find(sessions_.begin(), sessions_.end(), s) != sessions_.end()) s->on_alarm(on, alarm_reason());
}

std::string Broker::alarm_reason() const {
    if (alarm_active(Alarm::memory) && alarm_active(Alarm::disk)) return "low on memory & disk";
    if (alarm_active(Alarm::memory)) return "low on memory";
    if (alarm_active(Alarm::disk)) return "low on disk";
    return "";
}

void Broker::tick(uint32_t unix_seconds) {
    now_s_ = unix_seconds;
    if (config_.consumer_timeout_ms == 0) return;
    // Closing a channel never ends its session (nor any other), so the list
    // stays as it is while we walk it.
    for (size_t i = 0; i < sessions_.size(); ++i) sessions_[i]->check_delivery_timeouts(now_s_, config_.consumer_timeout_ms);
}

VHost* Broker::find_vhost(std::string_view name) {
    auto it = vhosts_.find(name);
    return it == vhosts_.end() ? nullptr : it->second.vhost.get();
}

std::vector<VHost*> Broker::vhosts() const {
    std::vector<VHost*> out;
    out.reserve(vhosts_.size());
    for (const auto& [name, e] : vhosts_) out.push_back(e.vhost.get());
    std::sort(out.begin(), out.end(), [](const VHost* a, const VHost* b) { return a->name() < b->name(); });
    return out;
}

const VHostSettings* Broker::vhost_settings(std::string_view name) const {
    auto it = vhosts_.find(name);
    return it == vhosts_.end() ? nullptr : &it->second.settings;
}

void Broker::write_vhost(std::string_view name, const VHostSettings& s) {
    std::string v;
    amqp::put_longstr(v, s.description);
    amqp::put_u16(v, static_cast<uint16_t>(std::min<size_t>(s.tags.size(), UINT16_MAX)));
    for (size_t i = 0; i < s.tags.size() && i < UINT16_MAX; ++i) amqp::put_longstr(v, s.tags[i]);
    put_i64(v, s.limits.max_connections);
    put_i64(v, s.limits.max_queues);
    durability_.put_record(vhost_key(name), v);
}

VHost* Broker::put_vhost(std::string_view name, std::string description, std::vector<std::string> tags) {
    auto it = vhosts_.find(name);
    if (it == vhosts_.end()) {
        VHostEntry e;
        e.vhost = std::make_unique<VHost>(*this, std::string(name));
        it = vhosts_.emplace(std::string(name), std::move(e)).first;
    }
    it->second.settings.description = std::move(description);
    it->second.settings.tags = std::move(tags);
    write_vhost(name, it->second.settings);
    return it->second.vhost.get();
}

bool Broker::set_vhost_limits(std::string_view name, const VHostLimits& limits) {
    auto it = vhosts_.find(name);
    if (it == vhosts_.end()) return false;
    it->second.settings.limits = limits;
    write_vhost(name, it->second.settings);
    return true;
}

bool Broker::delete_vhost(std::string_view name) {
    auto it = vhosts_.find(name);
    if (it == vhosts_.end()) return false;
    VHost* v = it->second.vhost.get();
    // Its connections first: their channels refer to the vhost.
    std::vector<Session*> sessions = sessions_;
    for (Session* s : sessions)
        if (std::find(sessions_.begin(), sessions_.end(), s) != sessions_.end() && s->vhost() == v)
            s->close_for_deleted_vhost("vhost '" + std::string(name) + "' is deleted");
    // Then what it holds, through the usual paths, so the store forgets it too.
    std::vector<QueuePtr> queues;
    for (const auto& [qname, q] : v->queues()) queues.push_back(q);
    for (const QueuePtr& q : queues)
        if (!q->deleted()) v->delete_queue(q);
    std::vector<std::string> exchanges;
    for (const auto& [ename, e] : v->exchanges())
        if ((e->durable() || e->delayed()) && !ename.empty() && ename.substr(0, 4) != "amq.")
            exchanges.push_back(ename);  // a delayed one has a log to drop
    for (const std::string& e : exchanges) v->delete_exchange(e, false);
    access_.remove_vhost(name);
    parameters_.remove_vhost(name);
    durability_.remove_record(vhost_key(name));
    vhosts_.erase(it);
    return true;
}

bool Broker::delete_user(std::string_view name) {
    if (!access_.delete_user(name)) return false;
    std::vector<Session*> sessions = sessions_;
    for (Session* s : sessions)
        if (std::find(sessions_.begin(), sessions_.end(), s) != sessions_.end() && !s->closed() && s->user() == name)
            s->connection_error(amqp_error(reply::connection_forced, "user '" + std::string(name) + "' is deleted"));
    return true;
}

void Broker::create_defaults() {
    put_vhost("/", "Default virtual host", {});
    User u;
    u.name = config_.default_user;
    u.password_hash = hash_password(config_.default_password);
    u.tags = {"administrator"};
    access_.put_user(std::move(u));
    access_.set_permissions(config_.default_user, "/", {".*", ".*", ".*"});
}

void Broker::recover_access() {
    storage::Store* store = durability_.store();
    if (!store) return;
    if (!access_.recover(*store)) {
        // First start: the defaults become records.
        vhosts_.clear();
        create_defaults();
        access_.mark_initialised();
        return;
    }
    parameters_.recover(*store);
    std::map<std::string, VHostSettings> stored;
    store->scan(storage::Column::meta, "v", "w", [&](std::string_view key, std::string_view value) {
        amqp::WireReader r(value);
        VHostSettings s;
        s.description = std::string(r.longstr());
        uint16_t ntags = r.u16();
        for (uint16_t i = 0; i < ntags && r.ok(); ++i) s.tags.emplace_back(r.longstr());
        s.limits.max_connections = static_cast<int64_t>(r.u64());
        s.limits.max_queues = static_cast<int64_t>(r.u64());
        if (r.ok()) stored.emplace(std::string(key.substr(1)), std::move(s));
        return true;
    });
    std::erase_if(vhosts_, [&](const auto& kv) { return !stored.count(kv.first); });
    for (auto& [name, settings] : stored) {
        auto it = vhosts_.find(name);
        if (it == vhosts_.end()) {
            VHostEntry e;
            e.vhost = std::make_unique<VHost>(*this, name);
            it = vhosts_.emplace(name, std::move(e)).first;
        }
        it->second.settings = std::move(settings);
    }
}

RecoveryStats Broker::recover() {
    recover_access();
    return recovery_ = durability_.recover(*this);
}

Broker::Login Broker::login(std::string_view user, std::string_view password, bool from_loopback) const {
    if (!access_.check_password(user, password)) return Login::bad_credentials;
    if (!from_loopback && config_.default_user_loopback_only && user == config_.default_user) return Login::loopback_only;
    return Login::ok;
}

Broker::Login Broker::login_external(std::string_view user, bool from_loopback) const {
    if (!access_.find_user(user)) return Login::bad_credentials;
    if (!from_loopback && config_.default_user_loopback_only && user == config_.default_user) return Login::loopback_only;
    return Login::ok;
}

Status Broker::check_vhost_open(std::string_view user, std::string_view name) const {
    auto it = vhosts_.find(name);
    if (it == vhosts_.end()) return amqp_error(reply::not_allowed, "vhost " + std::string(name) + " not found");
    if (!access_.permissions(user, name))
        return amqp_error(reply::not_allowed,
                          "access to vhost '" + std::string(name) + "' refused for user '" + std::string(user) + "'");
    int64_t limit = it->second.settings.limits.max_connections;
    if (limit >= 0) {
        const VHost* v = it->second.vhost.get();
        int64_t open = std::count_if(sessions_.begin(), sessions_.end(), [v](const Session* s) { return s->vhost() == v; });
        if (open >= limit)
            return amqp_error(reply::not_allowed, "access to vhost '" + std::string(name) + "' refused for user '" +
                                                      std::string(user) + "': connection limit (" +
                                                      std::to_string(limit) + ") is reached");
    }
    return std::nullopt;
}

Status Broker::check_queue_limit(const VHost& vhost, std::string_view queue) const {
    auto it = vhosts_.find(vhost.name());
    if (it == vhosts_.end()) return std::nullopt;
    int64_t limit = it->second.settings.limits.max_queues;
    if (limit < 0 || vhost.find_queue(queue) || int64_t(vhost.queues().size()) < limit) return std::nullopt;
    return amqp_error(reply::precondition_failed, "cannot declare queue '" + std::string(queue) +
                                                      "': queue limit in vhost '" + vhost.name() + "' (" +
                                                      std::to_string(limit) + ") is reached");
}

std::string Broker::unique_name(std::string_view prefix) {
    // From the CSPRNG: a reply-to token is a capability (whoever knows it
    // can send replies to, and so steal, another client's RPC), and
    // server-named queues and consumer tags must not be guessable either.
    // 22 characters of 6 bits: 132 bits.
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char bytes[22];
    if (!random_bytes(bytes, sizeof bytes)) std::abort();  // no generator at all: never hand out guessable names
    std::string s(prefix);
    for (unsigned char b : bytes) s.push_back(kAlphabet[b & 63]);  // 256 = 4 × 64: uniform
    return s;
}

std::string Broker::register_reply_channel(Channel* channel) {
    std::string token = unique_name("");
    reply_channels_.emplace(token, channel);
    return token;
}

void Broker::unregister_reply_channel(std::string_view token) {
    auto it = reply_channels_.find(token);
    if (it != reply_channels_.end()) reply_channels_.erase(it);
}

Channel* Broker::find_reply_channel(std::string_view token) const {
    auto it = reply_channels_.find(token);
    return it == reply_channels_.end() ? nullptr : it->second;
}

}  // namespace sluice::broker
