#include "net/shovels.hpp"

#include <iostream>

#include "broker/broker.hpp"

namespace sluice::net {

namespace {
constexpr std::string_view kComponent = "shovel";
}

Shovels::Shovels(boost::asio::io_context& io, broker::Broker& broker, LocalBroker local)
    : io_(io), broker_(broker), local_(std::move(local)) {}

Shovels::~Shovels() { stop(); }

void Shovels::start() {
    if (started_) return;
    started_ = true;
    broker_.parameters().watch(kComponent, this);
}

void Shovels::stop() {
    if (!started_) return;
    started_ = false;
    broker_.parameters().watch(kComponent, nullptr);
    for (auto& [key, e] : shovels_)
        if (e.shovel) e.shovel->stop();
    shovels_.clear();
}

std::vector<ShovelStatus> Shovels::status() const {
    std::vector<ShovelStatus> out;
    out.reserve(shovels_.size());
    for (const auto& [key, e] : shovels_) out.push_back(e.shovel ? e.shovel->status() : e.failed);
    return out;
}

bool Shovels::restart(std::string_view vhost, std::string_view name) {
    auto it = shovels_.find(std::pair<std::string, std::string>(vhost, name));
    if (it == shovels_.end()) return false;
    if (it->second.shovel) it->second.shovel->restart();
    return true;
}

void Shovels::parameter_set(const broker::RuntimeParameter& p) {
    parameter_cleared(p.vhost, p.name);  // a changed definition starts afresh, as RabbitMQ's does
    Entry e;
    ShovelDefinition def;
    std::string problem = parse_shovel_definition(p.value, def);
    if (!problem.empty()) {
        // Only a stored value can get here (the API validates first).
        std::cerr << "sluiced: shovel '" << p.name << "' in vhost '" << p.vhost << "': " << problem << std::endl;
        e.failed.vhost = p.vhost;
        e.failed.name = p.name;
        e.failed.state = "terminated";
        e.failed.reason = problem;
    } else {
        std::string vhost = p.vhost, name = p.name;
        e.shovel = std::make_shared<Shovel>(io_, local_, vhost, name, std::move(def), [this, vhost, name] {
            broker_.parameters().clear(kComponent, vhost, name);  // done: it deletes itself
        });
        e.shovel->start();
    }
    shovels_.insert_or_assign({p.vhost, p.name}, std::move(e));
}

void Shovels::parameter_cleared(std::string_view vhost, std::string_view name) {
    auto it = shovels_.find(std::pair<std::string, std::string>(vhost, name));
    if (it == shovels_.end()) return;
    if (it->second.shovel) it->second.shovel->stop();
    shovels_.erase(it);
}

}  // namespace sluice::net
