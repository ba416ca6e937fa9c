// The dynamic shovels of this broker: one Shovel (shovel.hpp) per runtime
// parameter of component "shovel". It watches the broker's parameters, so a
// shovel starts when its parameter is set (through the API, a definitions
// import, or the store at broker start) and stops when it is cleared or its
// vhost is deleted; a completed shovel (src-delete-after) clears its own
// parameter, as RabbitMQ's does.
//
// Thread-safety: the broker thread only.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "broker/runtime_parameters.hpp"
#include "net/shovel.hpp"  // and boost::asio::io_context, declared

namespace sluice::broker {
class Broker;
}

namespace sluice::net {

class Shovels final : public broker::RuntimeParameters::Watcher {
public:
    // `local`: how a URI with no host reaches this broker.
    Shovels(boost::asio::io_context& io, broker::Broker& broker, LocalBroker local);
    ~Shovels() override;

    // Starts the shovels stored, and every one set from now on.
    void start();
    // Stops every shovel (server shutdown); the parameters stay.
    void stop();
    // Every shovel's status, ordered by vhost and name.
    std::vector<ShovelStatus> status() const;
    // False if there is no such shovel.
    bool restart(std::string_view vhost, std::string_view name);

    void parameter_set(const broker::RuntimeParameter& p) override;
    void parameter_cleared(std::string_view vhost, std::string_view name) override;

private:
    struct Entry {
        std::shared_ptr<Shovel> shovel;  // null: the value did not parse (status says why)
        ShovelStatus failed;
    };
    boost::asio::io_context& io_;
    broker::Broker& broker_;
    LocalBroker local_;
    std::map<std::pair<std::string, std::string>, Entry, std::less<>> shovels_;
    bool started_ = false;
};

}  // namespace sluice::net
