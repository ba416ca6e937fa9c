#include "broker/runtime_parameters.hpp"

#include "broker/durability.hpp"
#include "net/amqp/wire.hpp"
#include "storage/store.hpp"

namespace sluice::broker {

namespace {

std::string record_key(std::string_view component, std::string_view vhost, std::string_view name) {
    std::string k = "r";
    amqp::put_longstr(k, component);
    amqp::put_longstr(k, vhost);
    k.append(name);
    return k;
}

}  // namespace

const RuntimeParameter* RuntimeParameters::find(std::string_view component, std::string_view vhost,
                                                std::string_view name) const {
    auto it = params_.find(Key{component, vhost, name});
    return it == params_.end() ? nullptr : &it->second;
}

bool RuntimeParameters::put(RuntimeParameter p) {
    durability_.put_record(record_key(p.component, p.vhost, p.name), p.value);
    Key key{p.component, p.vhost, p.name};
    auto [it, created] = params_.insert_or_assign(std::move(key), std::move(p));
    if (Watcher* w = watcher(it->second.component)) w->parameter_set(it->second);
    return created;
}

bool RuntimeParameters::clear(std::string_view component, std::string_view vhost, std::string_view name) {
    auto it = params_.find(Key{component, vhost, name});
    if (it == params_.end()) return false;
    durability_.remove_record(record_key(component, vhost, name));
    RuntimeParameter gone = std::move(it->second);
    params_.erase(it);
    if (Watcher* w = watcher(gone.component)) w->parameter_cleared(gone.vhost, gone.name);
    return true;
}

void RuntimeParameters::remove_vhost(std::string_view vhost) {
    std::vector<std::pair<std::string, std::string>> doomed;
    for (const auto& [key, p] : params_)
        if (p.vhost == vhost) doomed.emplace_back(p.component, p.name);
    for (const auto& [component, name] : doomed) clear(component, vhost, name);
}

std::vector<const RuntimeParameter*> RuntimeParameters::list(std::string_view component, std::string_view vhost) const {
    std::vector<const RuntimeParameter*> out;
    for (const auto& [key, p] : params_)
        if ((component.empty() || p.component == component) && (vhost.empty() || p.vhost == vhost)) out.push_back(&p);
    return out;
}

void RuntimeParameters::watch(std::string_view component, Watcher* w) {
    if (!w) {
        if (auto it = watchers_.find(component); it != watchers_.end()) watchers_.erase(it);
        return;
    }
    watchers_.insert_or_assign(std::string(component), w);
    for (const RuntimeParameter* p : list(component)) w->parameter_set(*p);
}

RuntimeParameters::Watcher* RuntimeParameters::watcher(std::string_view component) const {
    auto it = watchers_.find(component);
    return it == watchers_.end() ? nullptr : it->second;
}

void RuntimeParameters::recover(const storage::Store& store) {
    params_.clear();
    store.scan(storage::Column::meta, "r", "s", [&](std::string_view key, std::string_view value) {
        amqp::WireReader k(key.substr(1));
        RuntimeParameter p;
        p.component = std::string(k.longstr());
        p.vhost = std::string(k.longstr());
        if (!k.ok()) return true;  // damaged: skipped, not fatal
        p.name = std::string(key.substr(1 + k.position()));
        p.value = std::string(value);
        Key id{p.component, p.vhost, p.name};
        params_.insert_or_assign(std::move(id), std::move(p));
        return true;
    });
}

}  // namespace sluice::broker
