// Runtime parameters, as RabbitMQ's /api/parameters/{component}/{vhost}/{name}:
// values that a component (today only "shovel") keeps per vhost and acts on.
// The broker keeps each value as the JSON text it was given and does not read
// it; the component that owns it (net/shovels.hpp for "shovel") parses and
// validates it.
//
// Durable: each parameter is one record in the store's `meta` column,
//   'r' longstr(component) longstr(vhost) name → value (JSON text)
// written through Durability::put_record with the next batch, so it is in the
// store once the next sync returns (the API answers after that sync).
//
// A component that acts on its parameters registers a Watcher: it is told of
// every change after the change is made (and, on registration, of every
// parameter it already has).
//
// Thread-safety: the broker thread only.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace sluice::storage {
class Store;
}

namespace sluice::broker {

class Durability;

struct RuntimeParameter {
    std::string component;
    std::string vhost;
    std::string name;
    std::string value;  // JSON text
};

class RuntimeParameters {
public:
    class Watcher {
    public:
        virtual ~Watcher() = default;
        virtual void parameter_set(const RuntimeParameter& p) = 0;
        virtual void parameter_cleared(std::string_view vhost, std::string_view name) = 0;
    };

    explicit RuntimeParameters(Durability& durability) : durability_(durability) {}

    // Null if there is none.
    const RuntimeParameter* find(std::string_view component, std::string_view vhost, std::string_view name) const;
    // Creates or replaces. True if it was created.
    bool put(RuntimeParameter p);
    // False if there was none.
    bool clear(std::string_view component, std::string_view vhost, std::string_view name);
    // Every parameter of a deleted vhost goes with it.
    void remove_vhost(std::string_view vhost);
    // In (component, vhost, name) order; "" matches any component or vhost.
    std::vector<const RuntimeParameter*> list(std::string_view component = {}, std::string_view vhost = {}) const;

    // `component`'s parameters are reported to `w` (null: no one), starting
    // with those that exist now.
    void watch(std::string_view component, Watcher* w);

    // Replaces what is in memory with the store's records.
    void recover(const storage::Store& store);

private:
    using Key = std::tuple<std::string, std::string, std::string>;
    Durability& durability_;
    std::map<Key, RuntimeParameter, std::less<>> params_;
    std::map<std::string, Watcher*, std::less<>> watchers_;
    Watcher* watcher(std::string_view component) const;
};

}  // namespace sluice::broker
