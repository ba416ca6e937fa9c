// Sender-selected distribution, as RabbitMQ does it (its "Sender-selected
// Distribution" extension; rabbit_basic:header_routes in 3.10): a message
// whose `CC` or `BCC` header is an array of long strings is routed, through
// the exchange it was published to and by that exchange's rules, with each
// of those strings as a routing key besides its own. `BCC` is removed before
// the message reaches any queue, so no consumer sees the hidden list; `CC`
// stays. Array elements of other types are ignored; a `CC` or `BCC` header
// that is not an array refuses the publish (406, RabbitMQ's text).
//
// Dead-lettering keeps it (dead_letter.cpp): without a dead-letter routing
// key the copy is routed with every key the original was (BCC's included);
// with one, with that key alone and without `CC`.
//
// Thread-safety: pure functions over one message being built.
#pragma once

#include <memory>

#include "broker/amqp_error.hpp"
#include "broker/message.hpp"

namespace sluice::broker {

// For a message just assembled from basic.publish: attaches the CC and BCC
// routing keys (Message::extra_routing_keys) and, when there is a BCC
// header, replaces `message` by a copy without it. Cheap when the encoded
// properties cannot hold either header (no byte scan finds "CC").
Status apply_sender_selected(std::shared_ptr<Message>& message);

}  // namespace sluice::broker
