// Private to the channel_*.cpp files: Channel::send, which needs the
// generated method codec (kept out of channel.hpp, which queues include).
#pragma once

#include "broker/channel.hpp"
#include "broker/session.hpp"
#include "net/amqp/methods.hpp"

namespace sluice::broker {

template <typename M>
void Channel::send(const M& method) {
    amqp::write_method(session_.output(), id_, method);
    session_.wrote_output();
}

}  // namespace sluice::broker
