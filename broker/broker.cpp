#include "broker/broker.hpp"

#include <algorithm>
#include <chrono>

#include "broker/session.hpp"

namespace sluice::broker {

uint64_t Broker::system_now_ms() {
    using namespace std::chrono;
    return static_cast<uint64_t>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

Broker::Broker(BrokerConfig config) : config_(std::move(config)), rng_(std::random_device{}()) {
    default_vhost_ = std::make_unique<VHost>(*this, "/");
}

Broker::~Broker() = default;

void Broker::unregister_session(Session* s) {
    auto it = std::find(sessions_.begin(), sessions_.end(), s);
    if (it != sessions_.end()) {
        *it = sessions_.back();
        sessions_.pop_back();
    }
}

void Broker::set_disk_alarm(bool on) {
    if (on == disk_alarm_) return;
    disk_alarm_ = on;
    std::vector<Session*> sessions = sessions_;  // a session may go away meanwhile
    for (Session* s : sessions)
        if (std::find(sessions_.begin(), sessions_.end(), s) != sessions_.end()) s->on_alarm(on, alarm_reason());
}

VHost* Broker::find_vhost(std::string_view name) {
    return name == default_vhost_->name() ? default_vhost_.get() : nullptr;
}

bool Broker::authenticate(std::string_view user, std::string_view password, bool from_loopback) const {
    if (user != config_.default_user || password != config_.default_password) return false;
    return from_loopback || !config_.default_user_loopback_only;
}

std::string Broker::unique_name(std::string_view prefix) {
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string s(prefix);
    uint64_t bits = 0;
    for (int i = 0; i < 22; ++i) {
        if (i % 10 == 0) bits = rng_();
        s.push_back(kAlphabet[bits & 63]);
        bits >>= 6;
    }
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
