// The x-delayed-message exchange's arguments and header (broker/exchange.hpp:
// parse_delayed_type, x_delay), as RabbitMQ's delayed message plugin reads
// them. Held messages themselves: delayed_messages_test.cpp.
#include <gtest/gtest.h>

#include <string>

#include "broker/exchange.hpp"

namespace sluice::broker {
namespace {

// x-delayed-message (RabbitMQ's delayed message plugin): x-delayed-type
// and the x-delay header as the plugin reads them.
TEST(DelayedExchange, XDelayedTypeMustNameAnotherExistingType) {
    amqp::FieldTable args;
    ExchangeType t = ExchangeType::direct;
    DelayedTypeError e = parse_delayed_type(args, t);
    EXPECT_EQ(e.code, 406);
    EXPECT_EQ(e.text, "Invalid argument, 'x-delayed-type' must be an existing exchange type");
    args.set("x-delayed-type", amqp::FieldValue(int32_t(1)));
    EXPECT_EQ(parse_delayed_type(args, t).code, 406);
    args.set("x-delayed-type", amqp::FieldValue(std::string("x-delayed-message")));
    e = parse_delayed_type(args, t);
    EXPECT_EQ(e.code, 406);
    EXPECT_EQ(e.text, "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'");
    args.set("x-delayed-type", amqp::FieldValue(std::string("nope")));
    e = parse_delayed_type(args, t);
    EXPECT_EQ(e.code, 503);
    EXPECT_EQ(e.text, "unknown exchange type 'nope'");
    args.set("x-delayed-type", amqp::FieldValue(std::string("topic")));
    EXPECT_EQ(parse_delayed_type(args, t).code, 0);
    EXPECT_EQ(t, ExchangeType::topic);
    Exchange ex("dx", ExchangeType::delayed, true, false, false, args);
    EXPECT_EQ(ex.routing_type(), ExchangeType::topic);
    EXPECT_TRUE(ex.uses_routing_key());
    EXPECT_TRUE(ex.needs_properties());  // it reads x-delay
}

TEST(DelayedExchange, XDelayIsReadAsThePluginReadsIt) {
    auto delay = [](amqp::FieldValue v) {
        amqp::FieldTable h;
        h.set("x-delay", std::move(v));
        return x_delay(&h);
    };
    EXPECT_EQ(x_delay(nullptr), std::nullopt);
    EXPECT_EQ(x_delay(&static_cast<const amqp::FieldTable&>(amqp::FieldTable{})), std::nullopt);
    EXPECT_EQ(delay(amqp::FieldValue(int8_t(5))), 5);
    EXPECT_EQ(delay(amqp::FieldValue(uint32_t(4000000000u))), 4000000000);
    EXPECT_EQ(delay(amqp::FieldValue(int64_t(-3))), -3);
    EXPECT_EQ(delay(amqp::FieldValue(1500.9)), 1500);               // a double is truncated
    EXPECT_EQ(delay(amqp::FieldValue(2.5f)), 2);                     // a float too
    EXPECT_EQ(delay(amqp::FieldValue(amqp::Decimal{2, 12345})), 123);  // 123.45
    EXPECT_EQ(delay(amqp::FieldValue(std::string("250"))), 250);     // binary_to_integer
    EXPECT_EQ(delay(amqp::FieldValue(std::string("-7"))), -7);
    EXPECT_EQ(delay(amqp::FieldValue(std::string("soon"))), std::nullopt);
    EXPECT_EQ(delay(amqp::FieldValue(std::string("1.5"))), std::nullopt);
    EXPECT_EQ(delay(amqp::FieldValue(true)), std::nullopt);
    EXPECT_EQ(kMaxDelayMs, 4294967295);
}

}  // namespace
}  // namespace sluice::broker
