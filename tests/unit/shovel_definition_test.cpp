// A shovel's definition as RabbitMQ's shovel plugin reads it
// (net/shovel_definition.*): URIs, keys, defaults, refusals.
#include "net/shovel_definition.hpp"

#include <gtest/gtest.h>

namespace sluice::net {
namespace {

TEST(AmqpUri, HostPortUserVhostHeartbeat) {
    AmqpUri u;
    ASSERT_EQ(parse_amqp_uri("amqp://bob:s%40cret@rabbit.example:5673/v%2F1?heartbeat=5&x=y", u), "");
    EXPECT_EQ(u.host, "rabbit.example");
    EXPECT_EQ(u.port, 5673);
    EXPECT_EQ(u.user, "bob");
    EXPECT_EQ(u.password, "s@cret");
    EXPECT_EQ(u.vhost, "v/1");
    EXPECT_EQ(u.heartbeat_s, 5);
    EXPECT_EQ(u.redacted(), "amqp://bob@rabbit.example:5673/v%2F1?heartbeat=5&x=y");
}

TEST(AmqpUri, NoHostIsThisBrokerAndNoPathIsSlash) {
    AmqpUri u;
    ASSERT_EQ(parse_amqp_uri("amqp://", u), "");
    EXPECT_EQ(u.host, "");
    EXPECT_EQ(u.vhost, "/");
    EXPECT_FALSE(u.user);
    ASSERT_EQ(parse_amqp_uri("amqp:///other", u), "");
    EXPECT_EQ(u.host, "");
    EXPECT_EQ(u.vhost, "other");
    ASSERT_EQ(parse_amqp_uri("amqp://[::1]:5000", u), "");
    EXPECT_EQ(u.host, "::1");
    EXPECT_EQ(u.port, 5000);
    EXPECT_EQ(u.redacted(), "amqp://[::1]:5000");  // no password: as given
}

TEST(AmqpUri, Refusals) {
    AmqpUri u;
    EXPECT_NE(parse_amqp_uri("amqps://x", u).find("amqps"), std::string::npos);
    for (const char* bad : {"http://x", "amqp://x:0", "amqp://x:99999", "amqp://x/a/b", "amqp://x/%zz", "amqp://x/%2"})
        EXPECT_NE(parse_amqp_uri(bad, u), "") << bad;
}

TEST(ShovelDefinition, DefaultsAsRabbitMQ) {
    ShovelDefinition d;
    ASSERT_EQ(parse_shovel_definition(R"({"src-uri":"amqp://","src-queue":"a","dest-uri":["amqp://h1","amqp://h2"]})", d),
              "");
    EXPECT_EQ(d.src_queue, "a");
    EXPECT_FALSE(d.src_is_exchange);
    ASSERT_EQ(d.dest_uris.size(), 2u);
    EXPECT_EQ(d.dest_uris[1].host, "h2");
    EXPECT_EQ(d.ack_mode, AckMode::on_confirm);
    EXPECT_EQ(d.prefetch_count, 1000u);
    EXPECT_EQ(d.reconnect_delay_s, 1);
    EXPECT_EQ(d.delete_after, ShovelDefinition::DeleteAfter::never);
    EXPECT_FALSE(d.add_forward_headers);
    EXPECT_TRUE(d.dest_queue.empty());
    EXPECT_FALSE(d.dest_exchange);
}

TEST(ShovelDefinition, CurrentAndLegacyKeys) {
    ShovelDefinition d;
    ASSERT_EQ(parse_shovel_definition(R"({"src-uri":"amqp://","src-exchange":"x","src-exchange-key":"k.#",
        "dest-uri":"amqp://","dest-exchange":"y","dest-exchange-key":"z","ack-mode":"on-publish",
        "prefetch-count":10,"add-forward-headers":true,"delete-after":"queue-length","reconnect-delay":2.5,
        "dest-queue-args":{"x-max-length":5},"dest-publish-properties":{"delivery_mode":2}})", d), "");
    EXPECT_TRUE(d.src_is_exchange);
    EXPECT_EQ(d.src_exchange_key, "k.#");
    EXPECT_EQ(*d.dest_exchange, "y");
    EXPECT_EQ(*d.dest_exchange_key, "z");
    EXPECT_EQ(d.ack_mode, AckMode::on_publish);
    EXPECT_EQ(d.prefetch_count, 10u);
    EXPECT_TRUE(d.add_forward_headers);
    EXPECT_EQ(d.delete_after, ShovelDefinition::DeleteAfter::queue_length);
    EXPECT_EQ(d.reconnect_delay_s, 2.5);
    ASSERT_TRUE(d.dest_queue_args);
    EXPECT_NE(d.dest_queue_args->find("x-max-length"), nullptr);
    EXPECT_EQ(d.dest_publish_properties.delivery_mode, 2);

    ASSERT_EQ(parse_shovel_definition(R"({"src-uri":"amqp://","src-queue":"a","dest-uri":"amqp://",
        "src-prefetch-count":7,"dest-add-forward-headers":true,"src-delete-after":12})", d), "");
    EXPECT_EQ(d.prefetch_count, 7u);
    EXPECT_TRUE(d.add_forward_headers);
    EXPECT_EQ(d.delete_after, ShovelDefinition::DeleteAfter::count);
    EXPECT_EQ(d.delete_after_count, 12u);
}

TEST(ShovelDefinition, Refusals) {
    ShovelDefinition d;
    auto why = [&](const char* json) { return parse_shovel_definition(json, d); };
    EXPECT_EQ(why(R"({"src-uri":"amqp://","dest-uri":"amqp://"})"), "Must specify 'src-exchange' or 'src-queue'");
    EXPECT_EQ(why(R"({"src-uri":"amqp://","src-queue":"a","src-exchange":"x","dest-uri":"amqp://"})"),
              "Cannot specify 'src-exchange' and 'src-queue'");
    EXPECT_EQ(why(R"({"src-uri":"amqp://","src-queue":"a","dest-uri":"amqp://","dest-queue":"b","dest-exchange":"c"})"),
              "Cannot specify 'dest-exchange' and 'dest-queue'");
    EXPECT_EQ(why(R"({"src-uri":"amqp://","src-queue":"a","dest-uri":"amqp://","ack-mode":"no-ack","delete-after":3})"),
              "Cannot specify 'no-ack' and numerical 'delete-after'");
    EXPECT_NE(why(R"({"src-queue":"a","dest-uri":"amqp://"})").find("src-uri is mandatory"), std::string::npos);
    EXPECT_NE(why(R"({"src-uri":[],"src-queue":"a","dest-uri":"amqp://"})"), "");
    EXPECT_NE(why(R"({"src-uri":"amqp://","src-queue":"a","dest-uri":"amqp://","prefetch-count":0})"), "");
    EXPECT_NE(why(R"({"src-uri":"amqp://","src-queue":"a","dest-uri":"amqp://","src-delete-after":-1})"), "");
    EXPECT_NE(why(R"({"src-uri":"amqp://","src-queue":1,"dest-uri":"amqp://"})").find("src-queue"), std::string::npos);
    EXPECT_NE(why(R"({"src-uri":"amqp://","src-queue":"a","dest-uri":"amqp://","typo":1})").find("typo"),
              std::string::npos);
    EXPECT_NE(why(R"([1])"), "");
    EXPECT_NE(why("{"), "");
}

}  // namespace
}  // namespace sluice::net
