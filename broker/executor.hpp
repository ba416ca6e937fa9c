// How work reaches the broker thread from elsewhere (storage completions).
// net/ implements it with asio::post; a unit test with a plain queue.
#pragma once

#include <functional>

namespace sluice::broker {

class Executor {
public:
    virtual ~Executor() = default;
    // Runs fn on the broker thread, later (never inline).
    virtual void post(std::function<void()> fn) = 0;
};

}  // namespace sluice::broker
