// The consistent-hash exchange's choice (broker/consistent_hash.hpp) and the
// exchange around it (broker/exchange.cpp): spread by weight, stability when
// a destination joins or leaves, independence from binding order, and
// RabbitMQ's checks of weights and arguments.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "broker/consistent_hash.hpp"
#include "broker/exchange.hpp"
#include "net/amqp/properties.hpp"

namespace sluice::broker {
namespace {

std::vector<std::string> random_keys(size_t n, uint32_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::string> keys;
    keys.reserve(n);
    for (size_t i = 0; i < n; ++i) keys.push_back("key-" + std::to_string(rng()));
    return keys;
}

ConsistentHashRing<int> ring_of(const std::vector<std::pair<int, uint32_t>>& members) {
    ConsistentHashRing<int> ring;
    for (auto [id, weight] : members) ring.add(id, stable_hash("q:queue-" + std::to_string(id)), weight);
    return ring;
}

std::map<int, size_t> counts(const ConsistentHashRing<int>& ring, const std::vector<std::string>& keys) {
    std::map<int, size_t> c;
    for (const auto& k : keys) ++c[*ring.pick(stable_hash(k))];
    return c;
}

TEST(ConsistentHashRing, SpreadFollowsWeights) {
    const auto keys = random_keys(100000, 1);
    const auto c = counts(ring_of({{1, 1}, {2, 2}, {3, 3}}), keys);
    for (int id = 1; id <= 3; ++id) {
        const double expected = keys.size() * id / 6.0;
        const double got = double(c.at(id));
        // Binomial noise is ~0.7% of the smallest share here: 3% is a
        // property of the choice, not luck.
        EXPECT_NEAR(got / expected, 1.0, 0.03) << "queue " << id << ": " << got << " of " << keys.size();
    }
}

TEST(ConsistentHashRing, SpreadHoldsForManyEqualQueues) {
    const auto keys = random_keys(100000, 2);
    std::vector<std::pair<int, uint32_t>> members;
    for (int id = 0; id < 10; ++id) members.push_back({id, 1});
    const auto c = counts(ring_of(members), keys);
    for (int id = 0; id < 10; ++id) EXPECT_NEAR(double(c.at(id)) / 10000.0, 1.0, 0.04) << "queue " << id;
}

TEST(ConsistentHashRing, AddingAQueueMovesOnlyItsShareAndOnlyToIt) {
    const auto keys = random_keys(100000, 3);
    auto ring = ring_of({{1, 1}, {2, 2}, {3, 3}});
    std::vector<int> before;
    for (const auto& k : keys) before.push_back(*ring.pick(stable_hash(k)));
    ring.add(4, stable_hash("q:queue-4"), 2);  // 2 of 8 points: a quarter of the keys
    size_t moved = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
        int now = *ring.pick(stable_hash(keys[i]));
        if (now == before[i]) continue;
        ++moved;
        ASSERT_EQ(now, 4) << "key " << keys[i] << " moved from " << before[i] << " to an old queue";
    }
    EXPECT_NEAR(double(moved) / double(keys.size()), 0.25, 0.01);
    // And back: removing it returns every key to where it was.
    ring.remove(4);
    for (size_t i = 0; i < keys.size(); ++i) ASSERT_EQ(*ring.pick(stable_hash(keys[i])), before[i]);
}

TEST(ConsistentHashRing, BindingOrderDoesNotMatter) {
    // A restart restores bindings in the store's order, not the clients'.
    const auto keys = random_keys(20000, 4);
    auto a = ring_of({{1, 1}, {2, 2}, {3, 3}});
    auto b = ring_of({{3, 3}, {1, 1}, {2, 2}});
    for (const auto& k : keys) ASSERT_EQ(*a.pick(stable_hash(k)), *b.pick(stable_hash(k)));
}

TEST(ConsistentHashRing, SecondBindingKeepsTheFirstWeight) {
    ConsistentHashRing<int> ring;
    EXPECT_EQ(ring.pick(1), nullptr);
    ring.add(1, 11, 1);
    ring.add(1, 11, 50);
    ring.add(2, 22, 1);
    const auto c = counts(ring, random_keys(20000, 5));
    EXPECT_NEAR(double(c.at(1)) / 10000.0, 1.0, 0.05);
}

TEST(ConsistentHashRing, StableHashIsFixed) {
    // Routing survives restarts and rebuilds only if this never changes.
    EXPECT_EQ(stable_hash(""), stable_hash(std::string_view("")));
    EXPECT_NE(stable_hash("a"), stable_hash("b"));
    EXPECT_EQ(stable_hash("order-42"), 0x3b7e5a43d9b8a55bULL) << std::hex << stable_hash("order-42");
}

TEST(ConsistentHashExchange, WeightsAreIntegersFromOne) {
    uint32_t w = 0;
    EXPECT_EQ(validate_hash_weight("3", w), "");
    EXPECT_EQ(w, 3u);
    EXPECT_EQ(validate_hash_weight("+7", w), "");
    EXPECT_EQ(w, 7u);
    EXPECT_EQ(validate_hash_weight("abc", w), "The binding key must be an integer: <<\"abc\">>");
    EXPECT_EQ(validate_hash_weight("", w), "The binding key must be an integer: <<\"\">>");
    EXPECT_EQ(validate_hash_weight("1.5", w), "The binding key must be an integer: <<\"1.5\">>");
    EXPECT_EQ(validate_hash_weight("0", w), "The binding key must be greater than 0");
    EXPECT_EQ(validate_hash_weight("-2", w), "The binding key must be greater than 0");
}

TEST(ConsistentHashExchange, HashArguments) {
    HashSource s;
    amqp::FieldTable args;
    EXPECT_EQ(parse_hash_source(args, s), "");
    EXPECT_EQ(s.kind, HashSource::Kind::routing_key);
    args.set("hash-header", amqp::FieldValue(std::string("hash-on")));
    EXPECT_EQ(parse_hash_source(args, s), "");
    EXPECT_EQ(s.kind, HashSource::Kind::header);
    EXPECT_EQ(s.header, "hash-on");
    args.set("hash-property", amqp::FieldValue(std::string("message_id")));
    EXPECT_EQ(parse_hash_source(args, s), "hash-header and hash-property are mutually exclusive");
    amqp::FieldTable prop;
    prop.set("hash-property", amqp::FieldValue(std::string("app_id")));
    EXPECT_EQ(parse_hash_source(prop, s), "Unsupported property: app_id");
    prop.set("hash-property", amqp::FieldValue(std::string("timestamp")));
    EXPECT_EQ(parse_hash_source(prop, s), "");
    EXPECT_EQ(s.kind, HashSource::Kind::timestamp);
}

// Exchange-to-exchange destinations: an Exchange is cheap to make in a test.
// Routes one message per random key (`set_key` puts it in `p`); how many
// went to each destination. Every message must go to exactly one.
template <typename SetKey>
std::map<const Exchange*, size_t> spread(const Exchange& chx, amqp::BasicProperties& p, uint32_t seed,
                                         SetKey set_key) {
    std::map<const Exchange*, size_t> c;
    std::vector<Destination> out;
    for (const auto& k : random_keys(20000, seed)) {
        set_key(k);
        out.clear();
        chx.route("same-routing-key", &p, out);
        EXPECT_EQ(out.size(), 1u);
        if (!out.empty()) ++c[out[0].exchange];
    }
    return c;
}

TEST(ConsistentHashExchange, RoutesOnHeaderAndSkipsMessagesWithoutIt) {
    amqp::FieldTable args;
    args.set("hash-header", amqp::FieldValue(std::string("hash-on")));
    Exchange chx("chx", ExchangeType::consistent_hash, false, false, false, args);
    Exchange a("a", ExchangeType::fanout, false, false, false, {});
    Exchange b("b", ExchangeType::fanout, false, false, false, {});
    chx.bind(Destination{nullptr, &a}, "1", {});
    chx.bind(Destination{nullptr, &b}, "3", {});
    EXPECT_TRUE(chx.needs_properties());

    std::vector<Destination> out;
    chx.route("ignored", nullptr, out);
    EXPECT_TRUE(out.empty()) << "no properties: not routed";
    amqp::BasicProperties p;
    p.headers = amqp::FieldTable{};
    chx.route("ignored", &p, out);
    EXPECT_TRUE(out.empty()) << "no such header: not routed";

    auto c = spread(chx, p, 6, [&](const std::string& k) { p.headers->set("hash-on", amqp::FieldValue(k)); });
    EXPECT_NEAR(double(c[&b]) / 15000.0, 1.0, 0.04);

    // Unbinding the weight-3 destination leaves everything to the other.
    chx.unbind(Destination{nullptr, &b}, "3", {});
    out.clear();
    chx.route("x", &p, out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].exchange, &a);
}

TEST(ConsistentHashExchange, RoutesOnProperty) {
    amqp::FieldTable args;
    args.set("hash-property", amqp::FieldValue(std::string("correlation_id")));
    Exchange chx("chx", ExchangeType::consistent_hash, false, false, false, args);
    Exchange a("a", ExchangeType::fanout, false, false, false, {});
    Exchange b("b", ExchangeType::fanout, false, false, false, {});
    chx.bind(Destination{nullptr, &a}, "1", {});
    chx.bind(Destination{nullptr, &b}, "1", {});
    amqp::BasicProperties p;
    std::vector<Destination> out;
    chx.route("rk", &p, out);
    EXPECT_TRUE(out.empty()) << "no correlation_id: not routed";
    auto c = spread(chx, p, 7, [&](const std::string& k) { p.correlation_id = k; });
    EXPECT_NEAR(double(c[&a]) / 10000.0, 1.0, 0.04);
}

}  // namespace
}  // namespace sluice::broker
