// Helpers the files of Durability share (durability.cpp,
// durability_recovery.cpp, durability_stream.cpp, durability_delayed.cpp):
// the broker's objects to and from storage::records. Not for other files.
#pragma once

#include <string>
#include <memory>
#include <string_view>

#include "broker/message.hpp"
#include "net/amqp/field_table.hpp"
#include "storage/records.hpp"

namespace sluice::broker::durability_detail {

std::string encoded_arguments(const amqp::FieldTable& t);
bool decode_arguments(std::string_view bytes, amqp::FieldTable& out);
storage::records::MessageParts parts_of(const Message& m);
// A new message holding copies of `p`'s bytes.
std::shared_ptr<Message> message_of(const storage::records::MessageParts& p);
// null if `in` is not a whole message record.
std::shared_ptr<Message> decode_message(std::string_view in);

}  // namespace sluice::broker::durability_detail
