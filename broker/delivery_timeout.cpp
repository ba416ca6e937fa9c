// consumer_timeout (RabbitMQ's name): a delivery left unacknowledged too long
// closes its channel with 406 PRECONDITION_FAILED, which requeues every
// unacked message of that channel for other consumers.
//
// Checked once a second from Broker::tick. Unacked deliveries are kept in
// tag order, and tags grow with time, so the oldest is at the front: the
// check costs one comparison per channel, whatever the number of unacked
// messages.
#include "broker/broker.hpp"
#include "broker/channel.hpp"
#include "broker/session.hpp"

namespace sluice::broker {

Status Channel::check_delivery_timeout(uint32_t now_s, uint32_t timeout_ms) const {
    if (unacked_.empty() || closing_) return std::nullopt;
    const uint32_t delivered_s = unacked_.front().delivered_s;
    // Whole seconds: a delivery times out between timeout_ms and about one
    // second later, as often as RabbitMQ's own periodic check runs.
    if (now_s <= delivered_s || uint64_t(now_s - delivered_s) * 1000 <= timeout_ms) return std::nullopt;
    return amqp_error(reply::precondition_failed,
                      "delivery acknowledgement on channel " + std::to_string(id_) +
                          " timed out. Timeout value used: " + std::to_string(timeout_ms) +
                          " ms. This timeout value can be configured, see consumers doc guide to learn more");
}

void Session::check_delivery_timeouts(uint32_t now_s, uint32_t timeout_ms) {
    if (state_ != State::running) return;
    bool closed_any = false;
    for (const auto& ch : channels_) {
        if (!ch) continue;
        if (Status st = ch->check_delivery_timeout(now_s, timeout_ms)) {
            ch->start_close(*st);
            closed_any = true;
        }
    }
    if (closed_any) host_.request_flush();
}

}  // namespace sluice::broker
