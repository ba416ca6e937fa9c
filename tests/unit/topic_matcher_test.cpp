#include "broker/topic_matcher.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

using sluice::broker::TopicMatcher;

// Everything reported for `key`, in report order (duplicates kept, to check them).
template <typename D>
std::vector<D> raw_matches(const TopicMatcher<D>& m, std::string_view key) {
    std::vector<D> out;
    m.match(key, [&](D d) { out.push_back(d); });
    return out;
}

std::vector<int> matches(const TopicMatcher<int>& m, std::string_view key) {
    auto out = raw_matches(m, key);
    std::sort(out.begin(), out.end());
    return out;
}

bool matches_one(std::string_view pattern, std::string_view key) {
    TopicMatcher<int> m;
    m.add(pattern, 1);
    auto r = raw_matches(m, key);
    EXPECT_LE(r.size(), 1u);
    return !r.empty();
}

// ---- an independent, obviously-correct reference ----

std::vector<std::string> ref_split(const std::string& s) {
    std::vector<std::string> words;
    if (s.empty()) return words;  // RabbitMQ: the empty key has no words
    std::string cur;
    for (char c : s) {
        if (c == '.') {
            words.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    words.push_back(cur);
    return words;
}

bool ref_match_words(const std::vector<std::string>& p, size_t i, const std::vector<std::string>& k, size_t j) {
    if (i == p.size()) return j == k.size();
    if (p[i] == "#") {
        for (size_t s = j; s <= k.size(); ++s)
            if (ref_match_words(p, i + 1, k, s)) return true;
        return false;
    }
    if (j == k.size()) return false;
    if (p[i] == "*" || p[i] == k[j]) return ref_match_words(p, i + 1, k, j + 1);
    return false;
}

bool ref_match(const std::string& pattern, const std::string& key) {
    return ref_match_words(ref_split(pattern), 0, ref_split(key), 0);
}

struct Case {
    const char* pattern;
    const char* key;
    bool expected;
};

// ---- RabbitMQ's semantics, case by case ----

TEST(TopicMatcher, RabbitMqCases) {
    const Case cases[] = {
        // '#' matches everything, including the empty key (zero words)
        {"#", "", true},
        {"#", "a", true},
        {"#", "a.b.c", true},
        {"#", ".", true},
        {"#", "a..b", true},
        // a.#
        {"a.#", "a", true},
        {"a.#", "a.b", true},
        {"a.#", "a.b.c", true},
        {"a.#", "a.", true},  // words "a", ""
        {"a.#", "b", false},
        {"a.#", "", false},
        {"a.#", "b.a", false},
        {"a.#", "ab", false},
        // #.a
        {"#.a", "a", true},
        {"#.a", "b.a", true},
        {"#.a", "x.y.a", true},
        {"#.a", ".a", true},
        {"#.a", "a.b", false},
        {"#.a", "", false},
        // a.*.c
        {"a.*.c", "a.b.c", true},
        {"a.*.c", "a..c", true},
        {"a.*.c", "a.c", false},
        {"a.*.c", "a.b.b.c", false},
        {"a.*.c", "a.b.c.d", false},
        // '*' is exactly one word; the empty key has none, "." has two
        {"*", "a", true},
        {"*", "", false},
        {"*", ".", false},
        {"*", "a.b", false},
        {"*.*", ".", true},
        {"*.*", "a.", true},
        {"*.*", ".b", true},
        {"*.*", "a", false},
        // the empty pattern is zero words: it matches only the empty key
        {"", "", true},
        {"", "a", false},
        {"", ".", false},
        // a.#.b
        {"a.#.b", "a.b", true},
        {"a.#.b", "a.x.b", true},
        {"a.#.b", "a.x.y.b", true},
        {"a.#.b", "a.b.b", true},
        {"a.#.b", "a", false},
        {"a.#.b", "a.b.c", false},
        {"a.#.b", "b", false},
        // #.#
        {"#.#", "", true},
        {"#.#", "a", true},
        {"#.#", "a.b.c", true},
        // empty words are words
        {"a.*.b", "a..b", true},
        {"a..b", "a..b", true},
        {"a..b", "a.x.b", false},
        {"a..b", "a.b", false},
        {"a.", "a.", true},
        {"a.", "a", false},
        {".", ".", true},
        {".", "", false},
        {"*.#.*", "a", false},
        {"*.#.*", "a.b", true},
        {"*.#.*", "a.b.c.d", true},
        {"#.*", "", false},
        {"#.*", "a", true},
        {"a.*.#", "a", false},
        {"a.*.#", "a.b", true},
        {"a.*.#", "a.b.c", true},
        {"#.a.#", "a", true},
        {"#.a.#", "x.a.y", true},
        {"#.a.#", "x.y", false},
        // only the whole words "*" and "#" are wildcards
        {"a*", "ab", false},
        {"a*", "a*", true},
        {"##", "a", false},
        {"##", "##", true},
        {"a#", "a", false},
        // in a routing key '*' and '#' are ordinary words
        {"a", "*", false},
        {"a", "#", false},
        {"*", "*", true},
        {"*", "#", true},
        {"#", "#", true},
        {"a.*", "a.#", true},
        {"a.b", "a.*", false},
        // literal
        {"a.b.c", "a.b.c", true},
        {"a.b.c", "a.b", false},
        {"a.b", "a.b.c", false},
        {"stock.usd.nyse", "stock.usd.nyse", true},
        {"stock.*.nyse", "stock.eur.nyse", true},
        {"stock.#", "stock.eur.nyse.x", true},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(matches_one(c.pattern, c.key), c.expected)
            << "pattern '" << c.pattern << "' key '" << c.key << "'";
        EXPECT_EQ(ref_match(c.pattern, c.key), c.expected)
            << "(reference) pattern '" << c.pattern << "' key '" << c.key << "'";
    }
}

TEST(TopicMatcher, EmptyMatcherMatchesNothing) {
    TopicMatcher<int> m;
    EXPECT_TRUE(m.empty());
    EXPECT_EQ(m.size(), 0u);
    EXPECT_TRUE(matches(m, "").empty());
    EXPECT_TRUE(matches(m, "a.b").empty());
}

TEST(TopicMatcher, SameDestThroughSeveralPatternsIsReportedOnce) {
    TopicMatcher<int> m;
    m.add("a.*", 1);
    m.add("#", 1);
    m.add("a.b", 1);
    m.add("a.#", 1);
    m.add("*.b", 2);
    m.add("#.b", 2);
    m.add("c", 3);
    EXPECT_EQ(matches(m, "a.b"), (std::vector<int>{1, 2}));
    EXPECT_EQ(matches(m, "c"), (std::vector<int>{1, 3}));
    EXPECT_EQ(matches(m, "x.b"), (std::vector<int>{1, 2}));
    EXPECT_EQ(m.size(), 7u);
}

TEST(TopicMatcher, NodeReachedSeveralWaysIsReportedOnce) {
    TopicMatcher<int> m;
    m.add("#.#", 1);
    m.add("#.#.#", 2);
    m.add("#.a.#", 3);
    m.add("*", 4);
    // key word "*" is a literal that the '*' wildcard also matches
    EXPECT_EQ(matches(m, "*"), (std::vector<int>{1, 2, 4}));
    EXPECT_EQ(matches(m, "a.a.a.a"), (std::vector<int>{1, 2, 3}));
    EXPECT_EQ(matches(m, ""), (std::vector<int>{1, 2}));
}

TEST(TopicMatcher, AddIsIdempotent) {
    TopicMatcher<int> m;
    m.add("a.#", 7);
    m.add("a.#", 7);
    EXPECT_EQ(m.size(), 1u);
    EXPECT_EQ(raw_matches(m, "a.b"), (std::vector<int>{7}));
    EXPECT_TRUE(m.remove("a.#", 7));
    EXPECT_FALSE(m.remove("a.#", 7));
    EXPECT_TRUE(m.empty());
    EXPECT_TRUE(matches(m, "a.b").empty());
}

TEST(TopicMatcher, RemoveThenNoMatch) {
    TopicMatcher<int> m;
    m.add("a.*.c", 1);
    m.add("a.*.c", 2);
    m.add("a.b.c", 3);
    EXPECT_EQ(matches(m, "a.b.c"), (std::vector<int>{1, 2, 3}));
    EXPECT_TRUE(m.remove("a.*.c", 1));
    EXPECT_EQ(matches(m, "a.b.c"), (std::vector<int>{2, 3}));
    EXPECT_FALSE(m.remove("a.*.c", 1));   // gone already
    EXPECT_FALSE(m.remove("a.*.c", 3));   // other pattern's dest
    EXPECT_FALSE(m.remove("a.*", 2));     // prefix of a pattern
    EXPECT_FALSE(m.remove("a.*.c.d", 2)); // longer than any pattern
    EXPECT_FALSE(m.remove("x", 2));
    EXPECT_TRUE(m.remove("a.b.c", 3));
    EXPECT_EQ(matches(m, "a.b.c"), (std::vector<int>{2}));
    EXPECT_TRUE(m.remove("a.*.c", 2));
    EXPECT_TRUE(matches(m, "a.b.c").empty());
    EXPECT_TRUE(m.empty());
    EXPECT_EQ(m.node_count(), 1u);
}

TEST(TopicMatcher, RemovingAPrefixPatternKeepsLongerOnes) {
    TopicMatcher<int> m;
    m.add("a", 1);
    m.add("a.b", 2);
    m.add("a.#", 3);
    EXPECT_TRUE(m.remove("a", 1));
    EXPECT_EQ(matches(m, "a"), (std::vector<int>{3}));
    EXPECT_EQ(matches(m, "a.b"), (std::vector<int>{2, 3}));
    EXPECT_TRUE(m.remove("a.#", 3));
    EXPECT_EQ(matches(m, "a.b"), (std::vector<int>{2}));
    EXPECT_TRUE(matches(m, "a").empty());
}

TEST(TopicMatcher, ChurnPrunesEveryNode) {
    TopicMatcher<int> m;
    std::mt19937 rng(7);
    const char* words[] = {"a", "b", "*", "#", "", "long-word"};
    for (int round = 0; round < 20; ++round) {
        std::vector<std::pair<std::string, int>> added;
        for (int i = 0; i < 200; ++i) {
            std::string p;
            int len = static_cast<int>(rng() % 6);
            for (int w = 0; w < len; ++w) {
                if (w) p += '.';
                p += words[rng() % 6];
            }
            int dest = static_cast<int>(rng() % 40);
            m.add(p, dest);
            added.emplace_back(p, dest);
        }
        std::shuffle(added.begin(), added.end(), rng);
        for (const auto& [p, d] : added) m.remove(p, d);  // duplicates return false: fine
        EXPECT_TRUE(m.empty());
        EXPECT_EQ(m.node_count(), 1u) << "round " << round;
    }
    // and the matcher still works after all that churn
    m.add("#.x", 5);
    EXPECT_EQ(matches(m, "a.b.x"), (std::vector<int>{5}));
}

TEST(TopicMatcher, LargeFanOutOnOnePattern) {
    TopicMatcher<int> m;
    for (int d = 0; d < 100; ++d) m.add("q.*", d);
    for (int d = 0; d < 100; ++d) m.add("q.*", d);  // idempotent with the index too
    EXPECT_EQ(m.size(), 100u);
    EXPECT_EQ(matches(m, "q.x").size(), 100u);
    for (int d = 0; d < 100; d += 2) EXPECT_TRUE(m.remove("q.*", d));
    for (int d = 0; d < 100; d += 2) EXPECT_FALSE(m.remove("q.*", d));
    auto r = matches(m, "q.x");
    ASSERT_EQ(r.size(), 50u);
    for (size_t i = 0; i < r.size(); ++i) EXPECT_EQ(r[i], static_cast<int>(2 * i + 1));
    for (int d = 1; d < 100; d += 2) EXPECT_TRUE(m.remove("q.*", d));
    EXPECT_TRUE(m.empty());
    EXPECT_EQ(m.node_count(), 1u);
}

TEST(TopicMatcher, PointerDestinations) {
    struct Queue {
        std::string name;
    };
    Queue q1{"q1"}, q2{"q2"};
    TopicMatcher<const Queue*> m;
    m.add("orders.#", &q1);
    m.add("*.created", &q2);
    m.add("orders.created", &q1);
    auto r = raw_matches(m, "orders.created");
    ASSERT_EQ(r.size(), 2u);
    EXPECT_NE(r[0], r[1]);
    EXPECT_EQ(raw_matches(m, "orders.deleted"), (std::vector<const Queue*>{&q1}));
}

TEST(TopicMatcher, CallbackMayMatchAgain) {
    // e.g. exchange-to-exchange bindings: routing recurses from the callback.
    TopicMatcher<int> outer, inner;
    outer.add("#", 1);
    outer.add("a.*", 2);
    outer.add("#.b", 3);
    inner.add("a.#", 10);
    inner.add("#", 11);
    std::multiset<int> got;
    outer.match("a.b", [&](int d) {
        got.insert(d);
        inner.match("a.b", [&](int e) { got.insert(e * 100 + d); });
        outer.match("z", [&](int e) { got.insert(e * 1000 + d); });
    });
    std::multiset<int> want;
    for (int d : {1, 2, 3}) {
        want.insert(d);
        want.insert(1000 + d);
        want.insert(1100 + d);
        want.insert(1000 * 1 + d);  // outer "#" matches "z"
    }
    EXPECT_EQ(got, want);
}

TEST(TopicMatcher, MoveKeepsBindings) {
    TopicMatcher<int> a;
    a.add("x.#", 1);
    TopicMatcher<int> b(std::move(a));
    EXPECT_EQ(matches(b, "x.y"), (std::vector<int>{1}));
    TopicMatcher<int> c;
    c = std::move(b);
    EXPECT_EQ(matches(c, "x"), (std::vector<int>{1}));
    EXPECT_TRUE(c.remove("x.#", 1));
    EXPECT_TRUE(c.empty());
}

// ---- hostile '#' patterns: bounded work, exact answers ----

std::string repeat_words(const std::string& w, int n) {
    std::string s;
    for (int i = 0; i < n; ++i) {
        if (i) s += '.';
        s += w;
    }
    return s;
}

TEST(TopicMatcher, PathologicalHashPatternsAreExact) {
    TopicMatcher<int> m;
    const std::string p8 = "#.#.#.#.#.#.#.#.x";
    const std::string p30 = repeat_words("#", 30) + ".x";
    const std::string p_alt = repeat_words("#.a", 20) + ".#.b";
    m.add(p8, 1);
    m.add(p30, 2);
    m.add(p_alt, 3);
    m.add(repeat_words("#", 60), 4);  // matches everything
    const std::string long_a = repeat_words("a", 250);
    // no 'x' at the end: a backtracking matcher would explore C(258, 8)+ paths
    EXPECT_EQ(matches(m, long_a), (std::vector<int>{4}));
    EXPECT_EQ(matches(m, long_a + ".x"), (std::vector<int>{1, 2, 4}));
    EXPECT_EQ(matches(m, long_a + ".b"), (std::vector<int>{3, 4}));
    EXPECT_EQ(matches(m, repeat_words("a", 19) + ".b"), (std::vector<int>{4}));  // needs 20 'a's
    EXPECT_EQ(matches(m, repeat_words("a", 20) + ".b"), (std::vector<int>{3, 4}));
    // a key far longer than any AMQP shortstr
    const std::string huge = repeat_words("a", 20000);
    EXPECT_EQ(matches(m, huge), (std::vector<int>{4}));
    EXPECT_EQ(matches(m, huge + ".x"), (std::vector<int>{1, 2, 4}));
    // empty words everywhere
    EXPECT_EQ(matches(m, std::string(300, '.')), (std::vector<int>{4}));
    EXPECT_EQ(matches(m, std::string(300, '.') + "x"), (std::vector<int>{1, 2, 4}));
}

// ---- the trie against the reference, over random patterns and keys ----

std::string random_key(std::mt19937& rng, const std::vector<std::string>& alphabet, int max_words) {
    int n = static_cast<int>(rng() % (max_words + 1));
    std::string s;
    for (int i = 0; i < n; ++i) {
        if (i) s += '.';
        s += alphabet[rng() % alphabet.size()];
    }
    return s;
}

TEST(TopicMatcher, RandomisedAgainstReference) {
    std::mt19937 rng(20240601);
    const std::vector<std::string> pattern_words = {"a", "b", "c", "", "*", "#", "#", "*"};
    const std::vector<std::string> key_words = {"a", "b", "c", "", "*", "#"};
    for (int round = 0; round < 6; ++round) {
        TopicMatcher<int> m;
        std::vector<std::pair<std::string, int>> bindings;  // may contain duplicates
        for (int i = 0; i < 600; ++i) {
            std::string p = random_key(rng, pattern_words, 6);
            int dest = static_cast<int>(rng() % 80);  // shared dests exercise dedupe
            m.add(p, dest);
            bindings.emplace_back(p, dest);
        }
        std::set<std::pair<std::string, int>> live(bindings.begin(), bindings.end());
        EXPECT_EQ(m.size(), live.size());

        auto check = [&](int keys) {
            for (int k = 0; k < keys; ++k) {
                std::string key = random_key(rng, key_words, 8);
                std::set<int> want;
                for (const auto& [p, d] : live)
                    if (ref_match(p, key)) want.insert(d);
                auto got = raw_matches(m, key);
                std::set<int> got_set(got.begin(), got.end());
                ASSERT_EQ(got.size(), got_set.size()) << "duplicate report for key '" << key << "'";
                ASSERT_EQ(got_set, want) << "key '" << key << "'";
            }
        };
        check(700);

        // remove a random half, then check again
        std::vector<std::pair<std::string, int>> all(live.begin(), live.end());
        std::shuffle(all.begin(), all.end(), rng);
        for (size_t i = 0; i < all.size() / 2; ++i) {
            ASSERT_TRUE(m.remove(all[i].first, all[i].second));
            live.erase(all[i]);
        }
        EXPECT_EQ(m.size(), live.size());
        check(700);
    }
}

}  // namespace
